package lease

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/pgstore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newDB is a database with the schema walhook, as the store makes it.
func newDB(t *testing.T) string {
	t.Helper()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	s, err := pgstore.Open(context.Background(), dsn, "migrate", pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dsn
}

func TestOneHolder(t *testing.T) {
	ctx := context.Background()
	dsn := newDB(t)
	a, b, other := NewCandidate(dsn, "s1", quiet), NewCandidate(dsn, "s1", quiet), NewCandidate(dsn, "s2", quiet)
	defer a.Close()
	defer b.Close()
	defer other.Close()
	la, err := a.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := b.try(ctx); l != nil || err != nil {
		t.Fatalf("a second candidate of the slot: got %v, %v, want no lease", l, err)
	}
	// Another slot has a lock of its own.
	lo, err := other.try(ctx)
	if lo == nil || err != nil {
		t.Fatalf("a candidate of another slot: got %v, %v, want its lease", lo, err)
	}
	defer lo.Release()
	h, ok, err := b.Holder(ctx)
	if err != nil || !ok || h.PID != a.pid || h.Host != a.host {
		t.Fatalf("holder: got %+v, %v, %v, want pid %d on %s", h, ok, err, a.pid, a.host)
	}
	// Writes go through; a refused one leaves the lease as it was.
	if err := la.Tx(ctx, func(ctx context.Context, tx pgx.Tx) error { _, err := tx.Exec(ctx, "SELECT 1"); return err }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := la.Tx(ctx, func(context.Context, pgx.Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	// Held across several checks.
	time.Sleep(2*CheckInterval + 200*time.Millisecond)
	if err := la.Err(); err != nil {
		t.Fatalf("lost while held: %v", err)
	}
	la.Release()
	if err := la.Tx(ctx, func(context.Context, pgx.Tx) error { return nil }); !errors.Is(err, ErrLost) {
		t.Fatalf("Tx after Release: got %v, want ErrLost", err)
	}
	lb, err := b.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Release()
	if h, ok, _ := a.Holder(ctx); !ok || h.PID != b.pid {
		t.Errorf("holder after the takeover: got %+v, %v", h, ok)
	}
}

// TestLostWhenSessionEnds: the lock session terminated by the server, the
// lease says so at the next check, and nothing more is written through it.
func TestLostWhenSessionEnds(t *testing.T) {
	ctx := context.Background()
	dsn := newDB(t)
	l := holdLease(t, dsn)
	endLockSession(t, dsn)
	start := time.Now()
	select {
	case <-l.Lost():
	case <-time.After(Validity + time.Second):
		t.Fatal("the lease was not lost after its session ended")
	}
	t.Logf("lost %v after the session ended: %v", time.Since(start), l.Err())
	if time.Since(start) > CheckInterval+time.Second {
		t.Errorf("lost after %v, want within a check interval", time.Since(start))
	}
	if err := l.Tx(ctx, func(context.Context, pgx.Tx) error { return nil }); !errors.Is(err, ErrLost) {
		t.Fatalf("Tx after the loss: got %v, want ErrLost", err)
	}
	b := NewCandidate(dsn, "s", quiet)
	defer b.Close()
	lb, err := b.try(ctx)
	if lb == nil {
		t.Fatalf("the lock is not free after its session ended: %v", err)
	}
	lb.Release()
}

// TestLostLeaseCannotWrite: a store writing through a lease writes nothing
// once the lease's session is gone, even before the lease noticed: the
// shared cursor stays where the new holder finds it.
func TestLostLeaseCannotWrite(t *testing.T) {
	ctx := context.Background()
	dsn := newDB(t)
	l := holdLease(t, dsn)
	s, err := pgstore.Open(ctx, dsn, "s", pgstore.Options{Writer: l.Tx})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := map[string]state.Cursor{"k": {Acked: change.Position{CommitLSN: 0x100}}}
	if err := s.SaveCursors(ctx, before); err != nil {
		t.Fatal(err)
	}
	endLockSession(t, dsn)
	// Another instance takes the lock and reads the cursor.
	b := NewCandidate(dsn, "s", quiet)
	defer b.Close()
	var lb *Lease
	deadline := time.Now().Add(5 * time.Second)
	for lb == nil && time.Now().Before(deadline) {
		if lb, err = b.TryAcquire(ctx); lb == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if lb == nil {
		t.Fatalf("the lock was not free after its session ended: %v", err)
	}
	defer lb.Release()
	after := map[string]state.Cursor{"k": {Acked: change.Position{CommitLSN: 0x200}}}
	if err := s.SaveCursors(ctx, after); err == nil {
		t.Fatal("a save through a lost lease succeeded")
	}
	got, err := s.Cursors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got["k"] != before["k"] {
		t.Errorf("cursor after a save through the lost lease: got %v, want %v", got["k"], before["k"])
	}
}

// holdLease acquires the lease of slot s in dsn, released when the test
// ends.
func holdLease(t *testing.T, dsn string) *Lease {
	t.Helper()
	c := NewCandidate(dsn, "s", quiet)
	t.Cleanup(func() { c.Close() })
	l, err := c.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Release)
	return l
}

// endLockSession has the server terminate the session that holds slot s's
// lock, as an administrator or a network cut would end it.
func endLockSession(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(backend_pid) FROM walhook.leaders WHERE slot = 's'`); err != nil {
		t.Fatal(err)
	}
}

// TestValid: Valid holds while the lease does, refuses once it is released
// and, without waiting for the lease's timer, once its validity has run out
// by the clock (as after the process was frozen and resumed, when the
// timer has not fired yet).
func TestValid(t *testing.T) {
	dsn := newDB(t)
	l := holdLease(t, dsn)
	if err := l.Valid(); err != nil {
		t.Fatalf("Valid on a fresh lease: %v", err)
	}
	// The validity runs out now by the clock; the timer that counts the
	// lease lost is not due yet, and no check renews it (mu is held, as by
	// a write stuck on the lock connection).
	l.mu.Lock()
	l.validFor.Store(int64(time.Since(l.born)))
	if err := l.Err(); err != nil {
		t.Fatalf("Err before the timer fired: %v", err)
	}
	if err := l.Valid(); !errors.Is(err, ErrLost) {
		t.Errorf("Valid once the validity ran out by the clock: got %v, want ErrLost", err)
	}
	l.validFor.Store(int64(time.Since(l.born) + Validity))
	l.mu.Unlock()
	if err := l.Valid(); err != nil {
		t.Fatalf("Valid once renewed: %v", err)
	}
	l.Release()
	if err := l.Valid(); !errors.Is(err, ErrLost) {
		t.Errorf("Valid after Release: got %v, want ErrLost", err)
	}
}
