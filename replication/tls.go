package replication

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
)

// tlsProblem explains why a connection failed in TLS, in words that say
// what to change, or returns "" when err is not a TLS failure. A TLS
// failure is a matter of configuration (certificates, sslmode,
// sslrootcert), which no retry mends; the caller stops instead of
// reconnecting.
func tlsProblem(err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var op *net.OpError
	switch {
	case errors.As(err, &unknown):
		return "the server's TLS certificate is not trusted: it is not signed by a CA in the sslrootcert file of source.url; " +
			"set sslrootcert to the certificate of the CA that issued PostgreSQL's server certificate"
	case errors.As(err, &host):
		return fmt.Sprintf("the server's TLS certificate is not valid for the host %q of source.url (%s); "+
			"connect by a name or address the certificate lists, or issue the server a certificate for %q", host.Host, certNames(host.Certificate), host.Host)
	case errors.As(err, &invalid):
		return "the server's TLS certificate is not valid (" + invalid.Error() + "); PostgreSQL needs a new certificate (ssl_cert_file)"
	case errors.As(err, &op) && op.Op == "remote error":
		// An alert from the server during the handshake: in practice it
		// refused walhook's client certificate.
		return "PostgreSQL ended the TLS handshake (" + op.Err.Error() + "); if source.url has sslcert, the server does not accept " +
			"that certificate: it must be signed by a CA in the server's ssl_ca_file and be valid now"
	case strings.Contains(err.Error(), "server refused TLS connection"):
		return "PostgreSQL does not accept TLS connections (ssl = off), but source.url's sslmode requires TLS; " +
			"turn ssl on in PostgreSQL (with ssl_cert_file and ssl_key_file), or change sslmode"
	}
	return ""
}

// certNames lists the names and addresses a certificate is valid for.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "it lists no names"
	}
	return "it is for " + strings.Join(names, ", ")
}

// Connect opens a normal (not replication) connection to the source, with
// walhook's explanation of a failure: a certificate that is not trusted
// says so, with what would fix it.
func Connect(ctx context.Context, url string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, connectError(err)
	}
	return conn, nil
}

// TLSReport is what a connection says about its transport.
type TLSReport struct {
	// Encrypted: the connection runs over TLS.
	Encrypted bool
	// Version and Cipher, as pg_stat_ssl names them; empty unless
	// Encrypted.
	Version, Cipher string
	// Verified: the client checked the server's certificate against a CA
	// (sslmode verify-ca or verify-full); HostChecked: and that it is
	// for the host connected to (verify-full).
	Verified, HostChecked bool
	// Local: the connection goes to a Unix socket or a loopback address,
	// where no one is on the path.
	Local bool
}

// CheckTLS reports whether conn runs over TLS (from pg_stat_ssl, the
// server's view) and how the client verifies the server (from conn's
// configuration: sslmode and sslrootcert).
func CheckTLS(ctx context.Context, conn *pgx.Conn) (TLSReport, error) {
	var r TLSReport
	var version, cipher *string
	err := conn.QueryRow(ctx, "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&r.Encrypted, &version, &cipher)
	if err != nil {
		return r, fmt.Errorf("read pg_stat_ssl: %w", err)
	}
	r.Version, r.Cipher = deref(version), deref(cipher)
	cfg := conn.Config().Config
	if tc := cfg.TLSConfig; tc != nil && r.Encrypted {
		r.HostChecked = !tc.InsecureSkipVerify
		r.Verified = r.HostChecked || tc.VerifyPeerCertificate != nil
	}
	r.Local = isLocal(cfg.Host)
	return r, nil
}

// isLocal reports whether host is a Unix socket directory or a loopback
// name or address.
func isLocal(host string) bool {
	if strings.HasPrefix(host, "/") || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
