package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// TestReloadOnSIGHUP: a live change applies (the next request goes to the
// new URL with the new header), a sink added starts receiving and a sink
// removed stops; a change that cannot apply live, and a file that does
// not validate, are refused and the old configuration keeps delivering.
func TestReloadOnSIGHUP(t *testing.T) {
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	a, b, c := webhooktest.New(t, ""), webhooktest.New(t, ""), webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "rl_hup", "  tables: [public.t]\n", sinkConf{Name: "s", URL: a.URL, Extra: "    headers: {X-Version: one}\n"})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "rl_hup", d)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	a.WaitCount(t, 1, 30*time.Second)

	sinks := func() []string {
		code, body := adminGet(t, addr, "/api/v1/status", testToken)
		if code != 200 {
			return nil
		}
		var names []string
		for _, part := range strings.Split(string(body), `"name":"`)[1:] {
			names = append(names, part[:strings.IndexByte(part, '"')])
		}
		return names
	}
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// Live: a new URL and header for s, a new sink c.
	live := strings.Replace(string(raw), a.URL, b.URL, 1)
	live = strings.Replace(live, "X-Version: one", "X-Version: two", 1)
	live += "  - name: c\n    url: \"" + c.URL + "\"\n    batch_wait: 5ms\n"
	write(live)
	waitUntil(t, 30*time.Second, "sink c in the status", func() bool { return strings.Join(sinks(), ",") == "s,c" })
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	b.WaitCount(t, 1, 30*time.Second)
	c.WaitCount(t, 1, 30*time.Second)
	if h := b.Headers()[0].Get("X-Version"); h != "two" {
		t.Errorf("the new URL got X-Version %q, want two", h)
	}
	if n := len(a.Messages()); n != 1 {
		t.Errorf("the old URL got %d messages, want only the first", n)
	}
	if m := c.Messages(); rowID(t, m[0]) != 2 {
		t.Errorf("the added sink got row %d first, want 2 (it starts at the current position)", rowID(t, m[0]))
	}

	// Refused: the source cannot change live, nor can a broken file apply.
	write(strings.Replace(live, "heartbeat: 200ms", "heartbeat: 300ms", 1))
	// The refusal's log line, naming the field, is the contract here.
	waitOutput(t, d, "source.heartbeat", 1, 30*time.Second)
	write("sinks: [oops\n")
	waitOutput(t, d, "the file does not validate", 1, 30*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (3)`)
	b.WaitCount(t, 2, 30*time.Second)
	c.WaitCount(t, 2, 30*time.Second)
	if h := b.Headers()[1].Get("X-Version"); h != "two" {
		t.Errorf("after refused reloads the sink sent X-Version %q, want two", h)
	}

	// Removed: c gets nothing more.
	write(strings.Replace(string(raw), a.URL, b.URL, 1))
	waitUntil(t, 30*time.Second, "sink c gone from the status", func() bool { return strings.Join(sinks(), ",") == "s" })
	exec1(t, conn, `INSERT INTO t VALUES (4)`)
	b.WaitCount(t, 3, 30*time.Second)
	if n := len(c.Messages()); n != 2 {
		t.Errorf("the removed sink got %d messages, want 2", n)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}
