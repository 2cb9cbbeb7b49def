package cursor

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/boltstore"
)

// stalledStore is a real store whose cursor writes wait until gate is
// closed, as behind a slow fsync or a state database that stopped
// answering. Each write that starts waiting is announced on waiting.
type stalledStore struct {
	state.Store
	gate    chan struct{}
	waiting chan string
}

func (s *stalledStore) stall(what string) {
	select {
	case s.waiting <- what:
	default:
	}
	<-s.gate
}

func (s *stalledStore) SaveCursors(ctx context.Context, c map[string]state.Cursor) error {
	s.stall("SaveCursors")
	return s.Store.SaveCursors(ctx, c)
}

func (s *stalledStore) DeleteCursor(ctx context.Context, sink string) error {
	s.stall("DeleteCursor")
	return s.Store.DeleteCursor(ctx, sink)
}

func openStalled(t *testing.T) *stalledStore {
	t.Helper()
	bs, err := boltstore.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	return &stalledStore{Store: bs, gate: make(chan struct{}), waiting: make(chan string, 1)}
}

// runnersGoOn does what runners and the dispatcher do while a write is
// stalled (acks, marks, floor raises, a sink added and removed, status)
// and fails the test if it does not finish within 5 s.
func runnersGoOn(t *testing.T, s *Set, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a := s.Tracker("a")
		p := change.Position{CommitLSN: 0x300, Idx: 0}
		a.Add(p, 10)
		a.Mark(0x310)
		a.Ack(p)
		s.RaiseFloor("b", 0x400)
		s.Add("c", p)
		_ = s.Status()
		_ = s.Loaded("a")
		s.Remove("c")
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("acks and floor raises still wait 5 s after %s stalled: runners wait on store I/O", what)
	}
}

// TestSetNeverWaitsForTheStore: while a cursor write is stalled in the
// store, what runners do (acks, floor raises, adding a sink) completes; the
// flush LSN rises only once the cursors it depends on are durable.
func TestSetNeverWaitsForTheStore(t *testing.T) {
	ctx := context.Background()
	st := openStalled(t)
	s, err := NewSet(ctx, st, []string{"a", "b"}, 0x100)
	if err != nil {
		t.Fatal(err)
	}
	a := s.Tracker("a")
	p := change.Position{CommitLSN: 0x200, Idx: 0}
	a.Add(p, 10)
	a.Mark(0x210)
	a.Ack(p)
	s.RaiseFloor("b", 0x220)

	persisted := make(chan error, 1)
	go func() { persisted <- s.Persist(ctx) }()
	if got := <-st.waiting; got != "SaveCursors" {
		t.Fatalf("Persist stalled in %s, want SaveCursors", got)
	}
	runnersGoOn(t, s, "Persist's SaveCursors")
	if got, want := s.Flush(), pglogrepl.LSN(0x100); got != want {
		t.Errorf("flush LSN while the cursors are not yet written: got %s, want %s", got, want)
	}
	close(st.gate)
	if err := <-persisted; err != nil {
		t.Fatal(err)
	}
	// The snapshot held a at 0x200 (safe 0x210) and b's floor 0x220.
	if got, want := s.Flush(), pglogrepl.LSN(0x210); got != want {
		t.Errorf("flush LSN after the write: got %s, want %s", got, want)
	}
	saved, err := st.Cursors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := saved["a"].Acked; got != p {
		t.Errorf("a's saved cursor: got %s, want %s", got, p)
	}
	// What moved during the write is saved by the next Persist.
	if err := s.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := s.Flush(), pglogrepl.LSN(0x310); got != want {
		t.Errorf("flush LSN after the second write: got %s, want %s", got, want)
	}
}

// TestRetireNeverStallsRunners: Retire writing the removal of a sink's
// cursor does not stall runners either; a sink added back meanwhile waits
// for that write and then has its cursor saved again, without a removal.
func TestRetireNeverStallsRunners(t *testing.T) {
	ctx := context.Background()
	st := openStalled(t)
	gone := change.Position{CommitLSN: 0x50}
	if err := st.Store.SaveCursors(ctx, map[string]state.Cursor{"gone": {Acked: gone}}); err != nil {
		t.Fatal(err)
	}
	s, err := NewSet(ctx, st, []string{"a", "b"}, 0x100)
	if err != nil {
		t.Fatal(err)
	}
	retired := make(chan error, 1)
	go func() {
		_, err := s.Retire(ctx, time.Now(), time.Hour)
		retired <- err
	}()
	<-st.waiting
	runnersGoOn(t, s, "Retire's SaveCursors")

	added := make(chan struct{})
	go func() {
		s.Add("gone", change.Position{CommitLSN: 0x500})
		close(added)
	}()
	select {
	case <-added:
		t.Fatal("the sink being retired was added back while its removal was being written")
	case <-time.After(100 * time.Millisecond):
	}
	close(st.gate)
	if err := <-retired; err != nil {
		t.Fatal(err)
	}
	<-added
	if err := s.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	saved, err := st.Cursors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := saved["gone"]; !c.Removed.IsZero() || c.Acked != (change.Position{CommitLSN: 0x500}) {
		t.Errorf("the cursor of the sink added back: got %+v, want acked 0/500 and no removal time", c)
	}
}

// TestSetAddedDuringWrite: a sink added while the cursors are written was
// not in the write: the flush LSN does not rise on that write, only on the
// next one, which saves the new sink's cursor too.
func TestSetAddedDuringWrite(t *testing.T) {
	ctx := context.Background()
	st := openStalled(t)
	s, err := NewSet(ctx, st, []string{"a"}, 0x100)
	if err != nil {
		t.Fatal(err)
	}
	a := s.Tracker("a")
	p := change.Position{CommitLSN: 0x200}
	a.Add(p, 10)
	a.Mark(0x210)
	a.Ack(p)
	persisted := make(chan error, 1)
	go func() { persisted <- s.Persist(ctx) }()
	<-st.waiting
	d := s.Add("d", change.Position{CommitLSN: 0x150})
	q := change.Position{CommitLSN: 0x300}
	d.Add(q, 10)
	d.Mark(0x310)
	d.Ack(q)
	close(st.gate)
	if err := <-persisted; err != nil {
		t.Fatal(err)
	}
	if got, want := s.Flush(), pglogrepl.LSN(0x100); got != want {
		t.Errorf("flush LSN after a write that did not hold the added sink: got %s, want %s", got, want)
	}
	if err := s.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := s.Flush(), pglogrepl.LSN(0x210); got != want {
		t.Errorf("flush LSN after the next write: got %s, want %s", got, want)
	}
	saved, err := st.Cursors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := saved["d"].Acked; got != q {
		t.Errorf("the added sink's saved cursor: got %s, want %s", got, q)
	}
}
