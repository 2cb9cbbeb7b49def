package webhook

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

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
