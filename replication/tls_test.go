package replication

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// TestTLSProblem checks that TLS failures are explained and not retried,
// and that other connection failures are left alone. The errors are built
// as crypto/tls and pgconn return them; cmd/walhook's tls_test.go makes
// them for real.
func TestTLSProblem(t *testing.T) {
	hostErr := x509.HostnameError{Host: "db.internal", Certificate: &x509.Certificate{DNSNames: []string{"localhost"}}}
	tests := []struct {
		name string
		err  error
		want string // in the explanation; "" for no explanation
	}{
		{"unknown authority", fmt.Errorf("tls error: %w", x509.UnknownAuthorityError{}), "certificate is not trusted"},
		{"wrong host", fmt.Errorf("tls error: %w", hostErr), `not valid for the host "db.internal" of source.url (it is for localhost)`},
		{"expired", x509.CertificateInvalidError{Reason: x509.Expired}, "not valid (x509: certificate has expired"},
		{"client certificate refused", &net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate authority")}, "sslcert"},
		{"ssl off", errors.New("tls error: server refused TLS connection"), "ssl = off"},
		{"connection refused", &net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}, ""},
		{"eof", io.ErrUnexpectedEOF, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tlsProblem(tt.err)
			if tt.want == "" {
				if got != "" {
					t.Errorf("tlsProblem(%v) = %q, want none", tt.err, got)
				}
				return
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("tlsProblem(%v) = %q, want it to contain %q", tt.err, got, tt.want)
			}
			if IsConnLost(tt.err) {
				t.Errorf("IsConnLost(%v) = true, want false: a TLS failure needs a change of configuration", tt.err)
			}
			if msg := connectError(tt.err).Error(); !strings.Contains(msg, tt.want) || !strings.Contains(msg, tt.err.Error()) {
				t.Errorf("connectError: %q, want the explanation and the driver's error", msg)
			}
		})
	}
}
