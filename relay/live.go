package relay

import (
	"context"
	"fmt"
	"slices"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/cursor"
	"golang.org/x/sync/errgroup"
)

// liveRun is what Run shares with sinks added while it runs.
type liveRun struct {
	sinkCtx, dispatchCtx context.Context
	fatal                chan error
	sinks, runners       *errgroup.Group
	cursors              *cursor.Set
}

// runnerList is a copy of the runners, for readers outside the dispatcher.
func (r *Relay) runnerList() []*runner {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.runners)
}

// launch starts rn's delivery engine and its runner under the run.
func (live *liveRun) launch(rn *runner) {
	pctx, stopDelivery := context.WithCancel(live.sinkCtx)
	rn.stopDelivery = stopDelivery
	delivered := make(chan struct{})
	rn.delivered = delivered
	live.sinks.Go(func() error {
		defer close(delivered)
		return rn.Delivery.Run(pctx)
	})
	rctx, stopRun := context.WithCancel(live.dispatchCtx)
	rn.stopRun = stopRun
	live.runners.Go(func() error {
		if err := rn.run(rctx); err != nil {
			select {
			case live.fatal <- err:
			default: // the run already stops for another error
			}
		}
		return nil
	})
}

// join gives rn what it shares with the other runners.
func (r *Relay) join(rn *runner) {
	rn.blocked, rn.total, rn.wake = &r.blocked, &r.total, &r.wake
	rn.deadLetters = r.store.DeadLetters(rn.Name)
	rn.pauses, rn.onPause = r.store, r.opts.OnPause
	rn.hookPause()
	if r.opts.Budget != nil {
		rn.taker = r.opts.Budget.Taker()
	}
}

// AddSink adds a sink. Before Run started, the sink starts with the others.
// While the relay runs, it starts at the current position: it gets what
// the stream sends from now on, not what it sent before, and its cursor
// starts there; never below the cursor a sink of its name left (see
// keptCursor). The sink's delivery engine must be built with the relay's
// Acker and DeadLetterer for its name. It never waits for the stream.
func (r *Relay) AddSink(ctx context.Context, s Sink) error {
	r.ctlMu.Lock()
	defer r.ctlMu.Unlock()
	if rn := r.runnerNamed(s.Name); rn != nil && rn.Delivery != nil {
		return fmt.Errorf("sink %q already exists", s.Name)
	}
	rn := r.runner(s.Name) // the Acker built with the engine refers to this runner
	kept, err := r.keptCursor(ctx, s.Name)
	if err != nil {
		return fmt.Errorf("sink %q not added: %w", s.Name, err)
	}
	r.mu.Lock()
	started, live := r.started, r.live
	if !started {
		rn.Sink = s // Run starts it with the others
		r.mu.Unlock()
		return nil
	}
	if live == nil || live.dispatchCtx.Err() != nil {
		delete(r.pending, s.Name)
		r.mu.Unlock()
		return fmt.Errorf("sink %q not added: walhook is stopping", s.Name)
	}
	from := r.lastDispatched
	r.mu.Unlock()
	rn.Sink = s
	rn.cursors = live.cursors
	rn.dispatched = from
	if rn.Backlog != nil && rn.Backlog.Stats().Count > 0 {
		// A sink added again starts at the current position: what its
		// backlog kept from before is past, whatever the current position
		// (after a restart it may lie below what the backlog holds).
		st := rn.Backlog.Stats()
		if err := rn.Backlog.Trim(ctx, st.Last); err != nil {
			r.mu.Lock()
			delete(r.pending, s.Name)
			r.mu.Unlock()
			return fmt.Errorf("sink %q: drop the backlog it left: %w", s.Name, err)
		}
		r.log.Warn("sink added again: the backlog it left is dropped, it starts at the current position", "sink", s.Name, "messages", st.Count)
	}
	rn.pauses = r.store
	if err := rn.start(ctx); err != nil { // store I/O: before it joins the stream
		r.mu.Lock()
		delete(r.pending, s.Name)
		r.mu.Unlock()
		return err
	}
	r.join(rn)
	r.mu.Lock()
	at := r.lastDispatched // the stream went on meanwhile: the sink starts here
	rn.tracker = live.cursors.Add(s.Name, at)
	if rn.Transactions {
		rn.tracker.WholeTransactions()
	}
	if rn.dispatched.Less(at) {
		rn.dispatched = at
	}
	if rn.dispatched.Less(kept) {
		rn.dispatched = kept // taken by the sink's earlier life: skipped, not tracked
	}
	if rn.mode == modeLive {
		rn.feedPos = rn.dispatched
	}
	delete(r.pending, s.Name)
	r.runners = append(r.runners, rn)
	r.dispatchList = append(slices.Clone(r.dispatchList), rn)
	r.mu.Unlock()
	r.total.Add(1)
	r.wake.poke()
	live.launch(rn)
	if at.Less(kept) {
		r.log.Info("sink added; it starts at the current position, after what its earlier cursor acknowledged",
			"sink", s.Name, "position", at.String(), "cursor", kept.String())
		return nil
	}
	r.log.Info("sink added; it starts at the current position", "sink", s.Name, "position", at.String())
	return nil
}

