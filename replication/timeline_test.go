package replication

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/state"
)

func TestParseTimelineHistory(t *testing.T) {
	content := "1\t0/3000160\tno recovery target specified\n\n# a comment\n2\t0/5000000\tbefore 2026-12-07\n"
	got, err := ParseTimelineHistory([]byte(content))
	if err != nil {
		t.Fatal(err)
	}
	want := []TimelineSwitch{{1, 0x3000160}, {2, 0x5000000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"1\n", "x\t0/1\tr\n", "1\tzz\tr\n"} {
		if _, err := ParseTimelineHistory([]byte(bad)); err == nil {
			t.Errorf("ParseTimelineHistory(%q): got no error", bad)
		}
	}
}

// TestCheckOrigin decides from a recorded origin, a server's timeline
// history and walhook's cursor, without a database.
func TestCheckOrigin(t *testing.T) {
	const id = 7581234567890123456
	rec := func(tli uint32) state.Origin { return state.Origin{SystemID: id, Timeline: tli} }
	sys := func(tli uint32, h ...TimelineSwitch) System { return System{ID: id, Timeline: tli, History: h} }
	tests := []struct {
		name     string
		recorded state.Origin
		sys      System
		cursor   pglogrepl.LSN
		want     state.Origin
		err      error
		errText  []string
	}{
		{name: "nothing recorded: record", sys: sys(3, TimelineSwitch{1, 0x100}, TimelineSwitch{2, 0x200}), cursor: 0x900, want: rec(3)},
		{name: "same timeline", recorded: rec(1), sys: sys(1), cursor: 0x900, want: rec(1)},
		{name: "promoted, cursor below the switch", recorded: rec(1), sys: sys(2, TimelineSwitch{1, 0x3000160}), cursor: 0x3000000, want: rec(2)},
		{name: "promoted, cursor at the switch", recorded: rec(1), sys: sys(2, TimelineSwitch{1, 0x3000160}), cursor: 0x3000160, want: rec(2)},
		{name: "promoted, cursor past the switch", recorded: rec(1), sys: sys(2, TimelineSwitch{1, 0x3000160}), cursor: 0x3000200,
			want: rec(1), err: ErrTimelineDiverged,
			errText: []string{"timeline 2 branched off timeline 1 at 0/3000160", "cursor is at 0/3000200", "To recover"}},
		{name: "two promotions, ours ended above the cursor", recorded: rec(2),
			sys: sys(3, TimelineSwitch{1, 0x100}, TimelineSwitch{2, 0x500}), cursor: 0x400, want: rec(3)},
		{name: "two promotions, ours ended below the cursor", recorded: rec(1),
			sys: sys(3, TimelineSwitch{1, 0x100}, TimelineSwitch{2, 0x500}), cursor: 0x400,
			want: rec(1), err: ErrTimelineDiverged, errText: []string{"timeline 2 branched off timeline 1 at 0/100", "new primary (timeline 3)"}},
		{name: "a sibling timeline", recorded: rec(2), sys: sys(3, TimelineSwitch{1, 0x100}), cursor: 0x50,
			want: rec(2), err: ErrTimelineDiverged, errText: []string{"timeline 3, which does not descend from it", "1 until 0/100"}},
		{name: "an older timeline", recorded: rec(3), sys: sys(2, TimelineSwitch{1, 0x100}), cursor: 0x50,
			want: rec(3), err: ErrTimelineDiverged},
		{name: "another cluster", recorded: state.Origin{SystemID: 42, Timeline: 1}, sys: sys(1), cursor: 0x50,
			want: state.Origin{SystemID: 42, Timeline: 1}, err: ErrOtherCluster,
			errText: []string{"system identifier 42", "system identifier 7581234567890123456", "walhook slot drop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckOrigin(tt.recorded, tt.sys, tt.cursor)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("got error %v, want %v", err, tt.err)
			}
			for _, w := range tt.errText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			if got != tt.want {
				t.Errorf("got origin %v, want %v", got, tt.want)
			}
		})
	}
}
