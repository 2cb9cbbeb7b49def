package relay

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/replication"
)

// CheckOrigin is the source's CheckSystem: it refuses a server whose WAL
// walhook's positions do not belong to (another cluster, or a timeline
// that branched off below walhook's cursor; see replication.CheckOrigin)
// and records the server's cluster and timeline with the cursors. handedOn
// is the highest LSN the source handed to the relay in this process.
//
// The cursor it checks is the highest position anything could skip at or
// below: every sink's saved cursor, the last entry of every backlog, and
// what this process handed on (a runner skips at or below what it took).
func (r *Relay) CheckOrigin(ctx context.Context, sys replication.System, handedOn pglogrepl.LSN) error {
	recorded, err := r.store.Origin(ctx)
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	top := handedOn
	cursors, err := r.store.Cursors(ctx)
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	for name, c := range cursors {
		top = max(top, c.Acked.CommitLSN, r.store.Backlog(name).Stats().Last.CommitLSN)
	}
	if set := r.cursorSet(); set != nil {
		for _, st := range set.Status() {
			top = max(top, st.Acked.CommitLSN)
		}
	}
	next, err := replication.CheckOrigin(recorded, sys, top)
	if err != nil {
		return err
	}
	if next == recorded {
		return nil
	}
	if err := r.store.SetOrigin(ctx, next); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if recorded.IsZero() {
		r.log.Info("recorded the source's cluster and timeline", "system_id", next.SystemID, "timeline", next.Timeline)
	} else {
		r.log.Warn("the source is on a new timeline that holds everything walhook delivered; going on",
			"system_id", next.SystemID, "timeline", next.Timeline, "previous_timeline", recorded.Timeline, "cursor", top.String())
	}
	return nil
}
