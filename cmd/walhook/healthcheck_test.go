package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
)

// TestHealthcheck runs the container image's HEALTHCHECK command against a
// walhook whose /healthz needs the token: it passes while walhook runs and
// fails, always with exit code 1 (Docker reserves 2), when walhook is not
// running, when the admin server is off and when the configuration is
// missing.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "healthcheck", "  tables: [t]\n", sinkConf{Name: "s", URL: "http://127.0.0.1:1/"})
	off := writeConfig(t, t.TempDir(), dsn, "healthcheck", "  tables: [t]\n", sinkConf{Name: "s", URL: "http://127.0.0.1:1/"})
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q\n  token: %q\n  protect_metrics: true", addr, testToken))

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"not running", []string{"--config", cfg}, "not running"},
		{"admin server off", []string{"--config", off}, "server.listen"},
		{"no configuration", []string{"--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
	} {
		code, out := runWalhook(t, append([]string{"healthcheck"}, tt.args...)...)
		if code != 1 || !strings.Contains(out, tt.want) {
			t.Errorf("healthcheck, %s: exit code %d, want 1 with %q; output:\n%s", tt.name, code, tt.want, out)
		}
	}

	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "healthcheck", d)
	if code, out := runWalhook(t, "healthcheck", "--config", cfg); code != 0 {
		t.Errorf("healthcheck of a running walhook: exit code %d, want 0; output:\n%s", code, out)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exit code after SIGTERM: %d, want 0", code)
	}
	if code, _ := runWalhook(t, "healthcheck", "--config", cfg); code != 1 {
		t.Errorf("healthcheck after walhook stopped: exit code %d, want 1", code)
	}
	// Hidden: not among the commands walhook --help lists.
	if _, out := runWalhook(t, "--help"); strings.Contains(out, "healthcheck") {
		t.Errorf("walhook --help lists healthcheck:\n%s", out)
	}
}