// keptCursor is what the stored cursor of a sink named name acknowledged
// (zero if there is none): a sink removed earlier leaves it. After a
// restart the stream starts again at the slot's flush LSN, which other
// sinks may hold below it; a sink added again skips up to it, so that
// what it acknowledged does not come again and the changes it missed
// while it was removed do not arrive after newer ones it already got.
func (r *Relay) keptCursor(ctx context.Context, name string) (change.Position, error) {
	cursors, err := r.store.Cursors(ctx)
	if err != nil {
		return change.Position{}, fmt.Errorf("read its kept cursor: %w", err)
	}
	return cursors[name].Acked, nil
}

// RemoveSink stops a sink: it gets nothing more, what it has in flight is
// abandoned, and it no longer holds the slot. It returns once the sink's
// delivery engine has stopped, so that nothing it sends can follow what a
// sink added again under its name sends (a request cut off mid-flight may
// still have reached the receiver; its answer is never waited for). Its
// cursor and backlog stay in the state store for Options.KeepRemoved, its
// dead letters until dropped. It never waits for the stream: the
// dispatcher skips a runner that stopped.
func (r *Relay) RemoveSink(ctx context.Context, name string) error {
	r.ctlMu.Lock()
	defer r.ctlMu.Unlock()
	rn := r.runnerNamed(name)
	if rn == nil {
		return fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	r.mu.Lock()
	started := r.started
	r.runners = slices.DeleteFunc(slices.Clone(r.runners), func(x *runner) bool { return x == rn })
	r.dispatchList = slices.DeleteFunc(slices.Clone(r.dispatchList), func(x *runner) bool { return x == rn })
	cursors := r.cursors
	r.mu.Unlock()
	// A removed sink is not paused: one added again under its name starts
	// unpaused.
	if err := r.store.DeletePause(ctx, name); err != nil {
		return fmt.Errorf("sink %q: %w", name, err)
	}
	if !started {
		return nil // Run never starts it; its stored cursor is marked removed when Run starts
	}
	if rn.stopRun != nil {
		rn.stopRun()
		select {
		case <-rn.exited: // it no longer counts as blocked
		case <-ctx.Done():
			return ctx.Err()
		}
		r.total.Add(-1)
		r.wake.poke()
	}
	if rn.stopDelivery != nil {
		rn.stopDelivery()
		select {
		case <-rn.delivered:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r.opts.Budget != nil && rn.taker != nil {
		r.opts.Budget.Remove(rn.taker)
	}
	if cursors == nil {
		return nil
	}
	cursors.Remove(name)
	return r.retire(ctx) // marks its stored cursor removed
}

// UpdateSink changes a running sink's settings: f runs on the sink's own
// goroutine between two batches and may replace its Filter, Columns,
// Window and backlog bounds (not its Delivery, Router or Backlog).
func (r *Relay) UpdateSink(ctx context.Context, name string, f func(*Sink)) error {
	rn := r.runnerNamed(name)
	if rn == nil {
		return fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	r.ctlMu.Lock()
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if !started {
		defer r.ctlMu.Unlock()
		f(&rn.Sink) // Run starts it with these settings
		return nil
	}
	r.ctlMu.Unlock()
	return rn.do(ctx, func() { f(&rn.Sink) })
}
