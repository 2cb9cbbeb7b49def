package events

import (
	"context"
	"log/slog"
	"time"
)

// batch is how many queued events Run reads at a time.
const batch = 100

// Run sends the queued events, oldest first, until ctx ends; it returns
// nil then. An event is deleted from the queue once the endpoint took it.
// A failed attempt is retried after a wait that doubles from 1 s up to
// 30 s (reset by a success); an event older than MaxAge is dropped. A nil
// Emitter returns when ctx ends.
func (e *Emitter) Run(ctx context.Context) error {
	if e == nil {
		<-ctx.Done()
		return nil
	}
	if queued, err := e.store.Events(ctx, 0); err == nil {
		e.pending.Store(int64(len(queued))) // what earlier runs left, and what was emitted since
	}
	wait := e.initial
	attempts := map[uint64]int{} // attempts at the events still queued
	for {
		evs, err := e.store.Events(ctx, batch)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			e.log.Error("events: cannot read the queue; trying again", "err", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return nil
			}
			wait = min(2*wait, e.max)
			continue
		}
		if len(evs) == 0 {
			clear(attempts)
			select {
			case <-ctx.Done():
				return nil
			case <-e.wake:
			}
			continue
		}
		for _, ev := range evs {
			if age := e.now().Sub(ev.Created); age > MaxAge {
				e.log.Error("event dropped: the events endpoint did not take it in time", "event", ev.ID, "age", age.Round(time.Second), "attempts", attempts[ev.Seq])
				if !e.forget(ctx, ev.Seq, attempts) {
					break
				}
				continue
			}
			attempts[ev.Seq]++
			err := e.send.post(ctx, ev, attempts[ev.Seq], e.now())
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				e.log.LogAttrs(ctx, slog.LevelWarn, "event not delivered; retrying",
					slog.String("event", ev.ID), slog.Int("attempt", attempts[ev.Seq]),
					slog.String("err", err.Error()), slog.Duration("retry_in", wait))
				if !sleep(ctx, wait) {
					return nil
				}
				wait = min(2*wait, e.max)
				break
			}
			wait = e.initial
			if !e.forget(ctx, ev.Seq, attempts) {
				break
			}
		}
	}
}

// forget deletes a sent (or dropped) event from the queue; it reports
// false if that failed (the event is then sent again: at least once).
func (e *Emitter) forget(ctx context.Context, seq uint64, attempts map[uint64]int) bool {
	if err := e.store.DeleteEvent(ctx, seq); err != nil {
		e.log.Error("events: cannot delete a sent event from the queue; it will be sent again", "err", err)
		return false
	}
	delete(attempts, seq)
	e.pending.Add(-1)
	return true
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
