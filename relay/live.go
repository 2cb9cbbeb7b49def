package relay

import (
	"context"
	"fmt"
	"slices"

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

// inDispatcher runs f on the dispatcher's goroutine between two batches and
// waits for it; it fails once the relay no longer dispatches.
func (r *Relay) inDispatcher(ctx context.Context, f func()) error {
	r.mu.Lock()
	live := r.live
	r.mu.Unlock()
	if live == nil {
		return fmt.Errorf("walhook is not streaming yet")
	}
	done := make(chan struct{})
	select {
	case r.ctl <- func() { f(); close(done) }:
	case <-live.dispatchCtx.Done():
		return fmt.Errorf("walhook is stopping")
	case <-ctx.Done():
		return ctx.Err()
	}
	<-done
	return nil
}

// AddSink adds a sink while the relay runs. It starts at the current
// position: it gets what the stream sends from now on, not what it sent
// before, and its cursor starts there. The sink's delivery engine must be
// built with the relay's Acker and DeadLetterer for its name.
func (r *Relay) AddSink(ctx context.Context, s Sink) error {
	if r.runnerNamed(s.Name) != nil {
		return fmt.Errorf("sink %q already exists", s.Name)
	}
	rn := r.runner(s.Name) // the Acker built with the engine refers to this runner
	rn.Sink = s
	return r.inDispatcher(ctx, func() {
		defer func() {
			r.mu.Lock()
			delete(r.pending, s.Name)
			r.runners = append(r.runners, rn)
			r.mu.Unlock()
		}()
		live := r.live
		rn.tracker = live.cursors.Add(s.Name, r.lastDispatched)
		rn.cursors = live.cursors
		rn.dispatched, rn.feedPos = r.lastDispatched, r.lastDispatched
		rn.blocked, rn.total, rn.wake = &r.blocked, &r.total, &r.wake
		if r.opts.Budget != nil {
			rn.taker = r.opts.Budget.Taker()
		}
		if rn.Backlog != nil && rn.Backlog.Stats().Count > 0 {
			// A sink added again starts at the current position: what its
			// backlog kept from before is past.
			st := rn.Backlog.Stats()
			r.log.Warn("sink added again: the backlog it left is dropped, it starts at the current position", "sink", s.Name, "messages", st.Count)
		}
		if err := rn.start(live.dispatchCtx); err != nil {
			live.fatal <- err
			return
		}
		pctx, cancel := context.WithCancel(live.sinkCtx)
		rn.stopDelivery = cancel
		live.sinks.Go(func() error { return rn.Delivery.Run(pctx) })
		live.runners.Go(func() error {
			if err := rn.run(live.dispatchCtx); err != nil {
				live.fatal <- err
			}
			return nil
		})
		r.dispatchList = append(r.dispatchList, rn)
		r.total.Add(1)
		r.wake.poke()
		r.log.Info("sink added; it starts at the current position", "sink", s.Name, "position", r.lastDispatched.String())
	})
}

// RemoveSink stops a sink while the relay runs: it gets nothing more, what
// it has in flight is abandoned, and it no longer holds the slot. Its
// cursor and backlog stay in the state store for Options.KeepRemoved, its
// dead letters until dropped.
func (r *Relay) RemoveSink(ctx context.Context, name string) error {
	rn := r.runnerNamed(name)
	if rn == nil {
		return fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	err := r.inDispatcher(ctx, func() {
		r.dispatchList = slices.DeleteFunc(r.dispatchList, func(x *runner) bool { return x == rn })
		close(rn.inbox) // the runner returns once it has taken what waits
		r.total.Add(-1)
		r.wake.poke()
	})
	if err != nil {
		return err
	}
	if rn.stopDelivery != nil {
		rn.stopDelivery()
	}
	if r.opts.Budget != nil && rn.taker != nil {
		r.opts.Budget.Remove(rn.taker)
	}
	r.mu.Lock()
	r.runners = slices.DeleteFunc(r.runners, func(x *runner) bool { return x == rn })
	cursors := r.cursors
	r.mu.Unlock()
	if cursors != nil {
		cursors.Remove(name)
	}
	if cursors == nil {
		return nil
	}
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
	if !r.running.Load() {
		f(&rn.Sink)
		return nil
	}
	return rn.do(ctx, func() { f(&rn.Sink) })
}
