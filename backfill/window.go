package backfill

import (
	"strings"
	"sync"

	"github.com/walhook/walhook/change"
)

// Watermarks are transactional pg_logical_emit_message calls with prefix
// replication.WatermarkPrefix and the payload "low ID" or "high ID", where
// ID names one read of one chunk ("bf_…/run/seq"): an ID is never used
// twice, so watermarks a restarted walhook sees again in the stream match
// nothing.

// ParseWatermark reads a watermark's payload: its chunk ID and whether it
// is the high one. ok is false for a payload walhook did not write.
func ParseWatermark(content []byte) (id string, high, ok bool) {
	s := string(content)
	switch {
	case strings.HasPrefix(s, "low "):
		return s[4:], false, true
	case strings.HasPrefix(s, "high "):
		return s[5:], true, true
	}
	return "", false, false
}

func watermark(id string, high bool) string {
	if high {
		return "high " + id
	}
	return "low " + id
}

// Window is one chunk between its watermarks, as the stream sees it (the
// DBLog algorithm). The chunk's rows were read by a query that ran after
// the low watermark committed and before the high one did; a change the
// stream carries between the two may or may not be in what the query saw.
// What becomes of a row that changed between them depends on what each
// sink receives, so the sink's runner decides it (Settle); the window
// decides what holds for every sink: a change that it cannot tie to one
// key (a truncate, an update that changed its key, a key the stream did
// not know) voids the whole chunk, which is then read again, and so does a
// transaction that the query's snapshot missed although the stream
// delivered it before the low watermark (see Commits).
//
// Only SetRows may be called by another goroutine than the stream's
// dispatcher, which opens, observes and closes the window.
type Window struct {
	schema, table string
	void          bool
	open          bool
	low           change.Position

	mu   sync.Mutex // the rows come from the reading goroutine
	rows []*change.Message
	snap Snapshot
}

// NewWindow returns the window of a chunk of the named table; its rows are
// given with SetRows once they are read, before the high watermark is
// written.
func NewWindow(schema, table string) *Window {
	return &Window{schema: schema, table: table}
}

// SetRows gives the window the chunk's rows and the snapshot its query
// read them in.
func (w *Window) SetRows(rows []*change.Message, snap Snapshot) {
	w.mu.Lock()
	w.rows, w.snap = rows, snap
	w.mu.Unlock()
}

// Open marks that the stream passed the low watermark, at low.
func (w *Window) Open(low change.Position) { w.open, w.low = true, low }

// IsOpen reports whether the low watermark was seen.
func (w *Window) IsOpen() bool { return w.open }

// Low is the low watermark's position: the chunk's changes come after it.
func (w *Window) Low() change.Position { return w.low }

// Snapshot is the snapshot the chunk's rows were read in.
func (w *Window) Snapshot() Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap
}

// Table is the chunk's table.
func (w *Window) Table() (schema, table string) { return w.schema, w.table }

// Observe takes a change the stream carried after the low watermark.
func (w *Window) Observe(m *change.Message) {
	if !w.open || m.Action == change.Emitted || m.Schema != w.schema || m.Table != w.table {
		return
	}
	if m.Barrier || m.Action == change.Truncate {
		w.void = true
	}
}

// Close ends the window at the high watermark hw and returns the chunk's
// rows as read messages at hw's position: hw's commit LSN and the indexes
// after it (walhook's watermark transaction holds nothing else), with its
// commit time and xid. retry says the chunk is void: nothing is returned
// and it must be read again. A window whose low watermark was never seen
// (the stream resumed between the two) is void, and so is one whose
// snapshot missed a transaction of commits that changed the table before
// the low watermark (hidden names it).
func (w *Window) Close(hw *change.Message, commits *Commits) (reads []*change.Message, retry bool, hidden uint32) {
	if w.void || !w.open {
		return nil, true, 0
	}
	w.mu.Lock()
	rows, snap := w.rows, w.snap
	w.mu.Unlock()
	if snap.Valid && commits != nil {
		if xid, ok := commits.Hidden(snap, w.schema+"."+w.table, w.low.CommitLSN); ok {
			return nil, true, xid
		}
	}
	reads = make([]*change.Message, 0, len(rows))
	idx := hw.Pos.Idx
	for _, m := range rows {
		idx++
		m.Pos = change.Position{CommitLSN: hw.Pos.CommitLSN, Idx: idx}
		m.CommitTime, m.XID = hw.CommitTime, hw.XID
		reads = append(reads, m)
	}
	return reads, false, 0
}
