// Package statetest is the conformance suite of state.Store: every
// implementation runs it from its own tests,
//
//	func TestConformance(t *testing.T) {
//		statetest.Run(t, statetest.Harness{
//			New:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "state") },
//			Open: func(t *testing.T, loc string) (state.Store, error) { return boltstore.Open(loc) },
//		})
//	}
//
// and must pass it with -race. The crash cases re-execute the test binary
// with -test.run naming the crash subtest and STATETEST_CRASH_LOC set: Run
// then plays the child's part. So the test that calls Run must be reachable
// by its name, and Harness.Open must work in a fresh process.
package statetest

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
)

// Harness tells the suite how to make and open stores of one
// implementation.
type Harness struct {
	// New returns where a new, empty store is to be made: a file path, a
	// database URL with a schema or slot of its own. Every call returns a
	// different one.
	New func(t *testing.T) string
	// Open opens the store at loc. The suite calls it again with the same
	// loc to test restarts (after closing the store), and in a child process
	// for the crash cases. The suite closes what it opens.
	Open func(t *testing.T, loc string) (state.Store, error)
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if loc := childLoc(); loc != "" {
		// In a crash child only the crash subtest matches -test.run.
		t.Run("crash", func(t *testing.T) { crashChild(t, h, loc) })
		return
	}
	t.Run("slot", func(t *testing.T) { testSlot(t, h) })
	t.Run("origin", func(t *testing.T) { testOrigin(t, h) })
	t.Run("cursors", func(t *testing.T) { testCursors(t, h) })
	t.Run("backlog append and read", func(t *testing.T) { testBacklogRead(t, h) })
	t.Run("backlog byte limits", func(t *testing.T) { testBacklogBytes(t, h) })
	t.Run("backlog all or nothing", func(t *testing.T) { testBacklogAllOrNothing(t, h) })
	t.Run("backlog trim", func(t *testing.T) { testBacklogTrim(t, h) })
	t.Run("backlog across reopen", func(t *testing.T) { testBacklogReopen(t, h) })
	t.Run("backlog keeps every field", func(t *testing.T) { testBacklogFields(t, h) })
	t.Run("backlog sinks are independent", func(t *testing.T) { testBacklogSinks(t, h) })
	t.Run("move to dead letters", func(t *testing.T) { testMoveToDeadLetters(t, h) })
	t.Run("dead letters", func(t *testing.T) { testDeadLetters(t, h) })
	t.Run("dead letters across reopen", func(t *testing.T) { testDeadLettersReopen(t, h) })
	t.Run("dead letter not found", func(t *testing.T) { testDeadLetterNotFound(t, h) })
	t.Run("backfills", func(t *testing.T) { testBackfills(t, h) })
	t.Run("events", func(t *testing.T) { testEvents(t, h) })
	t.Run("pauses", func(t *testing.T) { testPauses(t, h) })
	t.Run("context", func(t *testing.T) { testContext(t, h) })
	t.Run("closed", func(t *testing.T) { testClosed(t, h) })
	t.Run("concurrent writers", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("crash", func(t *testing.T) { testCrash(t, h) })
}

// open opens the store at loc and closes it when the test ends.
func open(t *testing.T, h Harness, loc string) state.Store {
	t.Helper()
	s, err := h.Open(t, loc)
	if err != nil {
		t.Fatalf("open %s: %v", loc, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fresh opens a new, empty store; reopen closes s and opens loc again.
func fresh(t *testing.T, h Harness) (state.Store, string) {
	t.Helper()
	loc := h.New(t)
	return open(t, h, loc), loc
}

func reopen(t *testing.T, h Harness, s state.Store, loc string) state.Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return open(t, h, loc)
}

func testSlot(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	if slot, err := s.Slot(ctx); err != nil || slot != "" {
		t.Fatalf("a new store's slot: got %q, %v, want \"\"", slot, err)
	}
	if err := s.SetSlot(ctx, "walhook_1"); err != nil {
		t.Fatal(err)
	}
	if slot, err := s.Slot(ctx); err != nil || slot != "walhook_1" {
		t.Fatalf("got %q, %v, want walhook_1", slot, err)
	}
	s = reopen(t, h, s, loc)
	if slot, err := s.Slot(ctx); err != nil || slot != "walhook_1" {
		t.Fatalf("after reopen: got %q, %v, want walhook_1", slot, err)
	}
}

func testOrigin(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	if o, err := s.Origin(ctx); err != nil || !o.IsZero() {
		t.Fatalf("a new store's origin: got %v, %v, want none", o, err)
	}
	want := state.Origin{SystemID: 7581234567890123456, Timeline: 3}
	if err := s.SetOrigin(ctx, want); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, h, s, loc)
	if o, err := s.Origin(ctx); err != nil || o != want {
		t.Fatalf("after reopen: got %v, %v, want %v", o, err, want)
	}
	want.Timeline = 4
	if err := s.SetOrigin(ctx, want); err != nil {
		t.Fatal(err)
	}
	if o, err := s.Origin(ctx); err != nil || o != want {
		t.Fatalf("after a new timeline: got %v, %v, want %v", o, err, want)
	}
	if err := s.SetOrigin(ctx, state.Origin{}); err != nil {
		t.Fatal(err)
	}
	if o, err := s.Origin(ctx); err != nil || !o.IsZero() {
		t.Fatalf("forgotten: got %v, %v, want none", o, err)
	}
}

func testCursors(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	got, err := s.Cursors(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("a new store's cursors: got %v, %v, want none", got, err)
	}
	if err := s.SaveCursors(ctx, nil); err != nil {
		t.Fatalf("saving no cursors: %v", err)
	}
	want := map[string]state.Cursor{
		"a":                  {Acked: pos(0x16B3748, 3)},
		"b":                  {},
		"a sink with spaces": {Acked: pos(1<<64-1, 1<<32-1)},
	}
	if err := s.SaveCursors(ctx, want); err != nil {
		t.Fatal(err)
	}
	checkCursors(t, s, want)
	// Saving some sinks leaves the others.
	if err := s.SaveCursors(ctx, map[string]state.Cursor{"b": {Acked: pos(7, 0)}}); err != nil {
		t.Fatal(err)
	}
	want["b"] = state.Cursor{Acked: pos(7, 0)}
	checkCursors(t, s, want)
	s = reopen(t, h, s, loc)
	checkCursors(t, s, want)

	// A removed sink's cursor keeps the time, to the microsecond; saving
	// it again without one clears it.
	removed := time.Date(2026, 12, 3, 9, 30, 0, 123456000, time.UTC)
	if err := s.SaveCursors(ctx, map[string]state.Cursor{"b": {Acked: pos(7, 0), Removed: removed}, "c": {Acked: pos(9, 1), Removed: removed}}); err != nil {
		t.Fatal(err)
	}
	want["b"] = state.Cursor{Acked: pos(7, 0), Removed: removed}
	want["c"] = state.Cursor{Acked: pos(9, 1), Removed: removed}
	checkCursors(t, s, want)
	s = reopen(t, h, s, loc)
	checkCursors(t, s, want)
	if err := s.SaveCursors(ctx, map[string]state.Cursor{"b": {Acked: pos(8, 0)}}); err != nil {
		t.Fatal(err)
	}
	want["b"] = state.Cursor{Acked: pos(8, 0)}
	checkCursors(t, s, want)

	// Deleting a cursor leaves the others; deleting one that is not there
	// is not an error.
	for _, name := range []string{"c", "c", "never saved"} {
		if err := s.DeleteCursor(ctx, name); err != nil {
			t.Fatalf("DeleteCursor(%q): %v", name, err)
		}
	}
	delete(want, "c")
	checkCursors(t, s, want)
	s = reopen(t, h, s, loc)
	checkCursors(t, s, want)
}

func checkCursors(t *testing.T, s state.Store, want map[string]state.Cursor) {
	t.Helper()
	got, err := s.Cursors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cursors: got %v, want %v", got, want)
	}
}

func testContext(t *testing.T, h Harness) {
	s, _ := fresh(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := s.Backlog("a")
	if err := b.Append(ctx, batch("a", 1, 3)); err == nil {
		t.Error("Append with a cancelled context: no error")
	}
	if err := s.SaveCursors(ctx, map[string]state.Cursor{"a": {Acked: pos(1, 0)}}); err == nil {
		t.Error("SaveCursors with a cancelled context: no error")
	}
	if _, err := s.DeadLetters("a").Add(ctx, state.DeadLetter{Entries: batch("a", 1, 1)}); err == nil {
		t.Error("Add with a cancelled context: no error")
	}
	if err := s.SaveBackfill(ctx, state.Backfill{ID: "bf_1", Sink: "a"}); err == nil {
		t.Error("SaveBackfill with a cancelled context: no error")
	}
	bg := context.Background()
	if got := readAll(t, b); len(got) != 0 {
		t.Errorf("got %d entries after a cancelled Append, want none", len(got))
	}
	if c, _ := s.Cursors(bg); len(c) != 0 {
		t.Errorf("got cursors %v after a cancelled save, want none", c)
	}
	if n, _ := s.DeadLetters("a").Count(bg); n != 0 {
		t.Errorf("got %d dead letters after a cancelled Add, want none", n)
	}
	if bs, _ := s.Backfills(bg); len(bs) != 0 {
		t.Errorf("got backfills %v after a cancelled save, want none", bs)
	}
}

func testClosed(t *testing.T, h Harness) {
	s, _ := fresh(t, h)
	b, d := s.Backlog("a"), s.DeadLetters("a")
	if err := b.Append(context.Background(), batch("a", 1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	ctx := context.Background()
	for name, err := range map[string]error{
		"Append":       b.Append(ctx, batch("a", 2, 1)),
		"SaveCursors":  s.SaveCursors(ctx, map[string]state.Cursor{"a": {}}),
		"SetSlot":      s.SetSlot(ctx, "x"),
		"SetOrigin":    s.SetOrigin(ctx, state.Origin{SystemID: 1, Timeline: 1}),
		"Trim":         b.Trim(ctx, pos(5, 0)),
		"Delete":       d.Delete(ctx, state.FormatID(1)),
		"SaveBackfill": s.SaveBackfill(ctx, state.Backfill{ID: "bf_1"}),
		"DeleteCursor": s.DeleteCursor(ctx, "a"),
	} {
		if err == nil {
			t.Errorf("%s after Close: no error", name)
		}
	}
	if _, err := b.Read(ctx, change.Position{}, 0, 0); err == nil {
		t.Error("Read after Close: no error")
	}
	if _, err := s.Cursors(ctx); err == nil {
		t.Error("Cursors after Close: no error")
	}
	if _, err := d.List(ctx); err == nil {
		t.Error("List after Close: no error")
	}
	if _, err := s.Backfills(ctx); err == nil {
		t.Error("Backfills after Close: no error")
	}
}

// The messages the suite stores. Every field is set, and their content
// follows from (sink, lsn, idx), so a check can tell what an entry must
// hold.

var relation = &change.Relation{
	Schema: "public", Name: "orders", Table: "public.orders", Identity: 'f',
	Columns: []change.Column{{Name: "id", Identity: true}, {Name: "sink", Identity: true}, {Name: "pad", Identity: true}},
}

var epoch = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func pos(lsn uint64, idx uint32) change.Position {
	return change.Position{CommitLSN: pglogrepl.LSN(lsn), Idx: idx}
}

// entry is the suite's entry at (lsn, idx) of sink: about 250 bytes.
func entry(sink string, lsn uint64, idx uint32) state.Entry {
	id := fmt.Sprintf("%d.%d", lsn, idx)
	rec := fmt.Sprintf(`{"id":"%s","sink":"%s","pad":"%s"}`, id, sink, strings.Repeat("p", 100))
	i0 := strings.Index(rec, `"`+id)
	i1 := strings.Index(rec, `"`+sink)
	i2 := strings.Index(rec, `"ppp`)
	m := &change.Message{
		Action: change.Update, Schema: "public", Table: "orders", Rel: relation,
		Record: []byte(rec),
		RecordFields: []change.Field{
			{Col: 0, Start: uint32(i0), End: uint32(i0 + len(id) + 2)},
			{Col: 1, Start: uint32(i1), End: uint32(i1 + len(sink) + 2)},
			{Col: 2, Start: uint32(i2), End: uint32(i2 + 102)},
		},
		Changes:       []byte(`{"sink":"old"}`),
		ChangesFields: []change.Field{{Col: 1, Start: 8, End: 13}},
		Pos:           pos(lsn, idx),
		CommitTime:    epoch.Add(time.Duration(lsn)*time.Second + time.Duration(idx)*time.Microsecond),
		XID:           uint32(lsn),
		Key:           id,
		Barrier:       idx%5 == 4,
	}
	if idx%3 == 2 {
		m.UnchangedToast = []string{"pad"}
	}
	return state.Entry{Msg: m, Group: lsn*1000 + uint64(idx), Barrier: idx%7 == 6}
}

// batch is the n entries of transaction lsn.
func batch(sink string, lsn uint64, n int) []state.Entry {
	es := make([]state.Entry, n)
	for i := range es {
		es[i] = entry(sink, lsn, uint32(i))
	}
	return es
}

// size is what an entry counts in Read's byte limit and in Stats.
func size(e state.Entry) int64 { return int64(len(state.AppendEntry(nil, e))) }

func readAll(t *testing.T, b state.Backlog) []state.Entry {
	t.Helper()
	es, err := b.Read(context.Background(), change.Position{}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// checkEntries compares entries with what the suite stored.
func checkEntries(t *testing.T, what string, got, want []state.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d entries (%s), want %d (%s)", what, len(got), span(got), len(want), span(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("%s: entry %d: got %+v %+v, want %+v %+v", what, i, got[i], got[i].Msg, want[i], want[i].Msg)
		}
	}
}

func span(es []state.Entry) string {
	if len(es) == 0 {
		return "none"
	}
	return es[0].Msg.Pos.String() + ".." + es[len(es)-1].Msg.Pos.String()
}

// checkStats compares a backlog's stats with its entries.
func checkStats(t *testing.T, what string, b state.Backlog, want []state.Entry) {
	t.Helper()
	st := b.Stats()
	w := state.BacklogStats{Count: int64(len(want))}
	for _, e := range want {
		w.Bytes += size(e)
	}
	if len(want) > 0 {
		w.First, w.Last = want[0].Msg.Pos, want[len(want)-1].Msg.Pos
	}
	if st != w {
		t.Errorf("%s: stats: got %+v, want %+v", what, st, w)
	}
}
