package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// startSyncedPair starts a PostgreSQL 17 primary, with
// synchronized_standby_slots set to standbySlots, and a standby that
// synchronises its failover slots (physical slot sb). It returns both, a
// connection to the primary, and a URL naming both hosts that follows the
// primary. Table t (id, pad) exists.
func startSyncedPair(t *testing.T, standbySlots string) (primary, standby *pgtest.Server, conn *pgx.Conn, dsn string) {
	t.Helper()
	primary = startServer(t, pgtest.Options{Version: 17, ExtraConf: []string{"synchronized_standby_slots = '" + standbySlots + "'"}})
	conn = connect(t, primary.DSN("postgres"))
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, pad text)`)
	exec1(t, conn, `SELECT pg_create_physical_replication_slot('sb', true)`)
	standby, err := primary.StartStandby("primary_slot_name = 'sb'", "hot_standby_feedback = on", "sync_replication_slots = on",
		"synchronized_standby_slots = ''")
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
	conn = connect(t, primary.DSN("postgres")) // making the standby restarted the primary
	dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write",
		primary.Port(), standby.Port())
	return primary, standby, conn, dsn
}

// waitSynced waits until the standby holds a synchronised, persistent copy
// of the failover slot.
func waitSynced(t *testing.T, standby *pgtest.Server, slot string) {
	t.Helper()
	sc := connect(t, standby.DSN("postgres"))
	defer sc.Close(context.Background())
	waitUntil(t, 60*time.Second, "the slot synchronised to the standby", func() bool {
		var synced bool
		err := sc.QueryRow(context.Background(), `SELECT synced AND failover AND NOT temporary FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&synced)
		return err == nil && synced
	})
}

// TestFailoverSlots: on PostgreSQL 17, with source.failover, a standby with
// sync_replication_slots and the primary's synchronized_standby_slots
// naming it, walhook follows an immediate stop of the primary and the
// standby's promotion under a steady writer, resumes from the
// synchronised slot, and delivers every row the new primary has.
func TestFailoverSlots(t *testing.T) {
	soak(t)
	t.Parallel()
	primary, standby, conn, dsn := startSyncedPair(t, "sb")
	rcv := webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "fo_slots", "  tables: [public.t]\n  failover: true\n", sinkConf{Name: "s", URL: rcv.URL})

	code, out := runWalhook(t, "check", "--config", cfg)
	for _, want := range []string{
		`failover: slot "fo_slots" is missing; walhook run creates it as a failover slot`,
		"primary: synchronized_standby_slots = 'sb'",
		fmt.Sprintf("standby 127.0.0.1:%d: sync_replication_slots on, hot_standby_feedback on, primary_slot_name 'sb'", standby.Port()),
		"source.url: 2 hosts; walhook connects to the one that takes writes (target_session_attrs=read-write)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check does not say %q:\n%s", want, out)
		}
	}
	if code != 0 || strings.Contains(out, "missing for a safe failover") {
		t.Errorf("check exited %d, want 0 and nothing missing:\n%s", code, out)
	}

	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "fo_slots", d)
	w := startInserter(t, dsn, "t", 1, 5*time.Millisecond)
	rcv.WaitCount(t, 100, 60*time.Second)
	waitSynced(t, standby, "fo_slots")
	rcv.WaitCount(t, len(rcv.Messages())+50, 60*time.Second)
	if err := primary.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	killedAt := w.Next()
	t.Logf("primary killed near id %d, %d delivered", killedAt, len(rcv.Messages()))
	after := w.Next() + 100
	waitUntil(t, 60*time.Second, "100 more rows on the new primary", func() bool { return w.Next() >= after })
	w.Stop()
	nc := connect(t, standby.DSN("postgres"))
	ids := committedIDs(t, nc, "t")
	c := newIDTally("t")
	deadline := time.Now().Add(90 * time.Second)
	for {
		c.update(t, rcv.Messages())
		if len(c.missing(ids)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows never delivered: %v (of %d; the primary was killed near id %d)", c.missing(ids), len(ids), killedAt)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !d.running() {
		t.Fatalf("walhook exited (%v); output:\n%s", d.err, d.out.String())
	}
	t.Logf("%d rows committed around the failover, all delivered, %d redelivered", len(ids), c.duplicates())
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestFailoverRefusedBefore17: source.failover on PostgreSQL 16 is a
// configuration error for check and run (exit 2), naming PostgreSQL 17.
func TestFailoverRefusedBefore17(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared()
	if srv.Version() >= 17 {
		srv = startServer(t, pgtest.Options{Version: 16})
	}
	dsn := pgtest.NewDatabase(t, srv)
	cfg := writeConfig(t, t.TempDir(), dsn, "fo_old", "  failover: true\n", sinkConf{Name: "s", URL: "http://127.0.0.1:1/"})
	for _, cmd := range []string{"check", "run"} {
		code, out := runWalhook(t, cmd, "--config", cfg)
		if code != 2 || !strings.Contains(out, "source.failover needs PostgreSQL 17 or later") || !strings.Contains(out, fmt.Sprintf("PostgreSQL %d.", srv.Version())) {
			t.Errorf("walhook %s exited %d, want 2 naming PostgreSQL 17 and the server's version:\n%s", cmd, code, out)
		}
	}
}

// TestFailoverAltersSlot: with source.failover, an existing slot that is
// not a failover slot becomes one (ALTER_REPLICATION_SLOT), and check says
// it will, and that no standby is listed.
func TestFailoverAltersSlot(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgtest.Options{Version: 17})
	conn := connect(t, srv.DSN("postgres"))
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	exec1(t, conn, `SELECT pg_create_logical_replication_slot('fo_alter', 'pgoutput')`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), srv.DSN("postgres"), "fo_alter", "  tables: [public.t]\n  failover: true\n", sinkConf{Name: "s", URL: rcv.URL})
	code, out := runWalhook(t, "check", "--config", cfg)
	for _, want := range []string{`slot "fo_alter" is not a failover slot; walhook run makes it one`,
		"synchronized_standby_slots is empty", "no standby among source.url's hosts"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("check exited %d, want 0 and %q:\n%s", code, want, out)
		}
	}
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "fo_alter", d)
	var failover bool
	if err := conn.QueryRow(context.Background(), `SELECT failover FROM pg_replication_slots WHERE slot_name = 'fo_alter'`).Scan(&failover); err != nil || !failover {
		t.Errorf("slot failover: got %t (%v), want true", failover, err)
	}
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	waitIDs(t, rcv, "t", []int{1}, 30*time.Second)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

