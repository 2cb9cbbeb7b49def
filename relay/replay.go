package relay

import (
	"context"
	"errors"

	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
)

// A replay delivers a sink's dead letters again through its own runner,
// apart from the stream. The runner moves to modeReplaying: what it takes
// from the stream goes to the backlog (positions in order), as when
// spilling; once everything it handed the engine before is delivered (its
// window is empty), it hands the engine one dead letter, waits until all
// of it is delivered or became a new dead letter, deletes it, and goes on
// with the next one. With none left it feeds the engine from the backlog
// again (modeSpilling). So a batch never mixes replayed and live
// messages, a replayed batch that fails is a dead letter in position
// order, every live message taken before the replay is delivered before
// it and every one taken after it is delivered after it.
//
// A sink without a backlog stops taking from the stream while it replays.

// replayRun is the dead letter being replayed.
type replayRun struct {
	id       string
	messages int
	done     chan struct{} // nil until the engine has it; closed once it delivered it
}

// queueReplay queues the dead letters of ids that are not queued yet, in
// order, and returns them.
func (r *runner) queueReplay(ids []string) []string {
	if r.replayIDs == nil {
		r.replayIDs = map[string]bool{}
	}
	var queued []string
	for _, id := range ids {
		if !r.replayIDs[id] {
			r.replayIDs[id] = true
			r.replayQ = append(r.replayQ, id)
			queued = append(queued, id)
		}
	}
	return queued
}

// startReplay moves a live or spilling runner to modeReplaying: a live
// one first makes its backlog hold what its window has not delivered.
func (r *runner) startReplay(ctx context.Context) {
	if r.mode == modeLive && r.Backlog != nil {
		r.startSpill(ctx, "replaying dead letters; the sink's messages from the stream wait in its backlog meanwhile")
		if r.fatal != nil || r.mode != modeSpilling {
			return // failed, or stopping
		}
	}
	r.setMode(modeReplaying)
}

// endReplay leaves modeReplaying once no dead letter is queued: the
// engine is fed from the backlog again.
func (r *runner) endReplay() {
	if r.Backlog != nil {
		r.setMode(modeSpilling)
	} else {
		r.setMode(modeLive)
	}
}

// replayStep moves the replay on as far as it can now: it starts one, and
// hands the next dead letter to the engine once the window is empty. The
// runner wakes for it on tracker.Changed (the window emptied) and on the
// replayed dead letter's done.
func (r *runner) replayStep(ctx context.Context) {
	if r.mode != modeReplaying {
		if len(r.replayQ) == 0 {
			return
		}
		r.startReplay(ctx)
		if r.fatal != nil {
			return
		}
	}
	for r.replaying == nil || r.replaying.done == nil {
		if r.replaying == nil {
			if len(r.replayQ) == 0 {
				r.endReplay()
				return
			}
			r.replaying = &replayRun{id: r.replayQ[0]}
			r.replayQ = r.replayQ[1:]
		}
		if n, _ := r.tracker.Window(); n > 0 {
			r.finishTransaction(ctx)
			return // live messages are still on their way
		}
		if !r.handReplay(ctx) {
			return
		}
	}
}

// handReplay hands the dead letter to replay to the engine. It reports
// false when the runner should stop replaying for now (it is stopping).
func (r *runner) handReplay(ctx context.Context) bool {
	id := r.replaying.id
	d, err := r.deadLetters.Get(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		if !errors.Is(err, state.ErrNotFound) { // not found: replayed meanwhile, or dropped
			r.log.Warn("dead letter not replayed", "sink", r.Name, "dead_letter", id, "err", err)
		}
		r.forgetReplay()
		return true
	}
	entries := make([]sink.Entry, len(d.Entries))
	for i, e := range d.Entries {
		entries[i] = sink.Entry{Msg: e.Msg, Group: e.Group, Barrier: e.Barrier}
	}
	done := make(chan struct{})
	if err := r.Delivery.(replayer).Replay(entries, func() { close(done) }); err != nil {
		r.forgetReplay() // stopping: the dead letter stays
		return false
	}
	r.replaying.done, r.replaying.messages = done, len(entries)
	return true
}

// replayDone is closed once the dead letter in the engine was delivered;
// nil while none is.
func (r *runner) replayDone() <-chan struct{} {
	if r.replaying == nil {
		return nil
	}
	return r.replaying.done
}

// finishReplay deletes the dead letter the engine delivered.
func (r *runner) finishReplay(ctx context.Context) {
	id, n := r.replaying.id, r.replaying.messages
	r.forgetReplay()
	if err := r.deadLetters.Delete(ctx, id); err != nil {
		if ctx.Err() == nil {
			r.log.Error("replayed dead letter not deleted; it may be delivered again", "sink", r.Name, "dead_letter", id, "err", err)
		}
		return
	}
	r.log.Info("dead letter replayed and deleted", "sink", r.Name, "dead_letter", id, "messages", n)
}

// forgetReplay drops the dead letter being replayed.
func (r *runner) forgetReplay() {
	delete(r.replayIDs, r.replaying.id)
	r.replaying = nil
}
