package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
)

// TestNoSecretInOutput: a password in source.url, a sink secret, a header
// credential and the admin token never appear in walhook's log, in check's
// output, in a bad configuration's errors or in the API's answers, even
// when the receiver fails and echoes the credential it got.
func TestNoSecretInOutput(t *testing.T) {
	t.Parallel()
	const (
		password = "pg-pa55word-xyz"
		secret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		bearer   = "hdr-cr3dential-abc"
	)
	secretKey := strings.TrimPrefix(secret, "whsec_")
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password) // trust auth ignores it; walhook still holds it
	// A receiver that fails and echoes the credential it was sent.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "denied for "+r.Header.Get("Authorization")+" with "+r.Header.Get("webhook-signature"), http.StatusUnauthorized)
	}))
	defer echo.Close()

	dir := t.TempDir()
	cfg := writeConfig(t, dir, u.String(), "red_secret", "  tables: [public.t]\n",
		sinkConf{Name: "s", URL: echo.URL, Secret: secret, Extra: fmt.Sprintf("    headers: {Authorization: %q}\n", "Bearer "+bearer)})
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q\n  token: %q", addr, testToken))

	var outputs []string
	code, out := runWalhook(t, "check", "--config", cfg)
	outputs = append(outputs, out)
	if code != 0 {
		t.Errorf("check exited %d:\n%s", code, out)
	}
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "red_secret", d)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	waitUntil(t, 30*time.Second, "a failed attempt in the status", func() bool {
		_, body := adminGet(t, addr, "/api/v1/status", testToken)
		return strings.Contains(string(body), "denied for")
	})
	for _, path := range []string{"/api/v1/status", "/metrics", "/readyz", "/healthz", "/api/v1/sinks/s/dlq"} {
		_, body := adminGet(t, addr, path, testToken)
		outputs = append(outputs, string(body))
	}
	_, out = runWalhook(t, "status", "--config", cfg)
	outputs = append(outputs, out)
	d.stop(t, syscall.SIGTERM, 30*time.Second)
	outputs = append(outputs, d.out.String())

	// A bad configuration with the same secrets: the errors name lines.
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	broken := strings.Replace(string(raw), "    batch_wait: 5ms\n", "    batch_wait: soon\n    secret_typo: x\n", 1)
	if err := os.WriteFile(bad, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"check", "run"} {
		code, out := runWalhook(t, cmd, "--config", bad)
		if code != 2 {
			t.Errorf("%s of a bad configuration exited %d, want 2:\n%s", cmd, code, out)
		}
		outputs = append(outputs, out)
	}

	for i, o := range outputs {
		for _, s := range []string{password, secretKey, bearer, testToken} {
			if strings.Contains(o, s) {
				t.Errorf("output %d shows a secret (%.4s...):\n%s", i, s, o)
			}
		}
	}
	if !strings.Contains(d.out.String(), "[redacted]") {
		t.Errorf("the log never masked the echoed credential; the test did not exercise redaction:\n%s", d.out.String())
	}
}
