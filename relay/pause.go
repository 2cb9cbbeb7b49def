package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/walhook/walhook/state"
)

// A sink's pause is a state beside the runner's mode, not a mode of its
// own: a paused sink's runner goes on taking the stream as in any mode
// (its window fills, it spills to its backlog while another sink can go
// on), only its delivery engine starts no attempt. The pause is owned by
// the runner's goroutine and changes in two transitions, pauseFor and
// resume, each run there as a request (Relay.Pause, Relay.Resume, or the
// engine's own pause on a 410 or pause_after through its pause hook). The
// pause is written to the state store before it takes effect in the
// engine, and deleted before the engine resumes, so that a restart or a
// takeover finds the sink as the operator last saw it.

// pausable is what a delivery engine offers to be paused.
type pausable interface {
	Pause(reason string)
	Resume()
}

// selfPausing is an engine that pauses itself (on a 410, or after
// pause_after) and tells the hook: *sink.Pipeline.
type selfPausing interface {
	SetPauseHook(func(reason, detail string))
}

// PauseNotice is what Options.OnPause is told: the sink paused (Pause
// set) or resumed (Pause nil).
type PauseNotice struct {
	Sink  string
	Pause *state.Pause
}

// loadPause applies the sink's stored pause, if it has one, before the
// runner runs.
func (r *runner) loadPause(ctx context.Context) error {
	if r.pauses == nil {
		return nil
	}
	all, err := r.pauses.Pauses(ctx)
	if err != nil {
		return fmt.Errorf("sink %q: %w", r.Name, err)
	}
	p, ok := all[r.Name]
	if !ok {
		return nil
	}
	r.setPause(&p)
	if e, ok := r.Delivery.(pausable); ok {
		e.Pause(p.Reason)
	}
	r.log.Warn("sink stays paused, as it was before the restart; resume it to go on", "sink", r.Name,
		"reason", p.Reason, "paused_at", p.At.UTC().Format(time.RFC3339))
	return nil
}

// pauseFor is the transition to paused: it records p, then stops the
// engine from starting attempts. A sink paused already stays paused for
// its first reason.
func (r *runner) pauseFor(ctx context.Context, p state.Pause) error {
	if r.pause != nil {
		return nil
	}
	e, ok := r.Delivery.(pausable)
	if !ok {
		return fmt.Errorf("sink %q cannot be paused", r.Name)
	}
	if r.pauses != nil {
		if err := r.pauses.SavePause(ctx, r.Name, p); err != nil {
			return fmt.Errorf("sink %q: %w", r.Name, err)
		}
	}
	r.setPause(&p)
	e.Pause(p.Reason)
	r.log.Info("sink paused", "sink", r.Name, "reason", p.Reason, "detail", p.Detail)
	r.notifyPause(&p)
	return nil
}

// resume is the transition out of paused: it deletes the stored pause,
// then lets the engine deliver again where it stopped.
func (r *runner) resume(ctx context.Context) error {
	e, ok := r.Delivery.(pausable)
	if !ok {
		return fmt.Errorf("sink %q cannot be paused", r.Name)
	}
	if r.pause == nil {
		e.Resume() // an engine that paused itself before it could tell the runner
		return nil
	}
	if r.pauses != nil {
		if err := r.pauses.DeletePause(ctx, r.Name); err != nil {
			return fmt.Errorf("sink %q: %w", r.Name, err)
		}
	}
	r.setPause(nil)
	e.Resume()
	r.log.Info("sink resumed", "sink", r.Name)
	r.notifyPause(nil)
	return nil
}

// setPause records the pause where Status reads it.
func (r *runner) setPause(p *state.Pause) {
	r.pause = p
	r.stats.pause.Store(p)
}

// notifyPause tells Options.OnPause, where operational events will hook
// in (sink.paused, sink.resumed).
func (r *runner) notifyPause(p *state.Pause) {
	if r.onPause != nil {
		r.onPause(PauseNotice{Sink: r.Name, Pause: p})
	}
}

// hookPause lets the engine ask the runner to record a pause it made
// itself. The request runs on its own goroutine: the engine's lane must
// not wait for the runner.
func (r *runner) hookPause() {
	e, ok := r.Delivery.(selfPausing)
	if !ok {
		return
	}
	e.SetPauseHook(func(reason, detail string) {
		at := time.Now().UTC()
		go func() {
			var err error
			if derr := r.do(context.Background(), func() {
				err = r.pauseFor(context.Background(), state.Pause{Reason: reason, At: at, Detail: detail})
			}); derr != nil {
				return // the runner stopped; the engine stays paused until the process ends
			}
			if err != nil {
				r.log.Error("sink paused, but its pause could not be recorded; it may not stay paused after a restart",
					"sink", r.Name, "reason", reason, "err", err)
			}
		}()
	})
}

// Pause pauses the named sink for the operator: it keeps its cursor, and
// what it takes meanwhile waits in its window or its backlog. The pause is
// stored and lasts until Resume. It returns ErrUnknownSink for a sink the
// relay does not have.
func (r *Relay) Pause(ctx context.Context, name string) error {
	p := state.Pause{Reason: state.PausedOperator, At: time.Now().UTC()}
	return r.request(ctx, name, func(rn *runner) error { return rn.pauseFor(ctx, p) }, func() error {
		return r.store.SavePause(ctx, name, p)
	})
}

// Resume lets a paused sink deliver again, where it stopped, and deletes
// its stored pause.
func (r *Relay) Resume(ctx context.Context, name string) error {
	return r.request(ctx, name, func(rn *runner) error { return rn.resume(ctx) }, func() error {
		return r.store.DeletePause(ctx, name)
	})
}

// request runs f on the named sink's runner; before the relay runs, the
// sinks are not started yet and stored instead writes what they will load
// when they start.
func (r *Relay) request(ctx context.Context, name string, f func(*runner) error, stored func() error) error {
	r.ctlMu.Lock()
	rn := r.runnerNamed(name)
	if rn == nil || rn.Delivery == nil {
		r.ctlMu.Unlock()
		return fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if !started {
		defer r.ctlMu.Unlock()
		return stored()
	}
	r.ctlMu.Unlock()
	var err error
	if derr := rn.do(ctx, func() { err = f(rn) }); derr != nil {
		return derr
	}
	return err
}
