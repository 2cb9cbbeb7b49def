package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// TestFailoverSlots: on PostgreSQL 17, with source.failover, a standby with
// sync_replication_slots and the primary's synchronized_standby_slots
// naming it, walhook follows an immediate stop of the primary and the
// standby's promotion under a steady writer, resumes from the
// synchronised slot, and delivers every row the new primary has.
func TestFailoverSlots(t *testing.T) {
	primary := startServer(t, pgtest.Options{Version: 17, ExtraConf: []string{"synchronized_standby_slots = 'sb'"}})
	conn := connect(t, primary.DSN("postgres"))
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
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
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write",
		primary.Port(), standby.Port())
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
	sc := connect(t, standby.DSN("postgres"))
	waitUntil(t, 60*time.Second, "the slot synchronised to the standby", func() bool {
		var synced bool
		err := sc.QueryRow(context.Background(), `SELECT synced AND failover AND NOT temporary FROM pg_replication_slots WHERE slot_name = 'fo_slots'`).Scan(&synced)
		return err == nil && synced
	})
	sc.Close(context.Background())
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
