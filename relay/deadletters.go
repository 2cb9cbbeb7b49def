package relay

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
)

// DeadLetterer returns the function a sink's pipeline hands a batch that
// failed its last attempt: it stores the batch in the sink's dead letters.
func (r *Relay) DeadLetterer(name string) func(context.Context, sink.DeadLetter) error {
	return func(ctx context.Context, d sink.DeadLetter) error {
		entries := make([]state.Entry, len(d.Messages))
		for i, m := range d.Messages {
			entries[i] = state.Entry{Msg: m}
			if i < len(d.Groups) {
				entries[i].Group = d.Groups[i]
			}
		}
		id, err := r.store.DeadLetters(name).Add(ctx, state.DeadLetter{
			Entries: entries, Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: d.LastError,
			FirstAttempt: d.FirstAttempt, LastAttempt: d.LastAttempt, Reason: d.Reason,
		})
		if err != nil {
			return err
		}
		r.log.Warn("batch moved to the dead letters", "sink", name, "dead_letter", id, "messages", len(entries),
			"first", entries[0].Msg.Pos.String(), "last", entries[len(entries)-1].Msg.Pos.String(), "attempts", d.Attempts)
		return nil
	}
}

// DeadLetters returns the named sink's dead-letter store.
func (r *Relay) DeadLetters(name string) (state.DeadLetters, error) {
	if r.runnerNamed(name) == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	return r.store.DeadLetters(name), nil
}

// replayer is what a delivery engine offers to deliver dead letters again.
type replayer interface {
	Replay(msgs []*change.Message, groups []uint64, done func()) error
}

// replays tracks the dead letters being replayed, so that one is never
// queued twice.
type replays struct {
	mu     sync.Mutex
	active map[string]bool // sink + "\x00" + id
	wg     sync.WaitGroup
}

// Replay queues the named sink's dead letters (ids, or every one when ids
// is empty) for delivery again through the sink's pipeline, one after the
// other in their original order, and returns the IDs queued. A dead letter
// is deleted only once all its messages were delivered; if walhook stops
// first it stays, and can be replayed again.
func (r *Relay) Replay(ctx context.Context, name string, ids []string) ([]string, error) {
	rn := r.runnerNamed(name)
	if rn == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	p, ok := rn.Delivery.(replayer)
	if !ok {
		return nil, fmt.Errorf("sink %q cannot replay dead letters", name)
	}
	if !r.running.Load() {
		return nil, fmt.Errorf("sink %q is not running yet; replay once walhook streams", name)
	}
	dl := r.store.DeadLetters(name)
	if len(ids) == 0 {
		list, err := dl.List(ctx)
		if err != nil {
			return nil, err
		}
		for _, d := range list {
			ids = append(ids, d.ID)
		}
	} else {
		for _, id := range ids {
			if _, err := dl.Get(ctx, id); err != nil {
				return nil, err
			}
		}
		slices.Sort(ids) // IDs sort in creation order
		ids = slices.Compact(ids)
	}
	r.replay.mu.Lock()
	if r.replay.active == nil {
		r.replay.active = map[string]bool{}
	}
	var queued []string
	for _, id := range ids {
		if !r.replay.active[name+"\x00"+id] {
			r.replay.active[name+"\x00"+id] = true
			queued = append(queued, id)
		}
	}
	r.replay.mu.Unlock()
	if len(queued) == 0 {
		return nil, nil
	}
	r.replay.wg.Add(1)
	go func() {
		defer r.replay.wg.Done()
		r.replayAll(r.replayCtx(), name, p, dl, queued)
	}()
	r.log.Info("replaying dead letters", "sink", name, "dead_letters", len(queued))
	return queued, nil
}

// replayAll delivers the dead letters one after the other.
func (r *Relay) replayAll(ctx context.Context, name string, p replayer, dl state.DeadLetters, ids []string) {
	defer func() {
		r.replay.mu.Lock()
		for _, id := range ids {
			delete(r.replay.active, name+"\x00"+id)
		}
		r.replay.mu.Unlock()
	}()
	for _, id := range ids {
		d, err := dl.Get(ctx, id)
		if err != nil {
			r.log.Warn("dead letter not replayed", "sink", name, "dead_letter", id, "err", err)
			continue
		}
		msgs := make([]*change.Message, len(d.Entries))
		groups := make([]uint64, len(d.Entries))
		for i, e := range d.Entries {
			msgs[i], groups[i] = e.Msg, e.Group
		}
		done := make(chan struct{})
		if err := p.Replay(msgs, groups, func() { close(done) }); err != nil {
			return // stopping
		}
		select {
		case <-done:
		case <-ctx.Done():
			return // the dead letter stays; it can be replayed after a restart
		}
		if err := dl.Delete(context.Background(), id); err != nil {
			r.log.Error("replayed dead letter not deleted; it may be delivered again", "sink", name, "dead_letter", id, "err", err)
			continue
		}
		r.log.Info("dead letter replayed and deleted", "sink", name, "dead_letter", id, "messages", len(msgs))
	}
}

func (r *Relay) runnerNamed(name string) *runner {
	for _, rn := range r.runnerList() {
		if rn.Name == name {
			return rn
		}
	}
	return nil
}
