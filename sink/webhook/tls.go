package webhook

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/walhook/walhook/config"
)

// clientTLS builds the TLS settings of a sink's transport from its tls
// settings, reading the files now: nil when the sink has none, so the
// transport keeps Go's defaults (the system's CAs).
func clientTLS(t config.TLS) (*tls.Config, error) {
	if t == (config.TLS{}) {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("tls: cert_file and key_file go together; set both, or neither")
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file and key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// explainTLS adds to a failed request's error what to change when the TLS
// handshake is at fault. The error names no URL, secret or key.
func explainTLS(err error) error {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		op        *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("the receiver's certificate is not signed by a CA walhook trusts: %w; set tls.ca_file to the CA that signs it", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("the receiver's certificate does not name the url's host: %w; use a host the certificate names in the url", err)
	case errors.As(err, &invalid):
		return fmt.Errorf("the receiver's certificate is not valid: %w", err)
	case errors.As(err, &op) && op.Op == "remote error":
		// The receiver sent a TLS alert: with mutual TLS, most often
		// because it wants a client certificate it trusts.
		return fmt.Errorf("the receiver refused the TLS handshake: %w; if it wants a client certificate, set tls.cert_file and tls.key_file to one it trusts", err)
	}
	return err
}