func TestTargetSessionAttrs(t *testing.T) {
	t.Parallel()
	for dsn, want := range map[string]string{
		"postgres://h1,h2/db?target_session_attrs=read-write": "read-write",
		"postgres://h1,h2/db":                                   "any",
		"host=h1,h2 dbname=db target_session_attrs=primary":     "primary",
		"host=h1,h2 dbname=db target_session_attrs='read-only'": "read-only",
		"host=h1 dbname=db":                                     "any",
	} {
		if got := targetSessionAttrs(dsn); got != want {
			t.Errorf("targetSessionAttrs(%q): got %q, want %q", dsn, got, want)
		}
	}
}

// TestFailoverSlotsBehindCursor: PostgreSQL 17 failover slots without
// synchronized_standby_slots. The standby stops receiving, walhook
// delivers changes only the primary has, the primary dies and the standby
// is promoted with its synchronised slot behind walhook's cursor: walhook
// stops with exit 1 naming the branch point and its cursor, and delivers
// none of the rows committed on the new timeline (which it would skip).
func TestFailoverSlotsBehindCursor(t *testing.T) {
	soak(t)
	t.Parallel()
	primary, standby, conn, dsn := startSyncedPair(t, "")
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "fo_behind", "  tables: [public.t]\n  failover: true\n", sinkConf{Name: "s", URL: rcv.URL})
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "synchronized_standby_slots is empty") ||
		!strings.Contains(out, `missing for a safe failover: synchronized_standby_slots listing "sb" (on the primary)`) {
		t.Errorf("check exited %d, want 0 and warnings naming synchronized_standby_slots:\n%s", code, out)
	}
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "fo_behind", d)
	insert(t, conn, 1, 20, 10)
	waitIDs(t, rcv, "t", idRange(1, 20), 60*time.Second)
	waitSynced(t, standby, "fo_behind")

	if err := standby.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	insert(t, conn, 21, 420, 1000)
	delivered := waitIDs(t, rcv, "t", idRange(21, 420), 60*time.Second)
	var last pglogrepl.LSN
	for _, m := range rcv.Messages() {
		if lsn, err := pglogrepl.ParseLSN(m.Metadata.CommitLSN); err == nil {
			last = max(last, lsn)
		}
	}
	if err := primary.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if err := standby.Start(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	sw := switchPoint(t, standby)
	nc := connect(t, standby.DSN("postgres"))
	insert(t, nc, 1001, 1020, 10)
	if lsn := currentLSN(t, nc); sw >= last || lsn >= last {
		t.Fatalf("switch %s, new rows up to %s, last delivered commit %s: the test does not put the new rows below the cursor", sw, lsn, last)
	}
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("walhook ran on after the failover, 60 s; output:\n%s", d.out.String())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("walhook exited %d, want 1", code)
	}
	if want := fmt.Sprintf("branched off timeline 1 at %s, but walhook's cursor is at ", sw); !strings.Contains(d.out.String(), want) {
		t.Errorf("walhook's output does not contain %q:\n%s", want, d.out.String())
	}
	delivered.update(t, rcv.Messages())
	for id := 1001; id <= 1020; id++ {
		if delivered.count[id] > 0 {
			t.Errorf("row %d of the new timeline was delivered; walhook must stop before streaming it", id)
		}
	}
}
