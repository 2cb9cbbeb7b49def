package webhook

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/tlstest"
)

// TestTLS delivers to a receiver whose certificate a test CA signed, with
// and without a client certificate it requires.
func TestTLS(t *testing.T) {
	serverCA, clientCA, otherCA := tlstest.NewCA(t, "server-ca"), tlstest.NewCA(t, "client-ca"), tlstest.NewCA(t, "other-ca")
	serverCert, _, _ := serverCA.Issue(t, "receiver", true)
	_, clientCert, clientKey := clientCA.Issue(t, "walhook", false)
	_, strangerCert, strangerKey := otherCA.Issue(t, "stranger", false)

	// With TLS 1.3 a client learns that the receiver refused its
	// certificate only when it reads the answer, and may instead find the
	// connection closed under its request; with TLS 1.2 the handshake
	// itself fails, so the error is certain to name the refusal.
	for _, tc := range []struct {
		name    string
		mutual  bool       // the receiver requires a client certificate from clientCA
		tls12   bool       // the receiver speaks TLS 1.2 at most
		tls     config.TLS // the sink's
		wantErr []string   // all in the error; none for a delivery
	}{
		{name: "custom CA", tls: config.TLS{CAFile: serverCA.File}},
		{name: "wrong CA", tls: config.TLS{CAFile: otherCA.File},
			wantErr: []string{"not signed by a CA walhook trusts", "unknown authority", "tls.ca_file"}},
		{name: "system CAs", wantErr: []string{"not signed by a CA walhook trusts", "tls.ca_file"}},
		{name: "insecure_skip_verify", tls: config.TLS{InsecureSkipVerify: true}},
		{name: "mutual TLS", mutual: true, tls: config.TLS{CAFile: serverCA.File, CertFile: clientCert, KeyFile: clientKey}},
		{name: "mutual TLS 1.2", mutual: true, tls12: true, tls: config.TLS{CAFile: serverCA.File, CertFile: clientCert, KeyFile: clientKey}},
		{name: "mutual TLS without a client certificate", mutual: true, tls12: true, tls: config.TLS{CAFile: serverCA.File},
			wantErr: []string{"refused the TLS handshake", "tls.cert_file and tls.key_file"}},
		{name: "mutual TLS with a certificate from another CA", mutual: true, tls12: true,
			tls:     config.TLS{CAFile: serverCA.File, CertFile: strangerCert, KeyFile: strangerKey},
			wantErr: []string{"refused the TLS handshake", "tls.cert_file and tls.key_file"}},
		{name: "mutual TLS 1.3 without a client certificate", mutual: true, tls: config.TLS{CAFile: serverCA.File},
			wantErr: []string{"post: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverTLS := &tls.Config{Certificates: []tls.Certificate{serverCert}}
			if tc.mutual {
				serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
				serverTLS.ClientCAs = clientCA.Pool
			}
			if tc.tls12 {
				serverTLS.MaxVersion = tls.VersionTLS12
			}
			var peer string
			rc := startReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
				if len(r.TLS.PeerCertificates) > 0 {
					peer = r.TLS.PeerCertificates[0].Subject.CommonName
				}
				return ok(w, r, n, nil)
			}, serverTLS)
			// Credentials in the URL must not reach the error.
			cfg := testConfig(strings.Replace(rc.URL, "https://", "https://walhook:hunter2@", 1) + "/hooks")
			cfg.Webhook.TLS = tc.tls
			cfg.Timeout = 20 * time.Second // not under test: on a loaded machine a handshake took over 2 s
			err := deliverOnce(t, cfg, Options{})
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("got %v, want a delivery", err)
				}
				if rc.count() != 1 {
					t.Errorf("receiver got %d requests, want 1", rc.count())
				}
				if tc.mutual && peer != "walhook" {
					t.Errorf("receiver saw client certificate %q, want walhook", peer)
				}
				return
			}
			if err == nil {
				t.Fatal("got a delivery, want an error")
			}
			t.Logf("error: %v", err)
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got error %q, want it to say %q", err, want)
				}
			}
			for _, leak := range []string{"hunter2", "/hooks", "PRIVATE KEY", "BEGIN"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q shows %q", err, leak)
				}
			}
			if n := rc.count(); n != 0 {
				t.Errorf("receiver got %d requests, want none", n)
			}
		})
	}
}

// TestTLSPipeline: batches over mutual TLS through the pipeline, one lane
// on one connection.
func TestTLSPipeline(t *testing.T) {
	serverCA, clientCA := tlstest.NewCA(t, "server-ca"), tlstest.NewCA(t, "client-ca")
	serverCert, _, _ := serverCA.Issue(t, "receiver", true)
	_, clientCert, clientKey := clientCA.Issue(t, "walhook", false)
	rc := startReceiver(t, ok, &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool,
	})
	cfg := testConfig(rc.URL)
	cfg.MaxInFlight = 1
	cfg.Webhook.TLS = config.TLS{CAFile: serverCA.File, CertFile: clientCert, KeyFile: clientKey}
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})
	for i := range 10 {
		submit(t, s, msg(i, "k"))
		waitFor(t, "an ack", func() bool { return a.count() == i+1 })
	}
	if n := rc.conns.Load(); n != 1 {
		t.Errorf("got %d connections for %d requests, want 1", n, rc.count())
	}
}

func TestNewRejectsBadTLSFiles(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	_, certFile, keyFile := ca.Issue(t, "walhook", false)
	_, _, otherKey := ca.Issue(t, "other", false)
	for _, tc := range []struct {
		name string
		tls  config.TLS
		want string
	}{
		{"missing CA file", config.TLS{CAFile: filepath.Join(t.TempDir(), "missing.pem")}, "tls.ca_file"},
		{"CA file without certificates", config.TLS{CAFile: keyFile}, "holds no PEM certificate"},
		{"cert without key", config.TLS{CertFile: certFile}, "cert_file and key_file go together"},
		{"key of another certificate", config.TLS{CertFile: certFile, KeyFile: otherKey}, "private key does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("https://127.0.0.1:1/hooks")
			cfg.Webhook.TLS = tc.tls
			_, err := New(cfg, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("error %q shows file content", err)
			}
		})
	}
}
