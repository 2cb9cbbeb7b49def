package backfill

import (
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

func row(key string) *change.Message {
	return &change.Message{Action: change.Read, Schema: "public", Table: "t", Key: key, BackfillID: "bf_1"}
}

func TestWindow(t *testing.T) {
	hw := &change.Message{Pos: change.Position{CommitLSN: 0x500, Idx: 0}, CommitTime: time.Unix(1, 0), XID: 9}
	changed := func(a change.Action, table, key string) *change.Message {
		return &change.Message{Action: a, Schema: "public", Table: table, Key: key}
	}
	for _, tt := range []struct {
		name    string
		open    bool
		changes []*change.Message
		retry   bool
	}{
		{"nothing changed", true, nil, false},
		{"changed rows are the sinks' to settle", true, []*change.Message{changed(change.Update, "t", "b"), changed(change.Delete, "t", "c"), changed(change.Insert, "t", "z")}, false},
		{"other tables do not count", true, []*change.Message{changed(change.Truncate, "u", "public.u"), {Action: change.Emitted, Key: "a"}}, false},
		{"a truncate voids the chunk", true, []*change.Message{changed(change.Truncate, "t", "public.t")}, true},
		{"a key change voids the chunk", true, []*change.Message{{Action: change.Update, Schema: "public", Table: "t", Key: "q", Barrier: true}}, true},
		{"no low watermark seen", false, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWindow("public", "t")
			for _, m := range tt.changes {
				w.Observe(m) // before the low watermark: ignored
			}
			if tt.open {
				w.Open(change.Position{CommitLSN: 0x100})
			}
			w.SetRows([]*change.Message{row("a"), row("b"), row("c")}, Snapshot{})
			for _, m := range tt.changes {
				w.Observe(m)
			}
			reads, retry, _ := w.Close(hw, &Commits{})
			want := []string{"a", "b", "c"}
			if tt.retry {
				want = nil
			}
			if retry != tt.retry || len(reads) != len(want) {
				t.Fatalf("got %d reads, retry %v; want %v, retry %v", len(reads), retry, want, tt.retry)
			}
			for i, m := range reads {
				pos := change.Position{CommitLSN: 0x500, Idx: uint32(i + 1)}
				if m.Key != want[i] || m.Pos != pos || m.XID != 9 || !m.CommitTime.Equal(hw.CommitTime) {
					t.Errorf("read %d: got key %q at %s xid %d, want %q at %s xid 9", i, m.Key, m.Pos, m.XID, want[i], pos)
				}
			}
		})
	}
}

func TestParseWatermark(t *testing.T) {
	for _, high := range []bool{false, true} {
		id, h, ok := ParseWatermark([]byte(watermark("bf_1/ab/3", high)))
		if !ok || h != high || id != "bf_1/ab/3" {
			t.Errorf("got %q %v %v", id, h, ok)
		}
	}
	if _, _, ok := ParseWatermark([]byte("other")); ok {
		t.Error("a payload walhook did not write parsed")
	}
}

func TestNextLimit(t *testing.T) {
	o := Options{TargetQuery: 100 * time.Millisecond, MaxRows: 10000, MaxBytes: 1 << 20}
	for _, tt := range []struct {
		limit, rows, bytes int
		took               time.Duration
		want               int
	}{
		{100, 100, 10000, 10 * time.Millisecond, 200},     // fast: at most double
		{1000, 1000, 100000, 400 * time.Millisecond, 625}, // slow: halfway to 250
		{1000, 1000, 4 << 20, 10 * time.Millisecond, 250}, // large rows: the byte bound
		{8000, 8000, 80000, time.Millisecond, 10000},      // at most MaxRows
		{20, 20, 200, 10 * time.Second, 10},               // never below 10
	} {
		if got := nextLimit(tt.limit, tt.took, tt.rows, tt.bytes, o); got != tt.want {
			t.Errorf("nextLimit(%d, %v, %d rows, %d bytes): got %d, want %d", tt.limit, tt.took, tt.rows, tt.bytes, got, tt.want)
		}
	}
}

// TestInFlight: a chunk holds at most a fifth of the sink's window, and the
// chunks waiting for delivery two chunks' rows, so that with the chunks
// travelling reads stay within four fifths and live changes find room.
func TestInFlight(t *testing.T) {
	o := Options{MaxRows: 2000}
	for _, tt := range []struct {
		window       int
		ok           bool
		pending, max int
	}{
		{10_000, true, 4000, 2000}, // the default window
		{1000, true, 400, 200},     // a small window: smaller chunks
		{20, true, 20, 10},         // never below 10 rows a chunk
		{0, true, 8000, 2000},      // no message bound: maxPending chunks
		{10_000, false, 8000, 2000},
	} {
		var sc config.Sink
		sc.Window.Messages = tt.window
		p, m := inFlight(sc, tt.ok, o)
		if p != tt.pending || m != tt.max {
			t.Errorf("window %d (known %v): got %d pending rows, chunks of %d; want %d, %d", tt.window, tt.ok, p, m, tt.pending, tt.max)
		}
	}
}
