package backfill

import (
	"github.com/jackc/pglogrepl"
	"testing"
)

func TestParseSnapshot(t *testing.T) {
	s, err := ParseSnapshot("4294967396:4294967400:4294967397,4294967399")
	if err != nil {
		t.Fatal(err)
	}
	if s.Xmin != 100 || s.Xmax != 104 || len(s.Xip) != 2 || s.Xip[0] != 101 || s.Xip[1] != 103 || !s.Valid {
		t.Fatalf("got %+v, want xmin 100, xmax 104, xip [101 103] (the epoch dropped)", s)
	}
	if s, err := ParseSnapshot("7:7:"); err != nil || len(s.Xip) != 0 {
		t.Fatalf("got %+v, %v; want no xip", s, err)
	}
	for _, bad := range []string{"", "1:2", "a:2:", "1:2:x"} {
		if _, err := ParseSnapshot(bad); err == nil {
			t.Errorf("ParseSnapshot(%q): no error", bad)
		}
	}
}

// TestCommitsHidden: a chunk is told of a transaction of its table that
// committed before its low watermark and that its snapshot does not see
// (running, or not yet started when the snapshot was taken); not of one
// it sees, one of another table, or one after the low watermark (that is
// the window's). Forget drops the transactions below an xmin.
func TestCommitsHidden(t *testing.T) {
	snap := Snapshot{Xmin: 100, Xmax: 110, Xip: []uint32{103}, Valid: true}
	for _, tt := range []struct {
		name   string
		xid    uint32
		lsn    uint64
		table  string
		hidden bool
	}{
		{"running at the snapshot", 103, 0x10, "public.t", true},
		{"at or above xmax", 110, 0x10, "public.t", true},
		{"seen: finished below xmax", 104, 0x10, "public.t", false},
		{"seen: below xmin", 99, 0x10, "public.t", false},
		{"another table", 103, 0x10, "public.u", false},
		{"after the low watermark", 103, 0x30, "public.t", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c Commits
			c.Add(tt.xid, pglogrepl.LSN(tt.lsn), tt.table)
			xid, ok := c.Hidden(snap, "public.t", 0x20)
			if ok != tt.hidden || (ok && xid != tt.xid) {
				t.Fatalf("got %d, %v; want %v", xid, ok, tt.hidden)
			}
		})
	}
	var c Commits
	c.Add(99, 0x10, "public.t")
	c.Add(103, 0x11, "public.t")
	c.Add(103, 0x11, "public.t") // the same transaction's next change
	c.Forget(snap.Xmin)
	if len(c.list) != 1 || c.list[0].xid != 103 {
		t.Errorf("after a snapshot with xmin 100: got %+v, want only 103", c.list)
	}
	// Wraparound: 2^32-2 precedes 3.
	wrap := Snapshot{Xmin: 1<<32 - 10, Xmax: 5, Xip: []uint32{3}, Valid: true}
	if !wrap.Sees(1<<32-2) || wrap.Sees(3) || wrap.Sees(6) {
		t.Error("transaction IDs do not compare modulo 2^32")
	}
}
