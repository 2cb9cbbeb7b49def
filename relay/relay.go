// Package relay wires one source to its sinks and owns the lifecycle:
// start, backpressure, reconnects and graceful shutdown.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/cursor"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
	"golang.org/x/sync/errgroup"
)

// Options tune a relay.
type Options struct {
	// ShutdownTimeout bounds how long in-flight deliveries may take to
	// drain after a stop; default 30s.
	ShutdownTimeout time.Duration
	// PersistInterval is how often moved cursors are written; default
	// 100ms.
	PersistInterval time.Duration
	// EventBuffer is how many batches of events may wait between the
	// stream and the dispatcher; default 16.
	EventBuffer int
	// KeepRemoved is how long the cursor and backlog of a sink gone from
	// the configuration stay in the store; default 24h.
	KeepRemoved time.Duration
	// SourceColumns is source.columns, applied to every message before
	// any sink sees it; nil keeps every column.
	SourceColumns *sink.Columns
	// Budget, when set, is the source's byte budget: every runner takes
	// each message from it, so what waits between the stream and the
	// sinks is bounded in bytes, not only in events.
	Budget *replication.Budget
	// OnPause, when set, is told on the sink's runner goroutine each time
	// a sink is paused or resumed (after the pause is stored or deleted):
	// where operational events (sink.paused, sink.resumed) hook in. It
	// must not block.
	OnPause func(PauseNotice)
}

// Source is what the relay needs of the database: replication.Source, or a
// fake in tests. It owns its fault policy (reconnects, waiting for a slot
// held elsewhere).
type Source interface {
	// Setup makes the source ready and returns the LSN from which it will
	// stream. usedBefore says the state already belongs to the slot.
	Setup(ctx context.Context, usedBefore bool) (pglogrepl.LSN, error)
	// Run sends events to out, in order, until ctx ends; flushed gives the
	// LSN safe to confirm. After stop it reads no more but keeps the
	// connection until ctx ends. It returns nil when ctx ends, or the
	// error that stopped it.
	Run(ctx context.Context, stop <-chan struct{}, flushed func() pglogrepl.LSN, out chan<- []replication.Event) error
}

// Relay streams one source to its sinks.
type Relay struct {
	src     Source
	slot    string
	store   state.Store
	runners []*runner
	opts    Options
	log     *slog.Logger

	// ctlMu orders the control operations that change the set of sinks
	// (AddSink, RemoveSink, UpdateSink before streaming) with Run's start,
	// which holds it from taking the sinks until they run.
	ctlMu sync.Mutex

	mu       sync.Mutex
	cursors  *cursor.Set // set by Run; see cursorSet
	running  atomic.Bool
	received atomic.Uint64      // change messages the stream handed on
	blocked  atomic.Int32       // runners that cannot take their inbox now
	total    atomic.Int32       // runners running
	wake     wakeup             // poked when blocked or total changes
	started  bool               // Run took the sinks; later ones join through AddSink
	pending  map[string]*runner // made by Acker once started, not yet added
	// dispatchList is the runners the dispatcher hands the stream to; it
	// is replaced, never changed in place, so the dispatcher reads it
	// under mu once a batch. lastDispatched is the last position handed
	// to it: a sink added later starts there.
	dispatchList   []*runner
	lastDispatched change.Position
	live           *liveRun      // what sinks added while running need; set by Run
	kill           chan struct{} // closed by Kill; see killCh
	killOnce       sync.Once

	chunks chunks // backfill chunks; see backfill.go
}

// ErrKilled is what Run returns after Kill.
var ErrKilled = errors.New("relay stopped hard")

// Kill stops a running relay at once, without draining, persisting its
// cursors or sending a final status: for an instance that lost its right
// to deliver (a standby took over). Run then returns ErrKilled. Kill may
// be called more than once, also before Run.
func (r *Relay) Kill() {
	r.killOnce.Do(func() { close(r.killCh()) })
}

func (r *Relay) killed() <-chan struct{} { return r.killCh() }

func (r *Relay) isKilled() bool {
	select {
	case <-r.killed():
		return true
	default:
		return false
	}
}

func (r *Relay) killCh() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kill == nil {
		r.kill = make(chan struct{})
	}
	return r.kill
}

// cursorSet is the sinks' cursors; nil before Run set them up.
func (r *Relay) cursorSet() *cursor.Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cursors
}

// New returns a relay of src, the source of the named slot, whose cursors
// live in store. Add its sinks before Run.
func New(src Source, slot string, store state.Store, opts Options, log *slog.Logger) *Relay {
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.PersistInterval <= 0 {
		opts.PersistInterval = 100 * time.Millisecond
	}
	if opts.KeepRemoved <= 0 {
		opts.KeepRemoved = 24 * time.Hour
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 16
	}
	return &Relay{src: src, slot: slot, store: store, opts: opts, log: log}
}

// Acker returns the function the named sink's delivery engine calls with
// the positions of each batch it delivered. Build the engine with it, then
// Add the sink under the same name.
func (r *Relay) Acker(name string) func([]change.Position) {
	rn := r.runner(name)
	return func(ps []change.Position) {
		if n := rn.tracker.AckAll(ps); n > 0 {
			r.log.Error("acknowledgement of positions that are not in flight; ignored", "sink", name, "positions", n, "first", ps[0].String())
		}
	}
}

