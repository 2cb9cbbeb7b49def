package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestStandby: a standby streams the primary's changes, keeps the slots
// the primary had when it was made, and takes writes once promoted.
func TestStandby(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()
	exec := func(srv *Server, sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, srv.DSN(""))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	count := func(srv *Server) int {
		t.Helper()
		conn, err := pgx.Connect(ctx, srv.DSN(""))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	exec(primary, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
	exec(primary, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
	standby, err := primary.StartStandby()
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close()
	exec(primary, "INSERT INTO t VALUES (2)")
	deadline := time.Now().Add(30 * time.Second)
	for count(standby) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("standby has %d rows after 30s, want 2", count(standby))
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := pgx.Connect(ctx, standby.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var slots int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's'").Scan(&slots); err != nil || slots != 1 {
		t.Errorf("slots named s on the standby: got %d (%v), want 1", slots, err)
	}
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	exec(standby, "INSERT INTO t VALUES (3)")
	if n := count(standby); n != 3 {
		t.Errorf("promoted standby: got %d rows, want 3", n)
	}
}
