package relay

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
)

// Under batch_by: transaction the delivery engine sends a transaction's
// last part only once it knows the transaction ended (Delivery.Ended, or a
// message of a later one). A replay waits until the engine has delivered
// everything it was handed, and stops feeding it from the backlog meanwhile:
// so the engine would wait for the end of the transaction it is in the
// middle of, and the replay for the engine. finishTransaction breaks that
// wait: while a replay waits, it hands the engine the rest of that
// transaction from the backlog (as the window lets it), and then tells it
// the transaction ended, without handing it anything of the next one.

// finishTransaction moves the engine's unfinished transaction to its end
// while a replay waits for the engine (see above).
func (r *runner) finishTransaction(ctx context.Context) {
	open := r.feedPos.CommitLSN
	if !r.Transactions || r.mode != modeReplaying || r.Backlog == nil || open == 0 || open <= r.txEnded ||
		r.replaying != nil && r.replaying.done != nil {
		return
	}
	for r.fatal == nil && r.roomInWindow() {
		entries, err := r.Backlog.Read(ctx, r.feedPos, spillBatch, r.Window.Bytes)
		if err != nil {
			if ctx.Err() == nil {
				r.fatal = fmt.Errorf("sink %q: read the backlog: %w", r.Name, err)
			}
			return
		}
		for _, e := range entries {
			if e.Msg.Pos.CommitLSN != open {
				r.ended(e.Msg.Pos.CommitLSN) // a later transaction begins: this one ended
				return
			}
			r.submit(e)
			if !r.roomInWindow() {
				return
			}
		}
		if len(entries) > 0 {
			continue
		}
		if len(r.buf) > 0 {
			r.flush(ctx) // the rest may wait in memory: make it durable, then read it
			if len(r.buf) == 0 {
				continue
			}
			return
		}
		if r.lastMark > open {
			r.ended(r.lastMark) // the stream passed its commit
		}
		return // else the rest is still to come from the stream
	}
}

// ended tells the engine that the transactions before lsn ended.
func (r *runner) ended(lsn pglogrepl.LSN) {
	r.Delivery.Ended(lsn)
	r.txEnded = r.feedPos.CommitLSN
}

// A spill that starts while the engine is in the middle of a transaction
// leaves its delivered parts out of the backlog (they left memory once
// delivered: a transaction of a million rows is not kept). The backlog
// then holds the rest of it, and after a crash would deliver that rest as
// a transaction of its own. So until the transaction is delivered whole
// the sink's floor stays below it (capFloor): the slot keeps its WAL, and
// PostgreSQL sends it again after a restart. A restart whose stream starts
// below the backlog's first transaction drops the backlog (dropBacklog):
// PostgreSQL sends everything in it again, beginning with that
// transaction whole.

// capFloor bounds the floor below the transaction the engine is in the
// middle of, if it delivered part of it.
func (r *runner) capFloor() {
	if !r.Transactions {
		return
	}
	acked, safe, _ := r.tracker.State()
	if d := r.tracker.Delivered(); acked.Less(d) {
		r.floorCap, r.capTx = max(safe, 1), d.CommitLSN
	}
}

// liftFloorCap ends the floor's bound once the cursor (acked) passed the
// transaction it was for.
func (r *runner) liftFloorCap(acked change.Position) {
	if r.floorCap != 0 && acked.CommitLSN >= r.capTx {
		r.floorCap, r.capTx = 0, 0
	}
}

// raiseFloor raises the sink's floor to lsn, or to its bound.
func (r *runner) raiseFloor(lsn pglogrepl.LSN) {
	if r.floorCap != 0 {
		lsn = min(lsn, r.floorCap)
	}
	r.cursors.RaiseFloor(r.Name, lsn)
}

// dropBacklog deletes the backlog at a start whose stream begins below its
// first transaction: PostgreSQL sends all of it again.
func (r *runner) dropBacklog(ctx context.Context, st state.BacklogStats) error {
	if err := r.Backlog.Trim(ctx, st.Last); err != nil {
		return fmt.Errorf("sink %q: drop the backlog: %w", r.Name, err)
	}
	r.trimmed = st.Last
	r.log.Info("sink's backlog dropped: the stream sends all of it again, from the start of its first transaction", "sink", r.Name,
		"messages", st.Count, "first", st.First.String(), "stream_from", r.resumeFrom.String())
	return nil
}
