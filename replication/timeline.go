package replication

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/state"
)

// System is what the server walhook streams from says of itself on the
// replication connection: which cluster it is (IDENTIFY_SYSTEM's systemid,
// fixed at initdb and kept by its physical standbys), the timeline it is
// on, and how that timeline came to be (TIMELINE_HISTORY).
type System struct {
	ID       uint64
	Timeline uint32
	// History lists the current timeline's ancestors, oldest first: each
	// ended at its Switch LSN, where the next one branched off. Empty on
	// timeline 1.
	History []TimelineSwitch
}

// TimelineSwitch says that Timeline ended at Switch: the WAL after Switch
// belongs to the next timeline.
type TimelineSwitch struct {
	Timeline uint32
	Switch   pglogrepl.LSN
}

// Origin is the state's record of this system.
func (s System) Origin() state.Origin {
	return state.Origin{SystemID: s.ID, Timeline: s.Timeline}
}

// ErrOtherCluster means the server is another PostgreSQL cluster than the
// one walhook's positions belong to.
var ErrOtherCluster = errors.New("source is another PostgreSQL cluster")

// ErrTimelineDiverged means the server's timeline branched off below
// walhook's cursor: changes walhook delivered never happened on it, and its
// new changes may reuse their positions.
var ErrTimelineDiverged = errors.New("the source's timeline branched off before walhook's cursor")

// identifySystem asks the server on a replication connection who it is.
func identifySystem(ctx context.Context, conn *pgconn.PgConn) (System, error) {
	res, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return System{}, fmt.Errorf("identify system: %w", err)
	}
	id, err := strconv.ParseUint(res.SystemID, 10, 64)
	if err != nil {
		return System{}, fmt.Errorf("identify system: systemid %q is not a number", res.SystemID)
	}
	sys := System{ID: id, Timeline: uint32(res.Timeline)}
	if sys.Timeline <= 1 {
		return sys, nil
	}
	hist, err := pglogrepl.TimelineHistory(ctx, conn, res.Timeline)
	if err != nil {
		return System{}, fmt.Errorf("read the history of timeline %d: %w", sys.Timeline, err)
	}
	if sys.History, err = ParseTimelineHistory(hist.Content); err != nil {
		return System{}, fmt.Errorf("read the history of timeline %d (%s): %w", sys.Timeline, hist.FileName, err)
	}
	return sys, nil
}

// ParseTimelineHistory parses a timeline history file: per line the parent
// timeline, the LSN where it ended and a reason, tab-separated; '#' starts
// a comment.
func ParseTimelineHistory(content []byte) ([]TimelineSwitch, error) {
	var out []TimelineSwitch
	sc := bufio.NewScanner(bytes.NewReader(content))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: %q: want a timeline and an LSN", n, line)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("line %d: timeline %q is not a number", n, f[0])
		}
		lsn, err := pglogrepl.ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %q is not an LSN", n, f[1])
		}
		out = append(out, TimelineSwitch{Timeline: uint32(tli), Switch: lsn})
	}
	return out, sc.Err()
}

// CheckOrigin decides whether walhook may stream from sys, given the
// origin its state recorded and its cursor: the highest commit LSN it
// delivered, holds in a backlog, or handed to its sinks. It returns the
// origin to record from now on.
//
//   - Nothing recorded (a new state, or one from before walhook recorded
//     it): sys is recorded as it is.
//   - Another system identifier: ErrOtherCluster.
//   - The same timeline: nothing changes.
//   - A later timeline whose history shows that the recorded one ended at
//     or after the cursor: the new timeline holds everything walhook
//     delivered and its new changes commit above the switch, so none is
//     at or below the cursor; it is recorded.
//   - A timeline that ended below the cursor, or one that does not descend
//     from the recorded one: ErrTimelineDiverged. Changes of the new
//     timeline between the switch and the cursor would be skipped.
//
// The first record of a new timeline is at the switch LSN itself (the end
// of recovery), so no transaction commits there: a cursor at the switch is
// safe.
func CheckOrigin(recorded state.Origin, sys System, cursor pglogrepl.LSN) (state.Origin, error) {
	now := sys.Origin()
	if recorded.IsZero() {
		return now, nil
	}
	if recorded.SystemID != sys.ID {
		return recorded, fmt.Errorf("%w: walhook's state belongs to the cluster with system identifier %d, but source.url reaches system identifier %d. "+
			"Positions of one cluster mean nothing on another (a new initdb, pg_upgrade, or a restore into a new cluster). To recover: "+
			"point source.url at the cluster walhook streamed from; or, if this is where the data lives now, run walhook slot drop "+
			"(the state forgets the slot and the cluster), start walhook, and re-sync the receivers (for example with a backfill)",
			ErrOtherCluster, recorded.SystemID, sys.ID)
	}
	if recorded.Timeline == sys.Timeline {
		return recorded, nil
	}
	recovery := "To recover: the receivers hold changes that the new primary never had; reconcile them with the database " +
		"(for example with a backfill after walhook slot drop), or, if the old primary's timeline is the one to keep, point source.url back at it"
	i := -1
	for j, sw := range sys.History {
		if sw.Timeline == recorded.Timeline {
			i = j
		}
	}
	if recorded.Timeline > sys.Timeline || i < 0 {
		return recorded, fmt.Errorf("%w: walhook streamed on timeline %d up to %s, but the source is on timeline %d, which does not descend from it "+
			"(its history: %s); its WAL at walhook's positions may hold other changes. %s",
			ErrTimelineDiverged, recorded.Timeline, cursor, sys.Timeline, historyString(sys.History), recovery)
	}
	sw := sys.History[i]
	if cursor > sw.Switch {
		next := sys.Timeline // the timeline that branched off the recorded one
		if i+1 < len(sys.History) {
			next = sys.History[i+1].Timeline
		}
		return recorded, fmt.Errorf("%w: timeline %d branched off timeline %d at %s, but walhook's cursor is at %s: "+
			"the changes walhook delivered between the two never happened on the new primary (timeline %d), and changes committed there "+
			"may reuse their positions, which walhook would skip; it stops rather than skip them. %s",
			ErrTimelineDiverged, next, recorded.Timeline, sw.Switch, cursor, sys.Timeline, recovery)
	}
	return now, nil
}

// historyString shows a timeline history as "1 until 0/3000060, 2 until
// 0/5000000", or "none".
func historyString(h []TimelineSwitch) string {
	if len(h) == 0 {
		return "none"
	}
	parts := make([]string, len(h))
	for i, sw := range h {
		parts[i] = fmt.Sprintf("%d until %s", sw.Timeline, sw.Switch)
	}
	return strings.Join(parts, ", ")
}
