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
// So a row whose key changed between them is left out: the stream carries
// its newer state, in order. A change that the window cannot tie to one key
// (a truncate, an update that changed its key, a key the stream did not
// know) voids the whole chunk, which is then read again.
//
// Only SetRows may be called by another goroutine than the stream's
// dispatcher, which opens, observes and closes the window.
type Window struct {
	schema, table string
	changed       map[string]struct{}
	void          bool
	open          bool

	mu   sync.Mutex // the rows come from the reading goroutine
	rows []*change.Message
}

// NewWindow returns the window of a chunk of the named table; its rows are
// given with SetRows once they are read, before the high watermark is
// written.
func NewWindow(schema, table string) *Window {
	return &Window{schema: schema, table: table, changed: map[string]struct{}{}}
}

// SetRows gives the window the chunk's rows.
func (w *Window) SetRows(rows []*change.Message) {
	w.mu.Lock()
	w.rows = rows
	w.mu.Unlock()
}

// Open marks that the stream passed the low watermark.
func (w *Window) Open() { w.open = true }

// IsOpen reports whether the low watermark was seen.
func (w *Window) IsOpen() bool { return w.open }

// Observe takes a change the stream carried after the low watermark.
func (w *Window) Observe(m *change.Message) {
	if !w.open || m.Action == change.Emitted || m.Schema != w.schema || m.Table != w.table {
		return
	}
	if m.Barrier || m.Action == change.Truncate {
		w.void = true
		return
	}
	w.changed[m.Key] = struct{}{}
}

// Close ends the window at the high watermark hw and returns the rows
// that survive as read messages at hw's position: hw's commit LSN and the
// indexes after it (walhook's watermark transaction holds nothing else),
// with its commit time and xid. retry says the chunk is void: nothing is
// returned and it must be read again. A window whose low watermark was
// never seen (the stream resumed between the two) is void too.
func (w *Window) Close(hw *change.Message) (reads []*change.Message, retry bool) {
	if w.void || !w.open {
		return nil, true
	}
	w.mu.Lock()
	rows := w.rows
	w.mu.Unlock()
	reads = make([]*change.Message, 0, len(rows))
	idx := hw.Pos.Idx
	for _, m := range rows {
		if _, ok := w.changed[m.Key]; ok {
			continue
		}
		idx++
		m.Pos = change.Position{CommitLSN: hw.Pos.CommitLSN, Idx: idx}
		m.CommitTime, m.XID = hw.CommitTime, hw.XID
		reads = append(reads, m)
	}
	return reads, false
}
