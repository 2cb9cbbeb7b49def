package relay

import (
	"context"
	"fmt"
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
)

// Tests of the relay's control plane: sinks that block and recover, sinks
// added and removed while others hold the stream or before it streams.

// fakeDest is a delivery engine whose destination is up or down: while up
// it delivers what was submitted, in submission order, and acknowledges
// it; while down it keeps it.
type fakeDest struct {
	name string
	ack  func([]change.Position)

	mu      sync.Mutex
	up      bool
	queue   []*change.Message // submitted, not delivered
	got     []*change.Message // delivered, in order
	kick    chan struct{}
	stopped bool
}

func newFakeDest(name string, up bool) *fakeDest {
	return &fakeDest{name: name, up: up, kick: make(chan struct{}, 1)}
}

func (d *fakeDest) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *fakeDest) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			d.mu.Lock()
			d.stopped = true
			d.mu.Unlock()
			return nil
		case <-d.kick:
		}
		d.mu.Lock()
		if !d.up || len(d.queue) == 0 {
			d.mu.Unlock()
			continue
		}
		batch := d.queue
		d.queue = nil
		d.got = append(d.got, batch...)
		d.mu.Unlock()
		ps := make([]change.Position, len(batch))
		for i, m := range batch {
			ps[i] = m.Pos
		}
		d.ack(ps)
	}
}

func (d *fakeDest) Submit(m *change.Message, _ uint64, _ bool) error {
	d.mu.Lock()
	d.queue = append(d.queue, m)
	d.mu.Unlock()
	d.poke()
	return nil
}

func (d *fakeDest) Drain(ctx context.Context) error { return nil }

func (d *fakeDest) Ended(pglogrepl.LSN) {}

// setUp brings the destination up or takes it down.
func (d *fakeDest) setUp(up bool) {
	d.mu.Lock()
	d.up = up
	d.mu.Unlock()
	d.poke()
}

func (d *fakeDest) delivered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

// messages returns what the destination delivered, in order.
func (d *fakeDest) messages() []*change.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got)
}

// sinkStatus returns the named sink's status.
func sinkStatus(r *Relay, name string) (SinkStatus, bool) {
	for _, s := range r.Status().Sinks {
		if s.Name == name {
			return s, true
		}
	}
	return SinkStatus{}, false
}

// controlHarness runs a relay of a chanSource with fakeDest sinks.
type controlHarness struct {
	t     *testing.T
	src   *chanSource
	store state.Store
	relay *Relay
	dests map[string]*fakeDest
	next  int // the next transaction's LSN
	done  chan error
	stop  context.CancelFunc
}

func newControlHarness(t *testing.T, opts Options) *controlHarness {
	t.Helper()
	h := &controlHarness{t: t, src: &chanSource{events: make(chan []replication.Event)}, dests: map[string]*fakeDest{}, next: 0x100, done: make(chan error, 1)}
	h.store = openStore(t, filepath.Join(t.TempDir(), "state"))
	t.Cleanup(func() { h.store.Close() })
	if opts.PersistInterval == 0 {
		opts.PersistInterval = 5 * time.Millisecond
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = time.Second
	}
	h.relay = New(h.src, "slot", h.store, opts, slog.New(slog.DiscardHandler))
	return h
}

// sink builds a sink with a window of window messages, and a backlog
// when backlog is set.
func (h *controlHarness) sink(name string, up bool, window int, backlog bool) Sink {
	d := newFakeDest(name, up)
	d.ack = h.relay.Acker(name)
	h.dests[name] = d
	sc := config.Sink{Name: name}
	s := Sink{Name: name, Delivery: d, Filter: sink.NewFilter(sc, nil), Router: sink.NewRouter(sc),
		Window: config.Window{Messages: window, Bytes: 1 << 30}}
	if backlog {
		s.Backlog, s.WhenFull, s.BatchSize = h.store.Backlog(name), "block", 100
	}
	return s
}

