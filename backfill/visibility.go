package backfill

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
)

// WAL order is not visibility order: a transaction's commit record can be
// in the WAL, and its changes in the stream, before a chunk's low
// watermark, while the chunk's query still does not see it (the commit
// waits for a synchronous standby, or has not yet left the proc array).
// Its rows would then be read as they were before it and delivered after
// its changes. So a chunk's query records its snapshot, the stream keeps
// the transactions it delivered recently (Commits), and a chunk whose
// snapshot misses one of them that changed its table before its low
// watermark is read again.

// Snapshot is what pg_current_snapshot() says of a query's snapshot: every
// transaction ID below Xmin is finished, every one at or above Xmax and
// every one in Xip was still running, so the query did not see it. IDs are
// the 32-bit transaction IDs the stream carries (the low half of xid8),
// compared modulo 2^32 as PostgreSQL does.
type Snapshot struct {
	Xmin, Xmax uint32
	Xip        []uint32
	Valid      bool // false: no snapshot was taken (a test's hand-made rows)
}

// ParseSnapshot reads pg_current_snapshot()'s text form, "xmin:xmax:xip,...".
func ParseSnapshot(s string) (Snapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Snapshot{}, fmt.Errorf("snapshot %q: want xmin:xmax:xip (e.g. 10:14:11,13)", s)
	}
	xid := func(p string) (uint32, error) {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("snapshot %q: transaction ID %q: %w", s, p, err)
		}
		return uint32(v), nil // xid8: the epoch is in the high half
	}
	var snap Snapshot
	var err error
	if snap.Xmin, err = xid(parts[0]); err != nil {
		return Snapshot{}, err
	}
	if snap.Xmax, err = xid(parts[1]); err != nil {
		return Snapshot{}, err
	}
	if parts[2] != "" {
		for p := range strings.SplitSeq(parts[2], ",") {
			x, err := xid(p)
			if err != nil {
				return Snapshot{}, err
			}
			snap.Xip = append(snap.Xip, x)
		}
	}
	snap.Valid = true
	return snap, nil
}

// precedes is PostgreSQL's TransactionIdPrecedes for normal IDs.
func precedes(a, b uint32) bool { return int32(a-b) < 0 }

// Sees reports whether the snapshot sees the committed transaction xid.
func (s Snapshot) Sees(xid uint32) bool {
	if !precedes(xid, s.Xmax) {
		return false
	}
	return precedes(xid, s.Xmin) || !slices.Contains(s.Xip, xid)
}

// maxCommits bounds what Commits keeps when no chunk's snapshot tells it
// what it may forget.
const maxCommits = 1 << 16

// Commits are the transactions the stream delivered recently: per table
// changed, the transaction ID and its commit LSN. It is the dispatcher's
// own, like the windows.
type Commits struct {
	list []commit // in stream order
	last commit   // the latest added, to skip a transaction's next change
}

type commit struct {
	xid   uint32
	lsn   pglogrepl.LSN
	table string // "schema.table"
}

// Add records that the transaction xid, committed at lsn, changed the
// table ("schema.table").
func (c *Commits) Add(xid uint32, lsn pglogrepl.LSN, table string) {
	e := commit{xid: xid, lsn: lsn, table: table}
	if e == c.last {
		return
	}
	c.last = e
	if len(c.list) >= maxCommits {
		c.list = slices.Delete(c.list, 0, maxCommits/4) // the oldest
	}
	c.list = append(c.list, e)
}

// Hidden returns a transaction that changed the table, committed before
// the LSN low, that the snapshot does not see; ok is false when there is
// none.
func (c *Commits) Hidden(s Snapshot, table string, low pglogrepl.LSN) (xid uint32, ok bool) {
	for _, e := range c.list {
		if e.lsn < low && e.table == table && !s.Sees(e.xid) {
			return e.xid, true
		}
	}
	return 0, false
}

// Forget drops the transactions below xmin, the xmin of a snapshot: they
// had ended when it was taken, so every snapshot taken after it sees them.
// The caller makes sure no snapshot taken before it is still to be checked.
func (c *Commits) Forget(xmin uint32) {
	c.list = slices.DeleteFunc(c.list, func(e commit) bool { return precedes(e.xid, xmin) })
}
