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

// TestFaultShortSenderTimeout: with wal_sender_timeout (4s) shorter than the
// status interval that receive_timeout and heartbeat alone give (10s at
// their defaults), a walhook blocked on a receiver that is down must still
// keep its replication connection: the walsender stays the same for longer
// than several timeouts, and every row arrives once the receiver is back.
func TestFaultShortSenderTimeout(t *testing.T) {
	soak(t)
	t.Parallel()
	const (
		slot = "fault_sender_timeout"
		rows = 5000 // far more than the event channel and the lane hold
		hold = 20 * time.Second
	)
	srv := startServer(t, pgtest.Options{WALSenderTimeout: 4 * time.Second})
	dsn := srv.DSN("postgres")
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, slot, "", sinkConf{Name: "s", URL: rcv.URL,
		Extra: "    batch_size: 50\n    max_in_flight: 1\n"})
	defaultTimings(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	pid := waitActive(t, conn, slot, 0, d, 30*time.Second)

	rcv.SetFaults(webhooktest.Faults{FailRatio: 1})
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(1, $1::int) i`, rows)
	until := time.Now().Add(hold)
	for time.Now().Before(until) {
		if got := readSlot(t, conn, slot).activePID; got != pid {
			t.Fatalf("slot held by PID %d while delivery was blocked, want walsender %d throughout: "+
				"status updates must come more often than wal_sender_timeout", got, pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, failures, _, _ := rcv.Stats(); failures == 0 || len(rcv.Messages()) != 0 {
		t.Fatalf("receiver failed %d requests and accepted %d messages, want failures and none accepted: delivery was not blocked",
			failures, len(rcv.Messages()))
	}

	rcv.SetFaults(webhooktest.Faults{})
	// A bound: a loaded full run delivered half the rows in 30 s.
	waitIDs(t, rcv, "t", committedIDs(t, conn, "t"), 3*time.Minute)
	if code := d.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("walhook exited %d, want 0", code)
	}
}

// defaultTimings removes the short heartbeat and receive_timeout that
// writeConfig sets from the configuration at path, so walhook runs with
// the defaults (10s and 30s).
func defaultTimings(t *testing.T, path string) {
	t.Helper()
	const short = "  heartbeat: 200ms\n  receive_timeout: 5s\n"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), short) {
		t.Fatalf("configuration %s does not hold %q to remove:\n%s", path, short, b)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), short, "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}