func (h *controlHarness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	r, done, ended := h.relay, h.done, make(chan error, 1)
	go func() {
		err := r.Run(ctx)
		ended <- err
		done <- err
	}()
	h.t.Cleanup(func() {
		cancel()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			h.t.Error("Run did not return within 10 s of its context ending")
		}
	})
}

// restart ends the run and makes a new relay over the same store, whose
// stream has sent nothing yet; the caller adds its sinks and runs it.
func (h *controlHarness) restart() {
	h.t.Helper()
	h.stop()
	if err := <-h.done; err != nil {
		h.t.Fatal(err)
	}
	h.src = &chanSource{events: make(chan []replication.Event)}
	h.relay = New(h.src, "slot", h.store, Options{PersistInterval: 5 * time.Millisecond, ShutdownTimeout: time.Second}, slog.New(slog.DiscardHandler))
	h.done = make(chan error, 1)
}

// send streams n one-row transactions in the background, and returns a
// channel closed once the relay took them all.
func (h *controlHarness) send(n int) <-chan struct{} {
	var batches [][]replication.Event
	for range n {
		lsn := h.next
		h.next += 0x10
		batches = append(batches, []replication.Event{insert("t", pos(lsn, 0)), commit(lsn + 8)})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, b := range batches {
			h.src.events <- b
		}
	}()
	return done
}

// waitFull waits until the named sink's window holds n messages.
func (h *controlHarness) waitFull(name string, n int) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("sink %s's window to hold %d messages", name, n), func() bool {
		s, _ := sinkStatus(h.relay, name)
		return s.Window >= n
	})
}

