package main

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// TestDeadLettersAndReplay: with max_attempts 3, a batch the receiver keeps
// refusing becomes a dead letter and later rows flow; dlq list and show
// report it; a replay cut short by kill -9 keeps it; a replay to a
// receiver that answers delivers it and removes it.
func TestDeadLettersAndReplay(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	var refuse, hang atomic.Bool
	refuse.Store(true)
	unhang := make(chan struct{})
	rcv.SetFaults(webhooktest.Faults{Reject: func(batch []webhooktest.Message) int {
		for _, m := range batch {
			if rowID(t, m) == 5 {
				if hang.Load() {
					<-unhang // a receiver that does not answer: the replay is in flight
				}
				if refuse.Load() {
					return 422
				}
			}
		}
		return 0
	}})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "dlq_e2e", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL,
		Retry: "{initial: 20ms, max: 100ms, max_attempts: 3}", Extra: "    batch_size: 1\n    timeout: 1h\n"})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "dlq_e2e", d)

	for i := 1; i <= 10; i++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1)`, i)
	}
	got := rcv.WaitFor(t, 30*time.Second, "the 9 rows the receiver takes", func(m []webhooktest.Message) bool { return len(m) >= 9 })
	for _, m := range got {
		if rowID(t, m) == 5 {
			t.Fatalf("row 5 was delivered while the receiver refused it")
		}
	}
	// The slot is not held by the dead-lettered row.
	target := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "the slot past the dead-lettered row", func() bool {
		return readSlot(t, conn, "dlq_e2e").confirmed >= target
	})

	code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--config", cfg)
	if code != 0 || !strings.Contains(out, "422") {
		t.Fatalf("dlq list: exit %d:\n%s", code, out)
	}
	code, out = runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg)
	var list []server.DeadLetter
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Count != 1 || list[0].Attempts != 3 {
		t.Fatalf("dlq list --json: exit %d:\n%s", code, out)
	}
	id := list[0].ID
	code, out = runWalhook(t, "dlq", "show", id, "--sink", "s", "--config", cfg)
	var shown server.DeadLetter
	if code != 0 || json.Unmarshal([]byte(out), &shown) != nil || len(shown.Messages) != 1 || !strings.Contains(strings.Join(strings.Fields(string(shown.Messages[0])), ""), `"record":{"id":5}`) {
		t.Fatalf("dlq show: exit %d:\n%s", code, out)
	}
	if code, out := runWalhook(t, "dlq", "show", "0000000000000999", "--sink", "s", "--config", cfg); code != 2 {
		t.Errorf("dlq show of an unknown id: exit %d, want 2:\n%s", code, out)
	}
	if m := metrics(t, addr); m[`walhook_dead_letters{sink="s"}`] != 1 {
		t.Errorf("walhook_dead_letters: got %v, want 1", m[`walhook_dead_letters{sink="s"}`])
	}

	// A replay in flight when walhook is killed: the dead letter stays.
	hang.Store(true)
	if code, out := runWalhook(t, "dlq", "replay", "--sink", "s", "--config", cfg); code != 0 || !strings.Contains(out, "replaying 1") {
		t.Fatalf("dlq replay: exit %d:\n%s", code, out)
	}
	waitUntil(t, 30*time.Second, "the replay to reach the receiver", func() bool {
		n, _, _, _ := rcv.Stats()
		return n >= 13 // 9 taken + 3 refused + the replay
	})
	d.kill(t)
	hang.Store(false)
	close(unhang)
	refuse.Store(false)
	d = startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "dlq_e2e", d)
	code, out = runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg)
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("after kill -9 during the replay, dlq list: exit %d:\n%s", code, out)
	}

	// Replay to a receiver that answers: delivered, then removed.
	if code, out := runWalhook(t, "dlq", "replay", id, "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("dlq replay %s: exit %d:\n%s", id, code, out)
	}
	rcv.WaitFor(t, 30*time.Second, "row 5", func(m []webhooktest.Message) bool {
		for _, x := range m {
			if rowID(t, x) == 5 {
				return true
			}
		}
		return false
	})
	waitUntil(t, 30*time.Second, "the dead letter removed", func() bool {
		code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg)
		return code == 0 && json.Unmarshal([]byte(out), &list) == nil && len(list) == 0
	})
	if code, out := runWalhook(t, "dlq", "drop", "--sink", "s", "--config", cfg); code != 2 {
		t.Errorf("dlq drop without IDs or --all: exit %d, want 2:\n%s", code, out)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestMaxLagBytes: with max_lag as a size and the only sink's receiver
// down, the slot holds the failing row until the server's WAL has moved
// more than that past it (writes to a table walhook does not capture);
// then the row becomes a dead letter with reason max_lag and the slot
// moves on, and a later row is delivered once the receiver is back. The
// server is the test's own: the WAL is the cluster's, and other tests'
// writes would move it past max_lag early.
func TestMaxLagBytes(t *testing.T) {
	t.Parallel()
	dsn := startServer(t, pgtest.Options{}).DSN("postgres")
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int, pad text)`)
	rcv := webhooktest.New(t, "")
	rcv.SetFaults(webhooktest.Faults{Down: true})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "max_lag_bytes", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL,
		Extra: "    max_lag: 256KiB\n"})
	withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "max_lag_bytes", d)

	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	row := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "attempts at row 1", func() bool { n, _, _, _ := rcv.Stats(); return n >= 3 })
	if code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("dlq list while the WAL lag is under max_lag: exit %d, want no dead letters:\n%s", code, out)
	}
	if s := readSlot(t, conn, "max_lag_bytes"); s.confirmed >= row {
		t.Fatalf("the slot passed the undelivered row 1 (confirmed %s, row %s)", s.confirmed, row)
	}

	exec1(t, conn, `INSERT INTO other SELECT i, repeat('x', 200) FROM generate_series(1, 2000) i`)
	var list []server.DeadLetter
	waitUntil(t, 30*time.Second, "row 1 dead-lettered", func() bool {
		code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg)
		return code == 0 && json.Unmarshal([]byte(out), &list) == nil && len(list) == 1
	})
	if list[0].Reason != "max_lag" || list[0].Count != 1 {
		t.Errorf("dead letter %+v, want row 1 with reason max_lag", list[0])
	}
	target := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "the slot past the dead-lettered row", func() bool {
		return readSlot(t, conn, "max_lag_bytes").confirmed >= target
	})
	rcv.SetFaults(webhooktest.Faults{})
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	got := rcv.WaitFor(t, 30*time.Second, "row 2", func(m []webhooktest.Message) bool { return len(m) >= 1 })
	if len(got) != 1 || rowID(t, got[0]) != 2 {
		t.Errorf("received %d messages, want only row 2 (row 1 waits in the dead letters)", len(got))
	}
}
