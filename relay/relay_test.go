package relay

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/boltstore"
)

// Relay tests with a fake source and fake delivery engines: what the relay
// itself decides (dispatch, skip, filter, window, flush LSN, shutdown).

// fakeSource streams a scripted list of events, then waits.
type fakeSource struct {
	start  pglogrepl.LSN
	events []replication.Event

	mu      sync.Mutex
	flushed func() pglogrepl.LSN
	setups  int
}

func (s *fakeSource) Setup(context.Context, bool) (pglogrepl.LSN, error) {
	s.mu.Lock()
	s.setups++
	s.mu.Unlock()
	return s.start, nil
}

func (s *fakeSource) Run(ctx context.Context, stop <-chan struct{}, flushed func() pglogrepl.LSN, out chan<- []replication.Event) error {
	s.mu.Lock()
	s.flushed = flushed
	s.mu.Unlock()
	// In batches of three, so that a batch ends amid a transaction too.
	for batch := range slices.Chunk(s.events, 3) {
		select {
		case out <- batch:
		case <-stop:
			<-ctx.Done()
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	<-ctx.Done()
	return nil
}

// flush is the LSN the relay would report now.
func (s *fakeSource) flush() pglogrepl.LSN {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flushed == nil {
		return 0
	}
	return s.flushed()
}

// fakeDelivery records what it is given and acknowledges on demand.
type fakeDelivery struct {
	ack func([]change.Position)

	mu      sync.Mutex
	got     []*change.Message
	pending map[change.Position]bool
	drained bool
}

func newFakeDelivery() *fakeDelivery { return &fakeDelivery{pending: map[change.Position]bool{}} }

func (d *fakeDelivery) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (d *fakeDelivery) Ended(pglogrepl.LSN) {}

func (d *fakeDelivery) Submit(m *change.Message, _ uint64, _ bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, m)
	d.pending[m.Pos] = true
	return nil
}

func (d *fakeDelivery) Drain(ctx context.Context) error {
	d.mu.Lock()
	d.drained = true
	d.mu.Unlock()
	return nil
}

// deliver acknowledges the message at pos.
func (d *fakeDelivery) deliver(pos change.Position) {
	d.mu.Lock()
	delete(d.pending, pos)
	d.mu.Unlock()
	d.ack([]change.Position{pos})
}

func (d *fakeDelivery) received() []change.Position {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []change.Position
	for _, m := range d.got {
		out = append(out, m.Pos)
	}
	return out
}

func pos(lsn, idx int) change.Position {
	return change.Position{CommitLSN: pglogrepl.LSN(lsn), Idx: uint32(idx)}
}

func insert(table string, p change.Position) replication.Event {
	return replication.Event{Kind: replication.EventChange, Msg: &change.Message{
		Action: change.Insert, Schema: "public", Table: table, Pos: p, Key: table, Record: []byte(`{}`)}}
}

func commit(lsn int) replication.Event {
	return replication.Event{Kind: replication.EventCommit, LSN: pglogrepl.LSN(lsn)}
}

// harness runs a relay of src with the given sinks until the test ends.
type harness struct {
	t      *testing.T
	relay  *Relay
	sinks  map[string]*fakeDelivery
	cancel context.CancelFunc
	done   chan error
}

func openStore(t *testing.T, path string) state.Store {
	t.Helper()
	st, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func startRelay(t *testing.T, src Source, store state.Store, sinks map[string]config.Sink) *harness {
	t.Helper()
	return startRelayWith(t, src, store, sinks, Options{})
}

// startRelayWith is startRelay with options; the persist interval and
// shutdown timeout default to the tests' short ones.
func startRelayWith(t *testing.T, src Source, store state.Store, sinks map[string]config.Sink, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, sinks: map[string]*fakeDelivery{}, done: make(chan error, 1)}
	if opts.PersistInterval == 0 {
		opts.PersistInterval = 5 * time.Millisecond
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = time.Second
	}
	h.relay = New(src, "slot", store, opts, slog.New(slog.DiscardHandler))
	for name, sc := range sinks {
		sc.Name = name
		if sc.Window.Messages == 0 {
			sc.Window = config.Window{Messages: 1000, Bytes: 1 << 30}
		}
		d := newFakeDelivery()
		d.ack = h.relay.Acker(name)
		h.sinks[name] = d
		h.relay.Add(Sink{Name: name, Delivery: d, Filter: sink.NewFilter(sc, nil), Router: sink.NewRouter(sc), Window: sc.Window})
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.relay.Run(ctx) }()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop ends the relay and returns Run's error; it may be called again.
func (h *harness) stop() error {
	h.t.Helper()
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return within 10 s of its context ending")
		return nil
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestFlushIsTheSlowestSink(t *testing.T) {
	src := &fakeSource{start: 0x10, events: []replication.Event{
		insert("t", pos(0x100, 0)), insert("t", pos(0x100, 1)), commit(0x120),
		insert("t", pos(0x200, 0)), commit(0x220),
	}}
	h := startRelay(t, src, openStore(t, filepath.Join(t.TempDir(), "state")), map[string]config.Sink{"a": {}, "b": {}})
	a, b := h.sinks["a"], h.sinks["b"]
	waitFor(t, "both sinks get 3 messages", func() bool { return len(a.received()) == 3 && len(b.received()) == 3 })
	for _, p := range []change.Position{pos(0x100, 0), pos(0x100, 1), pos(0x200, 0)} {
		a.deliver(p)
	}
	time.Sleep(50 * time.Millisecond) // ten persist intervals: the flush must not move
	if got := src.flush(); got != 0x10 {
		t.Fatalf("sink b delivered nothing: got flush %s, want the start 0/10", got)
	}
	b.deliver(pos(0x100, 1)) // out of order: the prefix stops at 0x100:0
	b.deliver(pos(0x100, 0))
	waitFor(t, "flush at the first commit", func() bool { return src.flush() == 0x120 })
	b.deliver(pos(0x200, 0))
	waitFor(t, "flush at the second commit", func() bool { return src.flush() == 0x220 })
}

func TestRestartSkipsWhatWasDelivered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	events := []replication.Event{insert("t", pos(0x100, 0)), insert("t", pos(0x100, 1)), insert("t", pos(0x100, 2)), commit(0x120)}
	store := openStore(t, path)
	h := startRelay(t, &fakeSource{start: 0x10, events: events}, store, map[string]config.Sink{"s": {}})
	d := h.sinks["s"]
	waitFor(t, "3 messages", func() bool { return len(d.received()) == 3 })
	d.deliver(pos(0x100, 0))
	d.deliver(pos(0x100, 1))
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if !d.drained {
		t.Error("the sink was not drained at shutdown")
	}
	store.Close()

	// The source sends the transaction again (nothing was flushed).
	store = openStore(t, path)
	defer store.Close()
	h = startRelay(t, &fakeSource{start: 0x10, events: events}, store, map[string]config.Sink{"s": {}})
	d = h.sinks["s"]
	waitFor(t, "the undelivered message", func() bool { return len(d.received()) >= 1 })
	time.Sleep(20 * time.Millisecond)
	if got := d.received(); len(got) != 1 || got[0] != pos(0x100, 2) {
		t.Fatalf("after a restart the sink got %v, want only 0/100:2", got)
	}
}

func TestFilteredOutMessagesDoNotHoldTheSlot(t *testing.T) {
	src := &fakeSource{start: 0x10, events: []replication.Event{insert("other", pos(0x100, 0)), commit(0x120)}}
	h := startRelay(t, src, openStore(t, filepath.Join(t.TempDir(), "state")),
		map[string]config.Sink{"s": {Tables: []config.Table{{Schema: "public", Name: "t"}}}})
	waitFor(t, "flush past the filtered-out transaction", func() bool { return src.flush() == 0x120 })
	if got := h.sinks["s"].received(); len(got) != 0 {
		t.Fatalf("the sink got %v, want nothing", got)
	}
}

func TestWindowHoldsTheSink(t *testing.T) {
	var events []replication.Event
	for i := 0; i < 10; i++ {
		events = append(events, insert("t", pos(0x100, i)))
	}
	src := &fakeSource{start: 0x10, events: append(events, commit(0x120))}
	h := startRelay(t, src, openStore(t, filepath.Join(t.TempDir(), "state")),
		map[string]config.Sink{"s": {Window: config.Window{Messages: 3, Bytes: 1 << 30}}})
	d := h.sinks["s"]
	waitFor(t, "a full window", func() bool { return len(d.received()) == 3 })
	time.Sleep(20 * time.Millisecond)
	if n := len(d.received()); n != 3 {
		t.Fatalf("the sink took %d messages with a window of 3 and nothing delivered", n)
	}
	d.deliver(pos(0x100, 1)) // behind a stuck head: no room
	time.Sleep(20 * time.Millisecond)
	if n := len(d.received()); n != 3 {
		t.Fatalf("the sink took %d messages behind an undelivered head, want 3", n)
	}
	d.deliver(pos(0x100, 0))
	waitFor(t, "two more messages", func() bool { return len(d.received()) == 5 })
}

func TestPauseUnknownSink(t *testing.T) {
	h := startRelay(t, &fakeSource{start: 0x10}, openStore(t, filepath.Join(t.TempDir(), "state")), map[string]config.Sink{"s": {}})
	if err := h.relay.Pause(context.Background(), "nope"); !errors.Is(err, ErrUnknownSink) {
		t.Fatalf("Pause of an unknown sink: got %v, want ErrUnknownSink", err)
	}
}

func TestKillStopsWithoutDraining(t *testing.T) {
	src := &fakeSource{start: 0x10, events: []replication.Event{insert("t", pos(0x100, 0)), commit(0x120)}}
	h := startRelay(t, src, openStore(t, filepath.Join(t.TempDir(), "state")), map[string]config.Sink{"s": {}})
	d := h.sinks["s"]
	waitFor(t, "the message", func() bool { return len(d.received()) == 1 })
	h.relay.Kill()
	select {
	case err := <-h.done:
		if !errors.Is(err, ErrKilled) {
			t.Fatalf("Run after Kill: got %v, want ErrKilled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of Kill")
	}
	h.cancel = nil
	if d.drained {
		t.Error("Kill drained the sink; a hard stop must not")
	}
}

// blockedSetup is a source whose Setup waits for its context, as Setup
// does while another process streams from the slot.
type blockedSetup struct{ fakeSource }

func (s *blockedSetup) Setup(ctx context.Context, _ bool) (pglogrepl.LSN, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestKillDuringSetup: a Kill ends a setup that waits, and Run says it was
// killed.
func TestKillDuringSetup(t *testing.T) {
	r := New(&blockedSetup{}, "slot", openStore(t, filepath.Join(t.TempDir(), "state")), Options{}, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	r.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, ErrKilled) {
			t.Fatalf("Run after Kill during setup: got %v, want ErrKilled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of a Kill during setup")
	}
}
