package relay

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
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