// waitDelivered waits up to timeout until the named sink delivered n
// messages.
func (h *controlHarness) waitDelivered(name string, n int, timeout time.Duration) {
	h.t.Helper()
	d := h.dests[name]
	deadline := time.Now().Add(timeout)
	for d.delivered() < n {
		if time.Now().After(deadline) {
			s, _ := sinkStatus(h.relay, name)
			h.t.Fatalf("sink %s delivered %d messages in %s, want %d (window %d, spilling %v)", name, d.delivered(), timeout, n, s.Window, s.Spilling)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTwoBlockedSinksOneRecovers: two sinks down, both windows full; when
// one comes back, the other spills to its backlog within about a second
// and the one back gets everything.
func TestTwoBlockedSinksOneRecovers(t *testing.T) {
	h := newControlHarness(t, Options{})
	h.relay.Add(h.sink("a", false, 10, true))
	h.relay.Add(h.sink("b", false, 10, true))
	h.run()
	const n = 500
	sent := h.send(n)
	h.waitFull("a", 10)
	h.waitFull("b", 10)
	time.Sleep(3 * spillAfter / 2) // long enough behind for either to spill, were the other going on
	h.dests["b"].setUp(true)
	h.waitDelivered("b", n, 5*time.Second)
	<-sent
	if s, _ := sinkStatus(h.relay, "a"); !s.Spilling {
		t.Errorf("sink a is not spilling while b goes on")
	}
	h.dests["a"].setUp(true)
	h.waitDelivered("a", n, 10*time.Second)
}

// TestTwoPausedSinksOneResumed is TestTwoBlockedSinksOneRecovers with
// pause and resume.
func TestTwoPausedSinksOneResumed(t *testing.T) {
	h := newControlHarness(t, Options{})
	for _, name := range []string{"a", "b"} {
		s := h.sink(name, true, 10, true)
		p, err := sink.New(config.Sink{Name: name, BatchSize: 5, MaxInFlight: 2, Retry: config.Retry{Initial: time.Millisecond, Max: time.Millisecond}},
			destinationOf(h.dests[name]), sink.Options{Ack: h.relay.Acker(name)})
		if err != nil {
			t.Fatal(err)
		}
		s.Delivery = p
		h.relay.Add(s)
	}
	for _, name := range []string{"a", "b"} {
		if err := h.relay.Pause(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	h.run()
	const n = 500
	sent := h.send(n)
	h.waitFull("a", 10)
	h.waitFull("b", 10)
	time.Sleep(3 * spillAfter / 2)
	if err := h.relay.Resume(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	h.waitDelivered("b", n, 5*time.Second)
	<-sent
	if err := h.relay.Resume(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	h.waitDelivered("a", n, 10*time.Second)
}

// destinationOf is a sink.Destination that hands each batch to d's list
// of deliveries.
func destinationOf(d *fakeDest) sink.Destination {
	return destFunc(func(_ context.Context, b *sink.Batch) error {
		d.mu.Lock()
		d.got = append(d.got, b.Messages...)
		d.mu.Unlock()
		return nil
	})
}

type destFunc func(context.Context, *sink.Batch) error

func (f destFunc) Deliver(ctx context.Context, b *sink.Batch) error { return f(ctx, b) }

// TestAddAndRemoveWhileASinkHoldsTheStream: with one sink down and no
// backlog, holding the stream, another sink is added and the held one
// removed at once, without waiting for the stream; the removed one no
// longer counts as blocked, and the rest goes on.
func TestAddAndRemoveWhileASinkHoldsTheStream(t *testing.T) {
	h := newControlHarness(t, Options{})
	h.relay.Add(h.sink("held", false, 5, false))
	h.relay.Add(h.sink("other", true, 5, false))
	h.run()
	sent := h.send(100)
	h.waitFull("held", 5)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.relay.AddSink(ctx, h.sink("added", true, 5, false)); err != nil {
		t.Fatalf("AddSink while a sink holds the stream: %v", err)
	}
	if err := h.relay.RemoveSink(ctx, "held"); err != nil {
		t.Fatalf("RemoveSink of the sink that holds the stream: %v", err)
	}
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not go on once the held sink was removed")
	}
	h.waitDelivered("other", 100, 5*time.Second)
	waitFor(t, "no runner counted as blocked", func() bool { return h.relay.blocked.Load() == 0 })
}

// TestAddSinkBeforeStreaming: a sink added while the relay is not yet
// streaming (the source's setup waits) joins the sinks Run starts with.
func TestAddSinkBeforeStreaming(t *testing.T) {
	h := newControlHarness(t, Options{})
	gate := make(chan struct{})
	h.relay.src = &gatedSetup{chanSource: h.src, gate: gate}
	h.relay.Add(h.sink("first", true, 10, false))
	h.run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.relay.AddSink(ctx, h.sink("added", true, 10, false)); err != nil {
		t.Fatalf("AddSink before the relay streams: %v", err)
	}
	close(gate)
	<-h.send(10)
	h.waitDelivered("first", 10, 5*time.Second)
	h.waitDelivered("added", 10, 5*time.Second)
	select {
	case err := <-h.done:
		t.Fatalf("Run returned %v", err)
	default:
	}
}

// gatedSetup is a chanSource whose Setup waits until gate is closed.
type gatedSetup struct {
	*chanSource
	gate chan struct{}
}

func (s *gatedSetup) Setup(ctx context.Context, used bool) (pglogrepl.LSN, error) {
	select {
	case <-s.gate:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return s.chanSource.Setup(ctx, used)
}

// TestSinkAddedAgainDropsItsBacklog: a sink that spilled, was removed and
// is added again after a restart starts at the current position: the
// backlog it left is dropped, not delivered.
func TestSinkAddedAgainDropsItsBacklog(t *testing.T) {
	h := newControlHarness(t, Options{})
	h.relay.Add(h.sink("a", true, 5, true))
	h.relay.Add(h.sink("c", false, 2, true))
	h.run()
	<-h.send(20)
	h.waitDelivered("a", 20, 5*time.Second)
	waitFor(t, "sink c's backlog", func() bool { s, _ := sinkStatus(h.relay, "c"); return s.BacklogCount > 0 })
	ctx := context.Background()
	if err := h.relay.RemoveSink(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	h.restart() // its stream has sent nothing yet
	h.relay.Add(h.sink("a", true, 5, true))
	h.run()
	waitFor(t, "the relay to run", func() bool { return h.relay.Status().Running })
	if err := h.relay.AddSink(ctx, h.sink("c", true, 2, true)); err != nil {
		t.Fatal(err)
	}
	<-h.send(1) // 0/250
	h.waitDelivered("c", 1, 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	if got := h.dests["c"].delivered(); got != 1 {
		t.Fatalf("sink c added again delivered %d messages, want only the new one", got)
	}
}

// slowStop is a delivery engine that takes until its gate opens to stop,
// as a pipeline does while an attempt it abandons unwinds.
type slowStop struct {
	*fakeDest
	gate    chan struct{}
	stopped chan struct{}
}

func (d *slowStop) Run(ctx context.Context) error {
	err := d.fakeDest.Run(ctx)
	<-d.gate
	close(d.stopped)
	return err
}

// TestRemoveSinkWaitsForItsDelivery: RemoveSink returns only once the
// sink's delivery engine has stopped, so that a sink added again under
// the same name never sends beside what the removed one still has on its
// way (the receiver would get a row's older change after a newer one).
func TestRemoveSinkWaitsForItsDelivery(t *testing.T) {
	h := newControlHarness(t, Options{})
	h.relay.Add(h.sink("a", true, 5, false))
	c := h.sink("c", true, 5, false)
	slow := &slowStop{fakeDest: c.Delivery.(*fakeDest), gate: make(chan struct{}), stopped: make(chan struct{})}
	c.Delivery = slow
	h.relay.Add(c)
	h.run()
	<-h.send(3)
	h.waitDelivered("c", 3, 5*time.Second)

	removed := make(chan error, 1)
	go func() { removed <- h.relay.RemoveSink(context.Background(), "c") }()
	select {
	case err := <-removed:
		t.Fatalf("RemoveSink returned (%v) while the sink's delivery engine was still stopping", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(slow.gate)
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RemoveSink did not return after the delivery engine stopped")
	}
	select {
	case <-slow.stopped:
	default:
		t.Fatal("RemoveSink returned before the delivery engine's Run did")
	}
}

// TestSinkAddedAgainAfterRestartSkipsWhatItGot: after a restart the
// stream starts again at the slot's flush LSN, below what a sink removed
// before the restart had acknowledged. Added again, the sink starts at
// the current position or its kept cursor, whichever is higher: what it
// acknowledged does not come again, and the changes it missed while it
// was removed do not arrive after the newer ones it already got (a row's
// older change after a newer one; TestReloadUnderLoad saw it).
func TestSinkAddedAgainAfterRestartSkipsWhatItGot(t *testing.T) {
	h := newControlHarness(t, Options{})
	h.relay.Add(h.sink("a", false, 20, false)) // down: it holds the flush LSN back
	h.relay.Add(h.sink("c", true, 20, false))
	h.run()
	<-h.send(10) // 0/100 to 0/190
	h.waitDelivered("c", 10, 5*time.Second)
	ctx := context.Background()
	waitFor(t, "sink c's cursor saved at 0/190", func() bool {
		cs, err := h.store.Cursors(ctx)
		return err == nil && cs["c"].Acked == pos(0x190, 0)
	})
	if err := h.relay.RemoveSink(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	// A new run over the same store: the stream sends the same changes
	// again, since sink a never acknowledged them, then two new ones.
	h.restart()
	h.relay.Add(h.sink("a", true, 20, false))
	h.run()
	waitFor(t, "the relay to run", func() bool { return h.relay.Status().Running })
	if err := h.relay.AddSink(ctx, h.sink("c", true, 20, false)); err != nil {
		t.Fatal(err)
	}
	h.next = 0x100
	<-h.send(12) // 0/100 to 0/1B0
	h.waitDelivered("a", 12, 5*time.Second)
	h.waitDelivered("c", 2, 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	var got []change.Position
	for _, m := range h.dests["c"].messages() {
		got = append(got, m.Pos)
	}
	if want := []change.Position{pos(0x1a0, 0), pos(0x1b0, 0)}; !slices.Equal(got, want) {
		t.Fatalf("sink c added again after the restart delivered %v, want only what came after its kept cursor %v", got, want)
	}
}
