// Package relay wires one source to its sinks and owns the lifecycle:
// start, backpressure, reconnects and graceful shutdown.
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/cursor"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink"
	"golang.org/x/sync/errgroup"
)

// Sink is what the relay needs of a destination.
type Sink interface {
	Name() string
	// Run delivers until ctx ends.
	Run(ctx context.Context) error
	// Submit queues a message, blocking while the sink is full.
	Submit(ctx context.Context, m *change.Message) error
	// Drain delivers everything queued, or gives up when ctx ends.
	Drain(ctx context.Context) error
}

// Options tune a relay.
type Options struct {
	// ShutdownTimeout bounds how long in-flight deliveries may take to
	// drain after a stop; default 30s.
	ShutdownTimeout time.Duration
	// PersistInterval is how often moved cursors are written; default
	// 100ms.
	PersistInterval time.Duration
	// EventBuffer is how many events may wait between the stream and the
	// sinks; default 1024.
	EventBuffer int
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
	Run(ctx context.Context, stop <-chan struct{}, flushed func() pglogrepl.LSN, out chan<- replication.Event) error
}

// Relay streams one source to its sinks.
type Relay struct {
	src   Source
	slot  string
	store *cursor.Store
	sinks []*target
	opts  Options
	log   *slog.Logger

	cursors *cursor.Set
}

// target is a sink with what the relay tracks of it.
type target struct {
	name       string
	sink       Sink
	filter     *sink.Filter
	window     config.Window
	tracker    *cursor.Tracker
	dispatched change.Position // the last position handed to the sink (or delivered before a restart)

	filterErrors int       // filter evaluation errors since the last report
	reported     time.Time // when filter errors were last logged
}

// New returns a relay of src, the source of the named slot, whose cursors
// live in store. Add its sinks before Run.
func New(src Source, slot string, store *cursor.Store, opts Options, log *slog.Logger) *Relay {
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.PersistInterval <= 0 {
		opts.PersistInterval = 100 * time.Millisecond
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 1024
	}
	return &Relay{src: src, slot: slot, store: store, opts: opts, log: log}
}

// Acker returns the function the named sink calls for each message it
// delivered. Build the sink with it, then Add the sink under the same name.
func (r *Relay) Acker(name string) func(change.Position) {
	t := r.target(name)
	return func(pos change.Position) {
		if !t.tracker.Ack(pos) {
			r.log.Error("acknowledgement of a position that is not in flight; ignored", "sink", name, "position", pos.String())
		}
	}
}

// Add adds a sink, the filter of the messages it wants, and the bounds of
// what it may hold undelivered.
func (r *Relay) Add(s Sink, f *sink.Filter, w config.Window) {
	t := r.target(s.Name())
	t.sink, t.filter, t.window = s, f, w
}

func (r *Relay) target(name string) *target {
	for _, t := range r.sinks {
		if t.name == name {
			return t
		}
	}
	t := &target{name: name}
	r.sinks = append(r.sinks, t)
	return t
}

