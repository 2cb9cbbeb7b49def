package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/walhook/walhook/lease"
	"github.com/walhook/walhook/replication"
)

// An active that cannot stream from its source holds the lease for
// nothing: a standby that can reach the source would do better. So a term
// as the active ends, gracefully (drain, save, release), once the source
// has not been streaming for source.receive_timeout: no replication
// connection, or one that failed to start. A connection that stays silent
// counts as streaming until the stream declares it dead, itself after
// receive_timeout, so an active cut off from its source releases the lease
// about twice receive_timeout after the cut (a minute by default). It
// then waits sourceLossHoldBack before it competes again, which gives
// every standby (polling every lease.PollInterval) the chance to win.

// errSourceLost ends a term whose source could not be streamed for longer
// than the bound.
var errSourceLost = errors.New("the source could not be streamed")

// sourceLossHoldBack is how long an instance that released the lease for a
// lost source waits before it competes for the lease again.
const sourceLossHoldBack = 3 * lease.PollInterval

// sourceCheckInterval is how often watchSource looks at the source.
const sourceCheckInterval = 250 * time.Millisecond

// watchSource ends the term (end, with errSourceLost) once src has not
// been streaming for bound, and returns; it returns when ctx ends.
func watchSource(ctx context.Context, src *replication.Source, bound time.Duration, end context.CancelCauseFunc, log *slog.Logger) {
	t := time.NewTicker(sourceCheckInterval)
	defer t.Stop()
	streamed := time.Now() // when the source was last seen streaming
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if src.Progress().Connected {
				streamed = now
				continue
			}
			if now.Sub(streamed) >= bound {
				err := fmt.Errorf("%w for %v (source.receive_timeout)", errSourceLost, bound)
				log.Error("the source cannot be streamed: stopping delivery and releasing the lease, so that a member that can reach it takes over", "err", err)
				end(err)
				return
			}
		}
	}
}
