package pgstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/state"
)

// TestMigrations: the embedded migrations are numbered without gaps,
// migrating twice changes nothing, and a schema from a newer walhook is
// refused.
func TestMigrations(t *testing.T) {
	ctx := context.Background()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || SchemaVersion() != len(ms) {
		t.Fatalf("got %d migrations, schema version %d", len(ms), SchemaVersion())
	}
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	for range 2 {
		if err := Migrate(ctx, dsn); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n, top int
	if err := conn.QueryRow(ctx, `SELECT count(*), max(version) FROM walhook.migrations`).Scan(&n, &top); err != nil {
		t.Fatal(err)
	}
	if n != len(ms) || top != len(ms) {
		t.Errorf("walhook.migrations: %d rows up to %d, want %d", n, top, len(ms))
	}
	if _, err := conn.Exec(ctx, `INSERT INTO walhook.migrations (version, name) VALUES ($1, 'from the future')`, len(ms)+1); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, dsn, "s", Options{})
	if err == nil || !strings.Contains(err.Error(), "migrated by a newer walhook") {
		t.Errorf("open a schema of a newer walhook: got %v, want a refusal naming a newer walhook", err)
	}
}

// TestWriter: with a Writer, every write goes through it.
func TestWriter(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	calls := 0
	var s *Store
	s, err := Open(ctx, dsn, "s", Options{Writer: func(ctx context.Context, fn func(context.Context, pgx.Tx) error) error {
		calls++
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetSlot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	msg := &change.Message{Action: change.Insert, Schema: "public", Table: "t", Pos: change.Position{CommitLSN: 0x10}, Key: "1"}
	if _, err := s.DeadLetters("k").Add(ctx, state.DeadLetter{Entries: []state.Entry{{Msg: msg}}, Reason: state.ReasonMaxAttempts}); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("the writer carried %d writes, want 2", calls)
	}
}

// TestWriterDeadline: every statement of a write runs under the writer's
// context, so the writer's deadline (the lease's validity) ends a statement
// the server does not answer, not only BEGIN and COMMIT. Here the statement
// waits for a lock another session holds.
func TestWriterDeadline(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	const deadline = 500 * time.Millisecond
	var s *Store
	s, err := Open(ctx, dsn, "s", Options{Writer: func(ctx context.Context, fn func(context.Context, pgx.Tx) error) error {
		ctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	locker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE walhook.cursors IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.SaveCursors(ctx, map[string]state.Cursor{"k": {}}) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("SaveCursors succeeded while another session locked the table")
		}
		if took := time.Since(start); took > 5*deadline {
			t.Errorf("SaveCursors failed after %v, want about the writer's deadline of %v", took, deadline)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("SaveCursors still waits 10s after it started: its statement does not carry the writer's deadline of %v", deadline)
	}
}

// TestUpgradeToOrigins: a state from before migration 3 (and 4) keeps its slot and
// cursors, and reads no origin until walhook records one.
func TestUpgradeToOrigins(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	s, err := Open(ctx, dsn, "s", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSlot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	want := map[string]state.Cursor{"a": {Acked: change.Position{CommitLSN: 0x16B3748, Idx: 3}}}
	if err := s.SaveCursors(ctx, want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Back to the schema of a walhook before origins.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP TABLE walhook.origins; DROP TABLE walhook.events; DROP TABLE walhook.pauses; DELETE FROM walhook.migrations WHERE version >= 3`); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, dsn, "s", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if o, err := s.Origin(ctx); err != nil || !o.IsZero() {
		t.Errorf("origin after the upgrade: got %v, %v, want none", o, err)
	}
	if slot, err := s.Slot(ctx); err != nil || slot != "s" {
		t.Errorf("slot after the upgrade: got %q, %v, want s", slot, err)
	}
	if got, err := s.Cursors(ctx); err != nil || got["a"] != want["a"] {
		t.Errorf("cursors after the upgrade: got %v, %v, want %v", got, err, want)
	}
	o := state.Origin{SystemID: 1, Timeline: 1}
	if err := s.SetOrigin(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Origin(ctx); err != nil || got != o {
		t.Errorf("origin recorded after the upgrade: got %v, %v, want %v", got, err, o)
	}
}