// Run relays until ctx ends, then shuts down gracefully: it stops reading,
// drains in-flight deliveries for up to the shutdown timeout, persists the
// cursors and sends a final standby status. It returns nil after a
// graceful shutdown, or the error that stopped it.
func (r *Relay) Run(ctx context.Context) error {
	start, err := r.setup(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	names := make([]string, len(r.sinks))
	for i, t := range r.sinks {
		if t.sink == nil {
			return fmt.Errorf("sink %q has an acker but was never added", t.name)
		}
		names[i] = t.name
	}
	r.cursors, err = cursor.NewSet(r.store, names, start)
	if err != nil {
		return err
	}
	for _, t := range r.sinks {
		t.tracker = r.cursors.Tracker(t.name)
		t.dispatched = r.cursors.Loaded(t.name)
	}

	// Three lifetimes: reading stops first (stop), then the sinks drain,
	// then the stream connection closes (streamCtx) and the sinks stop
	// (sinkCtx).
	stop := make(chan struct{})
	streamCtx, cancelStream := context.WithCancel(context.Background())
	defer cancelStream()
	sinkCtx, cancelSinks := context.WithCancel(context.Background())
	defer cancelSinks()

	events := make(chan replication.Event, r.opts.EventBuffer)
	var sinks errgroup.Group
	for _, t := range r.sinks {
		sinks.Go(func() error { return t.sink.Run(sinkCtx) })
	}

	fatal := make(chan error, 2)
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
		r.log.Info("stopping: no more reading; draining in-flight deliveries", "timeout", r.opts.ShutdownTimeout.String())
	case runErr = <-fatal:
	}

	// The shutdown timeout bounds the whole shutdown: the drain gets it
	// less a reserve for persisting the cursors and the final status.
	deadline := time.Now().Add(r.opts.ShutdownTimeout)
	reserve := min(r.opts.ShutdownTimeout/10, replication.FinalStatusTimeout)
	close(stop)
	cancelDispatch()
	<-dispatchDone
	drainCtx, cancelDrain := context.WithDeadline(context.Background(), deadline.Add(-reserve))
	for _, t := range r.sinks {
		if err := t.sink.Drain(drainCtx); err != nil {
			r.log.Warn("sink not drained before the shutdown timeout; its undelivered messages are sent again after a restart", "sink", t.sink.Name(), "err", err)
		}
	}
	cancelDrain()
	cancelPersist()
	<-persistDone
	if err := r.cursors.Persist(); err != nil && runErr == nil {
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
	used, err := r.store.Slot()
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
		if err := r.store.SetSlot(r.slot); err != nil {
			return 0, fmt.Errorf("write state: %w", err)
		}
	}
	return start, nil
}

// dispatch hands events to the sinks in stream order. A message is added
// to a sink's tracker before the sink may acknowledge it; commits and idle
// positions become marks. Messages at or below what a sink already has are
// skipped: they were delivered before a restart, or are in flight from
// before a reconnect.
func (r *Relay) dispatch(ctx context.Context, events <-chan replication.Event) {
	for {
		var ev replication.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-events:
		}
		switch ev.Kind {
		case replication.EventChange:
			m := ev.Msg
			for _, t := range r.sinks {
				if !t.dispatched.Less(m.Pos) || !r.match(t, m) {
					continue
				}
				// The window bounds what a restart would deliver again, and
				// the memory of a sink whose oldest batch keeps failing
				// while later ones are acknowledged.
				if err := t.tracker.Wait(ctx, t.window.Messages, t.window.Bytes); err != nil {
					return // stopping
				}
				t.tracker.Add(m.Pos, m.Size())
				t.dispatched = m.Pos
				if err := t.sink.Submit(ctx, m); err != nil {
					return // stopping; the message stays unacknowledged
				}
			}
		case replication.EventCommit, replication.EventIdle:
			for _, t := range r.sinks {
				t.tracker.Mark(ev.LSN)
			}
		}
	}
}

// match applies t's filter to m. A filter that fails on a message does not
// match it; failures are logged at most every 10 s per sink, with the
// latest error and how many there were, so a filter that fails on every
// message cannot flood the log.
func (r *Relay) match(t *target, m *change.Message) bool {
	ok, err := t.filter.Match(m)
	if err != nil {
		t.filterErrors++
		if now := time.Now(); now.Sub(t.reported) >= 10*time.Second {
			r.log.Warn("filter failed on a message; it is not delivered to this sink", "sink", t.name,
				"position", m.Pos.String(), "err", err, "failures", t.filterErrors)
			t.filterErrors, t.reported = 0, now
		}
	}
	return ok
}

func (r *Relay) persistLoop(ctx context.Context) error {
	t := time.NewTicker(r.opts.PersistInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.cursors.Persist(); err != nil {
				return err
			}
		}
	}
}
