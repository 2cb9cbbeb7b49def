package relay

import (
	"context"
	"errors"
	"time"
)

// retireInterval is how often the relay looks for removed sinks whose time
// in the store is up: an hour, or a tenth of keep when that is shorter.
func retireInterval(keep time.Duration) time.Duration {
	return min(time.Hour, max(keep/10, time.Millisecond))
}

// retire marks the stored cursors of sinks that are no longer configured
// as removed, and deletes those removed at least KeepRemoved ago (with
// their backlogs), logging each. A sink removed by SIGHUP or between two
// runs is handled alike; a sink added again before its time is up simply
// has its cursor again.
func (r *Relay) retire(ctx context.Context) error {
	r.mu.Lock()
	cursors := r.cursors
	r.mu.Unlock()
	if cursors == nil {
		return nil
	}
	now := time.Now()
	done, err := cursors.Retire(ctx, now, r.opts.KeepRemoved)
	for _, d := range done {
		if d.Deleted {
			r.log.Info("removed sink's cursor deleted from the state store", "sink", d.Sink,
				"cursor", d.Acked.String(), "removed_at", d.Removed.Format(time.RFC3339),
				"backlog_messages_dropped", d.BacklogDropped)
			continue
		}
		r.log.Warn("sink no longer configured; its cursor and backlog stay in the state store until deleted_after, its dead letters until dropped",
			"sink", d.Sink, "cursor", d.Acked.String(), "deleted_after", now.Add(r.opts.KeepRemoved).Format(time.RFC3339))
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
