package relay

import (
	"context"
	"fmt"
	"slices"

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
			if i < len(d.Barriers) {
				entries[i].Barrier = d.Barriers[i]
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
	Replay(entries []sink.Entry, done func()) error
}

// Replay queues the named sink's dead letters (ids, or every one when ids
// is empty) for delivery again and returns the IDs queued; one already
// queued is not queued twice. The sink's runner delivers them one after
// the other, in their original order, apart from the stream (see
// runner.startReplay). A dead letter is deleted only once all its
// messages were delivered (or became a new dead letter); if walhook stops
// first it stays, and can be replayed again.
func (r *Relay) Replay(ctx context.Context, name string, ids []string) ([]string, error) {
	rn := r.runnerNamed(name)
	if rn == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	if _, ok := rn.Delivery.(replayer); !ok {
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
	var queued []string
	if err := rn.do(ctx, func() { queued = rn.queueReplay(ids) }); err != nil {
		return nil, err
	}
	if len(queued) > 0 {
		r.log.Info("replaying dead letters", "sink", name, "dead_letters", len(queued))
	}
	return queued, nil
}

func (r *Relay) runnerNamed(name string) *runner {
	for _, rn := range r.runnerList() {
		if rn.Name == name {
			return rn
		}
	}
	return nil
}