// Add adds a sink.
func (r *Relay) Add(s Sink) {
	rn := r.runner(s.Name)
	inbox := rn.inbox
	rn.Sink, rn.inbox = s, inbox
}

// runner returns the named runner, making it if there is none: among the
// runners before Run started, or after, among those waiting for AddSink.
func (r *Relay) runner(name string) *runner {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rn := range r.runners {
		if rn.Name == name {
			return rn
		}
	}
	if rn, ok := r.pending[name]; ok {
		return rn
	}
	rn := newRunner(Sink{Name: name}, r.log)
	if !r.started {
		r.runners = append(r.runners, rn)
	} else {
		if r.pending == nil {
			r.pending = map[string]*runner{}
		}
		r.pending[name] = rn
	}
	return rn
}

// Run relays until ctx ends, then shuts down gracefully: it stops reading,
// drains in-flight deliveries for up to the shutdown timeout, persists the
// cursors and sends a final standby status. It returns nil after a
// graceful shutdown, or the error that stopped it.
func (r *Relay) Run(ctx context.Context) error {
	// A Kill also ends the setup, which may wait long (for a slot another
	// process streams from).
	setupCtx, endSetup := context.WithCancel(ctx)
	go func() {
		select {
		case <-r.killed():
			endSetup()
		case <-setupCtx.Done():
		}
	}()
	start, err := r.setup(setupCtx)
	endSetup()
	if r.isKilled() {
		return ErrKilled
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// From here until the sinks run, sinks are added and removed by
	// AddSink and RemoveSink, after the start.
	unlockCtl := sync.OnceFunc(r.ctlMu.Unlock)
	r.ctlMu.Lock()
	defer unlockCtl()
	r.mu.Lock()
	r.started = true
	// A runner made by an Acker whose sink is not added yet waits for
	// AddSink like one made after the start.
	for _, rn := range r.runners {
		if rn.Delivery == nil {
			if r.pending == nil {
				r.pending = map[string]*runner{}
			}
			r.pending[rn.Name] = rn
		}
	}
	r.runners = slices.DeleteFunc(r.runners, func(rn *runner) bool { return rn.Delivery == nil })
	r.mu.Unlock()
	names := make([]string, len(r.runners))
	for i, rn := range r.runners {
		names[i] = rn.Name
	}
	cursors, err := cursor.NewSet(ctx, r.store, names, start)
	if err != nil {
		return err
	}
	for _, rn := range r.runners {
		rn.tracker = cursors.Tracker(rn.Name)
		if rn.Transactions {
			rn.tracker.WholeTransactions()
		}
		rn.cursors = cursors
		rn.dispatched = cursors.Loaded(rn.Name)
		rn.resumeFrom = start
		r.join(rn)
		if err := rn.start(ctx); err != nil {
			return err
		}
	}

	r.total.Store(int32(len(r.runners)))
	r.mu.Lock()
	r.cursors = cursors
	r.mu.Unlock()
	if err := r.retire(ctx); err != nil {
		return err
	}
	r.running.Store(true)
	defer r.running.Store(false)

	// Three lifetimes: reading stops first (stop, then the dispatcher and
	// the runners), then the sinks drain, then the stream connection
	// closes (streamCtx) and the sinks stop (sinkCtx).
	stop := make(chan struct{})
	streamCtx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	sinkCtx, cancelSinks := context.WithCancel(context.Background())
	defer cancelSinks()

	events := make(chan []replication.Event, r.opts.EventBuffer)
	var sinks errgroup.Group
	fatal := make(chan error, 16)
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		if err := r.src.Run(streamCtx, stop, r.cursors.Flush, events); err != nil {
			fatal <- err
		}
	}()
	dispatchDone := make(chan struct{})
	dispatchCtx, cancelDispatch := context.WithCancel(context.Background())
	defer cancelDispatch()
	var runners errgroup.Group
	live := &liveRun{sinkCtx: sinkCtx, dispatchCtx: dispatchCtx, fatal: fatal, sinks: &sinks, runners: &runners, cursors: cursors}
	for _, rn := range r.runners {
		live.launch(rn)
	}
	r.mu.Lock()
	r.live = live
	r.dispatchList = slices.Clone(r.runners)
	r.mu.Unlock()
	unlockCtl()
	go func() {
		defer close(dispatchDone)
		r.dispatch(dispatchCtx, events)
	}()
	persistDone := make(chan struct{})
	persistCtx, cancelPersist := context.WithCancel(context.Background())
	defer cancelPersist()
	go func() {
		defer close(persistDone)
		if err := r.persistLoop(persistCtx); err != nil {
			fatal <- err
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-fatal:
	case <-r.killed():
	}
	if r.isKilled() {
		// A Kill wins over whatever else ended the run at the same time.
		// A hard stop: deliver nothing more, write nothing more; what is in
		// flight is abandoned, to be delivered again by whoever resumes
		// from the saved cursor.
		r.log.Warn("hard stop: delivery stops at once; undelivered messages stay for the next run")
		close(stop)
		cancelSinks()
		cancelDispatch()
		cancelPersist()
		cancelStream()
		<-dispatchDone
		_ = runners.Wait()
		<-persistDone
		<-streamDone
		_ = sinks.Wait()
		return ErrKilled
	}
	if runErr == nil {
		r.log.Info("stopping: no more reading; draining in-flight deliveries", "timeout", r.opts.ShutdownTimeout.String())
	}

	// The shutdown timeout bounds the whole shutdown: the drain gets it
	// less a reserve for persisting the cursors and the final status.
	deadline := time.Now().Add(r.opts.ShutdownTimeout)
	reserve := min(r.opts.ShutdownTimeout/10, replication.FinalStatusTimeout)
	close(stop)
	cancelDispatch()
	<-dispatchDone
	_ = runners.Wait()
	drainCtx, cancelDrain := context.WithDeadline(context.Background(), deadline.Add(-reserve))
	// A Kill during the drain (the lease was lost meanwhile) ends it: what
	// is in flight can no longer be delivered by this instance.
	go func() {
		select {
		case <-r.killed():
			cancelDrain()
		case <-drainCtx.Done():
		}
	}()
	var drains sync.WaitGroup
	for _, rn := range r.runnerList() {
		drains.Go(func() {
			if err := rn.Delivery.Drain(drainCtx); err != nil {
				r.log.Warn("sink not drained before the shutdown timeout; its undelivered messages are sent again after a restart", "sink", rn.Name, "err", err)
			}
		})
	}
	drains.Wait()
	cancelDrain()
	cancelPersist()
	<-persistDone
	if err := r.cursors.Persist(context.Background()); err != nil && runErr == nil {
		runErr = err
	}
	cancelStream()
	<-streamDone
	cancelSinks()
	_ = sinks.Wait()
	for _, st := range r.cursors.Status() {
		r.log.Info("cursor", "sink", st.Sink, "position", st.Acked.String(), "flush_lsn", st.Safe.String(), "undelivered", st.Pending)
	}
	return runErr
}

// setup checks that the state belongs to the configured slot, then sets
// the source up.
func (r *Relay) setup(ctx context.Context) (pglogrepl.LSN, error) {
	used, err := r.store.Slot(ctx)
	if err != nil {
		return 0, fmt.Errorf("read state: %w", err)
	}
	if used != "" && used != r.slot {
		return 0, fmt.Errorf("the state file belongs to slot %q, but source.slot is %q: use that slot, or another state.path for a new one", used, r.slot)
	}
	start, err := r.src.Setup(ctx, used != "")
	if err != nil {
		return 0, err
	}
	if used == "" {
		if err := r.store.SetSlot(ctx, r.slot); err != nil {
			return 0, fmt.Errorf("write state: %w", err)
		}
	}
	return start, nil
}

// dispatch hands every event to every runner, in stream order, in the
// batches the source sends. A runner whose inbox is full holds the stream
// back for all of them.
func (r *Relay) dispatch(ctx context.Context, events <-chan []replication.Event) {
	for {
		var batch []replication.Event
		select {
		case <-ctx.Done():
			return
		case batch = <-events:
		}
		// A watermark splits a batch: what came before it reaches the
		// runners before the backfill's chunk does (see watermark).
		for len(batch) > 0 {
			i := slices.IndexFunc(batch, func(ev replication.Event) bool { return ev.Kind == replication.EventWatermark })
			if i < 0 {
				i = len(batch)
			}
			if i > 0 && !r.fanOut(ctx, batch[:i:i]) {
				return
			}
			if i < len(batch) {
				r.watermark(ctx, batch[i].Msg)
				i++
			}
			batch = batch[i:]
		}
	}
}

// fanOut hands batch to every runner; they share it and only read it. It
// reports false if ctx ended first. batch holds no watermark.
func (r *Relay) fanOut(ctx context.Context, batch []replication.Event) bool {
	var last change.Position
	for i, ev := range batch {
		if ev.Kind == replication.EventChange {
			r.received.Add(1)
			r.observe(ev.Msg)
			batch[i].Msg = r.opts.SourceColumns.Apply(ev.Msg)
			last = ev.Msg.Pos
		}
	}
	// A sink added from here on starts after this batch; one removed
	// while the batch goes out is skipped.
	r.mu.Lock()
	list := r.dispatchList
	if last != (change.Position{}) {
		r.lastDispatched = last
	}
	r.mu.Unlock()
	for _, rn := range list {
		select {
		case rn.inbox <- batch:
		case <-rn.exited:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (r *Relay) persistLoop(ctx context.Context) error {
	t := time.NewTicker(r.opts.PersistInterval)
	defer t.Stop()
	retire := time.NewTicker(retireInterval(r.opts.KeepRemoved))
	defer retire.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.cursors.Persist(context.Background()); err != nil {
				return err
			}
		case <-retire.C:
			if err := r.retire(ctx); err != nil {
				return err
			}
		}
	}
}
