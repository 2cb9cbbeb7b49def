package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// The TLS files of a cluster started with Options.TLS. The server's are in
// the data directory, where postgresql.conf names them relative to it; the
// clients' are in the cluster directory's tls folder.
const (
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
	serverCAFile   = "root.crt" // ssl_ca_file: the CA client certificates must be signed by
	clientDir      = "tls"
	// certLifetime is how long the certificates made for a cluster are
	// valid, from an hour before they were made (a clock a little behind
	// must not see them as not yet valid).
	certLifetime = 7 * 24 * time.Hour
)

// TLSFiles are the PEM files a client of a cluster started with
// Options.TLS needs. They are removed with the cluster.
type TLSFiles struct {
	// RootCert is the certificate of the CA that signed the server's
	// certificate: sslrootcert=RootCert with sslmode=verify-full trusts
	// the server at 127.0.0.1 and at localhost.
	RootCert string
	// OtherRootCert is the certificate of another CA, which signed
	// nothing this cluster has: a client that trusts only it must refuse
	// the server.
	OtherRootCert string
}

// tlsState is what a cluster started with Options.TLS keeps to issue
// client certificates.
type tlsState struct {
	ca    *authority
	files TLSFiles
}

// TLS returns the files a client needs to verify the server, and false if
// the cluster was started without Options.TLS.
func (s *Server) TLS() (TLSFiles, bool) {
	if s.tls == nil {
		return TLSFiles{}, false
	}
	return s.tls.files, true
}

// ClientCert issues a client certificate for user (its common name, which
// pg_hba's cert method compares with the role), signed by the CA the
// server trusts, and returns the paths of the certificate and its key (mode
// 0600): sslcert and sslkey. It fails for a cluster without Options.TLS.
func (s *Server) ClientCert(user string) (certFile, keyFile string, err error) {
	if s.tls == nil {
		return "", "", errors.New("client certificate: the cluster was started without Options.TLS")
	}
	certPEM, keyPEM, err := s.tls.ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", "", fmt.Errorf("client certificate for %q: %w", user, err)
	}
	dir := filepath.Join(s.dir, clientDir)
	certFile = filepath.Join(dir, "client-"+user+".crt")
	keyFile = filepath.Join(dir, "client-"+user+".key")
	if err := s.writeOwned(certFile, certPEM); err != nil {
		return "", "", fmt.Errorf("client certificate for %q: %w", user, err)
	}
	if err := s.writeOwned(keyFile, keyPEM); err != nil {
		return "", "", fmt.Errorf("client certificate for %q: %w", user, err)
	}
	return certFile, keyFile, nil
}

// setUpTLS makes the cluster's CA and server certificate, writes the
// server's files into the data directory (the key 0600 and owned by the
// server's user, as PostgreSQL demands) and the clients' into the tls
// folder, plus a second CA for tests of an untrusted server.
func (s *Server) setUpTLS() error {
	ca, err := newAuthority("walhook pgtest CA")
	if err != nil {
		return fmt.Errorf("set up TLS: %w", err)
	}
	other, err := newAuthority("walhook pgtest other CA")
	if err != nil {
		return fmt.Errorf("set up TLS: %w", err)
	}
	certPEM, keyPEM, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("set up TLS: server certificate: %w", err)
	}
	for name, content := range map[string][]byte{
		serverCertFile: certPEM,
		serverKeyFile:  keyPEM,
		serverCAFile:   ca.certPEM(),
	} {
		if err := s.writeOwned(filepath.Join(s.dataDir, name), content); err != nil {
			return fmt.Errorf("set up TLS: %w", err)
		}
	}
	dir := filepath.Join(s.dir, clientDir)
	files := TLSFiles{RootCert: filepath.Join(dir, "root.crt"), OtherRootCert: filepath.Join(dir, "other-root.crt")}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("set up TLS: %w", err)
	}
	if err := s.owner.chown(dir); err != nil {
		return fmt.Errorf("set up TLS: %w", err)
	}
	if err := s.writeOwned(files.RootCert, ca.certPEM()); err != nil {
		return fmt.Errorf("set up TLS: %w", err)
	}
	if err := s.writeOwned(files.OtherRootCert, other.certPEM()); err != nil {
		return fmt.Errorf("set up TLS: %w", err)
	}
	s.tls = &tlsState{ca: ca, files: files}
	return nil
}

// writeOwned writes a file with mode 0600, owned by the cluster's owner,
// so that the server can read it and the watcher process can remove it.
// The tests read it too: they are that user or root.
func (s *Server) writeOwned(path string, content []byte) error {
	if err := os.WriteFile(path, content, 0o600); err != nil {
		return err
	}
	return s.owner.chown(path)
}

// certUserRe is what a CertUsers name may be: written into pg_hba.conf as
// it is, it needs no quoting.
var certUserRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// An authority is a certificate authority made for one cluster.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newAuthority makes a self-signed CA.
func newAuthority(name string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if err := fillValidity(tmpl); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return &authority{cert: cert, key: key}, nil
}

// issue signs a certificate made from tmpl for a new key and returns both
// as PEM (the key in PKCS #8).
func (a *authority) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	if err := fillValidity(tmpl); err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// certPEM returns the CA's certificate as PEM.
func (a *authority) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
}

// fillValidity gives tmpl a random serial number and its validity period.
func fillValidity(tmpl *x509.Certificate) error {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = tmpl.NotBefore.Add(certLifetime)
	return nil
}
