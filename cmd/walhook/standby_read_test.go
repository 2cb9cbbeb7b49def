package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// standbyReadConfig is a walhook configuration that reads from the
// standby at standbyURL, with primary_url set when primaryURL is not "".
func standbyReadConfig(t *testing.T, standbyURL, primaryURL, addr, rcvURL string) string {
	t.Helper()
	primary := ""
	if primaryURL != "" {
		primary = fmt.Sprintf("  primary_url: %q\n", primaryURL)
	}
	dir := t.TempDir()
	yaml := fmt.Sprintf(`source:
  url: %q
%s  slot: sb
  publication: sb
  tables: [public.t]
  heartbeat: 200ms
  receive_timeout: 5s
state:
  path: %q
server:
  listen: %q
log:
  format: text
  level: debug
sinks:
  - name: s
    url: %q
    actions: [insert, update, delete, read]
    batch_wait: 5ms
    retry: {initial: 20ms, max: 200ms}
`, standbyURL, primary, filepath.Join(dir, "walhook.state"), addr, rcvURL)
	cfg := filepath.Join(dir, "walhook.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestStandbyRead (issue 18 item 5 and its acceptance): walhook reads
// from a hot standby (logical decoding on a standby), on PostgreSQL 16 and
// 17. Without source.primary_url it warns at start that heartbeats are
// off, check says so, and a backfill is refused with exit 2 naming
// primary_url, while every change committed on the primary is delivered.
// With primary_url, a backfill under concurrent updates on the primary
// ends with every row's last message equal to the row on the primary.
func TestStandbyRead(t *testing.T) {
	t.Parallel()
	for _, version := range []int{16, 17} {
		t.Run(fmt.Sprintf("pg%d", version), func(t *testing.T) {
			t.Parallel() // each version's primary, standby, receiver and admin port are its own
			testStandbyRead(t, version)
		})
	}
}

func testStandbyRead(t *testing.T, version int) {
	primary := startServer(t, pgtest.Options{Version: version})
	if got := primary.Version(); got != version {
		t.Fatalf("got PostgreSQL %d, want %d", got, version)
	}
	conn := connect(t, primary.DSN("postgres"))
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)`)
	exec1(t, conn, `INSERT INTO t SELECT i, 0 FROM generate_series(1, 2000) i`)
	exec1(t, conn, `CREATE PUBLICATION sb FOR TABLE t`)
	standby, err := primary.StartStandby("hot_standby_feedback = on")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("standby log:\n%s", standby.LogTail(40))
		}
		if err := standby.Close(); err != nil {
			t.Errorf("close the standby: %v", err)
		}
	})
	conn = connect(t, primary.DSN("postgres")) // StartStandby restarted the primary
	// A slot on a standby is ready once the primary logs a running-xacts
	// record after its creation began; a busy primary does that on its
	// own, this one is told to.
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() {
		snap, err := pgx.Connect(ctx, primary.DSN("postgres"))
		if err != nil {
			t.Errorf("connect to the primary: %v", err)
			return
		}
		defer snap.Close(context.Background())
		for ctx.Err() == nil {
			_, _ = snap.Exec(ctx, `SELECT pg_log_standby_snapshot()`)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { cancel(); bg.Wait() })

	standbyURL := standby.DSN("postgres")
	primaryURL := primary.DSN("postgres")
	rcv := webhooktest.New(t, "")
	addr := freeAddr(t)

	// Without primary_url.
	cfg := standbyReadConfig(t, standbyURL, "", addr, rcv.URL)
	if code, out := runWalhook(t, "check", "--config", cfg); !strings.Contains(out, "mode: standby without primary_url") {
		t.Errorf("check exited %d without saying standby without primary_url:\n%s", code, out)
	}
	d := startWalhook(t, "run", "--config", cfg)
	sconn := connect(t, standbyURL)
	waitStreaming(t, sconn, "sb", d)
	for id := 10001; id <= 10050; id++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1, 0)`, id)
	}
	waitUntil(t, 30*time.Second, "the standby replays the rows", func() bool {
		var n int
		return sconn.QueryRow(context.Background(), `SELECT count(*) FROM t WHERE id > 10000`).Scan(&n) == nil && n == 50
	})
	waitIDs(t, rcv, "t", idRange(10001, 10050), 60*time.Second)
	if out := d.out.String(); !strings.Contains(out, "heartbeats are off") || !strings.Contains(out, "primary_url") {
		t.Errorf("no warning at start naming primary_url:\n%s", out)
	}
	waitUntil(t, 30*time.Second, "the admin API answers", func() bool {
		resp, err := http.Get("http://" + addr + "/api/v1/backfills")
		if err != nil {
			return false // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if code, out := runWalhook(t, "backfill", "--sink", "s", "--config", cfg); code != 2 || !strings.Contains(out, "primary_url") {
		t.Errorf("backfill without primary_url: exit %d, want 2 naming primary_url:\n%s", code, out)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0:\n%s", code, d.out.String())
	}

	// With primary_url: a backfill under concurrent updates.
	cfg = standbyReadConfig(t, standbyURL, primaryURL, addr, rcv.URL)
	if code, out := runWalhook(t, "check", "--config", cfg); !strings.Contains(out, "mode: standby with primary_url") {
		t.Errorf("check exited %d without saying standby with primary_url:\n%s", code, out)
	}
	d = startWalhook(t, "run", "--config", cfg)
	waitUntil(t, 30*time.Second, "the admin API answers", func() bool {
		resp, err := http.Get("http://" + addr + "/api/v1/backfills")
		if err != nil {
			return false // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The writer stops between statements, never in one: an update
	// cancelled mid-commit could commit after the final read below.
	var stopped atomic.Bool
	stopWriter := func() { stopped.Store(true) }
	var writer sync.WaitGroup
	writer.Go(func() {
		w, err := pgx.Connect(ctx, primary.DSN("postgres"))
		if err != nil {
			t.Errorf("connect to the primary: %v", err)
			return
		}
		defer w.Close(context.Background())
		for i := 0; !stopped.Load(); i++ {
			_, _ = w.Exec(context.Background(), `UPDATE t SET v = v + 1 WHERE id = $1`, 1+(i*37)%2000)
		}
	})
	code, out := runWalhook(t, "backfill", "--sink", "s", "--wait", "--config", cfg)
	stopWriter()
	writer.Wait()
	if code != 0 {
		t.Fatalf("backfill with primary_url: exit %d:\n%s", code, out)
	}
	final := map[int]int{}
	rows, err := conn.Query(context.Background(), `SELECT id, v FROM t`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, v int
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		final[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var diff []string
	t.Cleanup(func() {
		if t.Failed() && len(diff) > 0 {
			t.Logf("%d rows differ, such as: %s", len(diff), strings.Join(diff[:min(10, len(diff))], "; "))
		}
	})
	rcv.WaitFor(t, 60*time.Second, "every row's last message equal to the primary's row", func(ms []webhooktest.Message) bool {
		last := map[int]int{}
		for _, m := range ms {
			var r struct{ ID, V int }
			if json.Unmarshal(m.Record, &r) != nil || m.Metadata.TableName != "t" {
				continue
			}
			last[r.ID] = r.V
		}
		diff = diff[:0]
		for id, v := range final {
			// A row the stream changed while its chunk was read has no
			// read message: the streamed change is newer.
			if got, ok := last[id]; !ok || got != v {
				diff = append(diff, fmt.Sprintf("id %d: last %d (delivered %t), want %d", id, got, ok, v))
			}
		}
		return len(diff) == 0
	})
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}
