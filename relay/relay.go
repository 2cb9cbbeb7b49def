// Package relay wires one source to its sinks and owns the lifecycle:
// start, backpressure, reconnects and graceful shutdown.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
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
	// Preflight, when set, runs once the source is set up, before
	// streaming: checks that need the database (a group_by the replica
	// identity cannot support). It is retried like the setup while
	// PostgreSQL cannot be reached; any other error ends Run.
	Preflight func(ctx context.Context) error
}

// Relay streams one source to its sinks.
type Relay struct {
	src   config.Source
	store *cursor.Store
	sinks []*target
	opts  Options
	log   *slog.Logger

	source  *sink.Columns // source.columns, applied before every sink's
	cursors *cursor.Set
	stream  *replication.Stream
}

// target is a sink with what the relay tracks of it.
type target struct {
	name       string
	sink       Sink
	filter     *sink.Filter
	columns    *sink.Columns
	window     config.Window
	tracker    *cursor.Tracker
	dispatched change.Position // the last position handed to the sink (or delivered before a restart)

	filterErrors int       // filter evaluation errors since the last report
	reported     time.Time // when filter errors were last logged
}

// New returns a relay of src whose cursors live in store. Add its sinks
// before Run.
func New(src config.Source, store *cursor.Store, opts Options, log *slog.Logger) *Relay {
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.PersistInterval <= 0 {
		opts.PersistInterval = 100 * time.Millisecond
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 1024
	}
	return &Relay{src: src, source: sink.NewColumns(src.Columns), store: store, opts: opts, log: log}
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

// Add adds a sink, the filter of the messages it wants, the columns it
// leaves out of them (nil: none), and the bounds of what it may hold
// undelivered.
func (r *Relay) Add(s Sink, f *sink.Filter, c *sink.Columns, w config.Window) {
	t := r.target(s.Name())
	t.sink, t.filter, t.columns, t.window = s, f, c, w
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
	slot, err := r.setup(ctx)
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
	r.cursors, err = cursor.NewSet(r.store, names, slot.ConfirmedFlush)
	if err != nil {
		return err
	}
	for _, t := range r.sinks {
		t.tracker = r.cursors.Tracker(t.name)
		t.dispatched = r.cursors.Loaded(t.name)
	}
	r.stream = replication.New(r.src, r.cursors.Flush, r.log)

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
		if err := r.streamLoop(streamCtx, stop, events); err != nil {
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

// setup checks the source and makes the slot, retrying while PostgreSQL
// cannot be reached.
func (r *Relay) setup(ctx context.Context) (replication.SlotInfo, error) {
	used, err := r.store.Slot()
	if err != nil {
		return replication.SlotInfo{}, fmt.Errorf("read state: %w", err)
	}
	if used != "" && used != r.src.Slot {
		return replication.SlotInfo{}, fmt.Errorf("the state file belongs to slot %q, but source.slot is %q: use that slot, or another state.path for a new one", used, r.src.Slot)
	}
	var info replication.SlotInfo
	err = r.retryConn(ctx, "set up the source", func() error {
		var err error
		info, err = replication.Setup(ctx, r.src, used != "", r.log)
		if err == nil && r.opts.Preflight != nil {
			err = r.opts.Preflight(ctx)
		}
		return err
	})
	if err != nil {
		return info, err
	}
	if used == "" {
		if err := r.store.SetSlot(r.src.Slot); err != nil {
			return info, fmt.Errorf("write state: %w", err)
		}
	}
	return info, nil
}

// retryConn calls fn until it succeeds, retrying with backoff while the
// error says the connection failed.
func (r *Relay) retryConn(ctx context.Context, what string, fn func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 500*time.Millisecond, 30*time.Second, 0
	for {
		err := fn()
		if err == nil || !replication.IsConnLost(err) || ctx.Err() != nil {
			return err
		}
		wait := b.NextBackOff()
		r.log.Warn("cannot reach PostgreSQL; retrying", "action", what, "err", err, "retry_in", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// maxSlotWait bounds the wait between two tries at a slot another process
// holds: a standby takes over within this long after the holder is gone.
const maxSlotWait = 5 * time.Second

// streamLoop runs the stream, reconnecting after a lost connection and
// waiting while another process holds the slot.
func (r *Relay) streamLoop(ctx context.Context, stop <-chan struct{}, events chan<- replication.Event) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 500*time.Millisecond, 30*time.Second, 0
	held := backoff.NewExponentialBackOff()
	held.InitialInterval, held.MaxInterval, held.MaxElapsedTime = 500*time.Millisecond, maxSlotWait, 0
	holder := 0 // the PID last seen holding the slot
	for first := true; ; first = false {
		if !first {
			_, err := replication.Setup(ctx, r.src, true, r.log)
			if err != nil && !replication.IsConnLost(err) {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if err != nil {
				if !r.wait(ctx, stop, b.NextBackOff(), "cannot reach PostgreSQL; retrying", err) {
					return nil
				}
				continue
			}
		}
		started := time.Now()
		err := r.stream.Run(ctx, stop, events)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			b.Reset()
			held.Reset()
		}
		var active *replication.ErrSlotActive
		switch {
		case errors.As(err, &active):
			// Warn when a holder appears; while it stays, say so at info.
			level := slog.LevelInfo
			if active.PID != holder {
				level, holder = slog.LevelWarn, active.PID
			}
			d := held.NextBackOff()
			r.log.Log(ctx, level, "replication slot is in use by another process; waiting", "slot", r.src.Slot, "pid", active.PID, "retry_in", d.Round(time.Millisecond).String())
			if !r.sleep(ctx, stop, d) {
				return nil
			}
		case replication.IsConnLost(err):
			if !r.wait(ctx, stop, b.NextBackOff(), "replication connection lost; reconnecting", err) {
				return nil
			}
		default:
			return err
		}
	}
}

// wait logs why it waits, then sleeps.
func (r *Relay) wait(ctx context.Context, stop <-chan struct{}, d time.Duration, msg string, err error) bool {
	r.log.Warn(msg, "err", err, "retry_in", d.Round(time.Millisecond).String())
	return r.sleep(ctx, stop, d)
}

// sleep waits d and reports true, or false once ctx ends; after stop it
// waits for ctx only, since a stopping relay does not reconnect.
func (r *Relay) sleep(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		<-ctx.Done() // hold nothing open: the connection is gone; wait to be ended
		return false
	case <-t.C:
		return true
	}
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
			m := r.source.Apply(ev.Msg)
			for _, t := range r.sinks {
				if !t.dispatched.Less(m.Pos) || !r.match(t, m) {
					continue
				}
				m := t.columns.Apply(m) // after the filter, which may read what the sink does not get
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
