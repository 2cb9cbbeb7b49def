package statetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
)

func testBacklogRead(t *testing.T, h Harness) {
	ctx := context.Background()
	s, _ := fresh(t, h)
	b := s.Backlog("a")
	if got := readAll(t, b); len(got) != 0 {
		t.Fatalf("a new backlog: got %d entries, want none", len(got))
	}
	checkStats(t, "new", b, nil)
	if err := b.Append(ctx, nil); err != nil {
		t.Fatalf("appending nothing: %v", err)
	}
	var all []state.Entry
	for lsn := uint64(10); lsn <= 14; lsn++ {
		es := batch("a", lsn, int(lsn)-8)
		if err := b.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
		checkStats(t, "after an append", b, all)
	}
	checkEntries(t, "all", readAll(t, b), all)

	for _, tc := range []struct {
		name  string
		after change.Position
		max   int
		want  []state.Entry
	}{
		{"from the start, at most 3", change.Position{}, 3, all[:3]},
		{"after the first", all[0].Msg.Pos, 0, all[1:]},
		{"after a position between entries", pos(11, 99), 0, all[5:]},
		{"after a position before all", pos(9, 5), 2, all[:2]},
		{"after the last", all[len(all)-1].Msg.Pos, 0, nil},
		{"after a position past all", pos(99, 0), 0, nil},
		{"in the middle, at most 4", all[6].Msg.Pos, 4, all[7:11]},
		{"more than there is", all[15].Msg.Pos, 100, all[16:]},
	} {
		got, err := b.Read(ctx, tc.after, tc.max, 0)
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, tc.name, got, tc.want)
	}
	// Reading pages through the backlog gives everything once, in order.
	var paged []state.Entry
	after := change.Position{}
	for {
		got, err := b.Read(ctx, after, 4, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		paged = append(paged, got...)
		after = got[len(got)-1].Msg.Pos
	}
	checkEntries(t, "paged", paged, all)
	// Another sink's backlog is another backlog.
	if got := readAll(t, s.Backlog("b")); len(got) != 0 {
		t.Errorf("sink b: got %d entries, want none", len(got))
	}
}

func testBacklogBytes(t *testing.T, h Harness) {
	ctx := context.Background()
	s, _ := fresh(t, h)
	b := s.Backlog("a")
	es := batch("a", 5, 6)
	big := entry("a", 6, 0)
	big.Msg.Record = append(big.Msg.Record[:len(big.Msg.Record):len(big.Msg.Record)], make([]byte, 64<<10)...)
	es = append(es, big, entry("a", 7, 0))
	if err := b.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	sum := func(es []state.Entry) (n int64) {
		for _, e := range es {
			n += size(e)
		}
		return n
	}
	one := size(es[0])
	for _, tc := range []struct {
		name     string
		after    change.Position
		max      int
		maxBytes int64
		want     []state.Entry
	}{
		{"exactly three", change.Position{}, 0, sum(es[:3]), es[:3]},
		{"a byte short of three", change.Position{}, 0, sum(es[:3]) - 1, es[:2]},
		{"less than one", change.Position{}, 0, 1, es[:1]},
		{"the count limit first", change.Position{}, 2, 100 * one, es[:2]},
		{"up to the large one", es[2].Msg.Pos, 0, sum(es[3:6]) + one, es[3:6]},
		{"the large one alone", es[5].Msg.Pos, 0, one, es[6:7]},
		{"the large one alone, no count limit", es[5].Msg.Pos, 0, size(big) - 1, es[6:7]},
		{"the large one fits", es[5].Msg.Pos, 0, size(big) + one, es[6:8]},
		{"no limit", change.Position{}, 0, 0, es},
	} {
		got, err := b.Read(ctx, tc.after, tc.max, tc.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, tc.name, got, tc.want)
	}
	checkStats(t, "stats", b, es)
}

func testBacklogAllOrNothing(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	b := s.Backlog("a")
	good := batch("a", 10, 3)
	if err := b.Append(ctx, good); err != nil {
		t.Fatal(err)
	}
	badField := batch("a", 12, 3)
	badField[2].Msg.RecordFields = []change.Field{{Col: 0, Start: 0, End: 1 << 20}}
	for _, tc := range []struct {
		name    string
		entries []state.Entry
	}{
		{"repeats the last stored", append(batch("a", 10, 3)[2:], batch("a", 11, 2)...)},
		{"below the last stored", batch("a", 9, 2)},
		{"out of order inside", append(batch("a", 12, 2), batch("a", 11, 1)...)},
		{"a repeat inside", append(batch("a", 12, 2), batch("a", 12, 2)[1:]...)},
		{"a message without a message", append(batch("a", 12, 2), state.Entry{})},
		{"a field outside its record", badField},
	} {
		if err := b.Append(ctx, tc.entries); err == nil {
			t.Errorf("an append that %s: no error", tc.name)
		}
		checkEntries(t, "after an append that "+tc.name, readAll(t, b), good)
		checkStats(t, "after an append that "+tc.name, b, good)
	}
	// The backlog still takes what is right.
	more := batch("a", 11, 2)
	if err := b.Append(ctx, more); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, h, s, loc)
	b = s.Backlog("a")
	checkEntries(t, "after reopen", readAll(t, b), append(good, more...))
	checkStats(t, "after reopen", b, append(good, more...))
}

func testBacklogTrim(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	b := s.Backlog("a")
	var all []state.Entry
	for lsn := uint64(1); lsn <= 5; lsn++ {
		es := batch("a", lsn, 3)
		if err := b.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
	}
	for _, tc := range []struct {
		name string
		upto change.Position
		want []state.Entry
	}{
		{"below every entry", pos(0, 9), all},
		{"to the first", all[0].Msg.Pos, all[1:]},
		{"into a transaction", pos(2, 1), all[5:]},
		{"between transactions", pos(3, 99), all[9:]},
		{"to where it was", pos(3, 99), all[9:]},
		{"lower than before", pos(1, 0), all[9:]},
		{"to the last", all[len(all)-1].Msg.Pos, nil},
		{"an empty backlog", pos(99, 0), nil},
	} {
		if err := b.Trim(ctx, tc.upto); err != nil {
			t.Fatalf("trim %s: %v", tc.name, err)
		}
		checkEntries(t, "trim "+tc.name, readAll(t, b), tc.want)
		checkStats(t, "trim "+tc.name, b, tc.want)
	}
	// An emptied backlog takes appends above what it held, and a trim
	// past everything empties it after reopen too.
	es := batch("a", 6, 2)
	if err := b.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	checkStats(t, "appended after emptying", b, es)
	s = reopen(t, h, s, loc)
	b = s.Backlog("a")
	checkEntries(t, "after reopen", readAll(t, b), es)
	if err := b.Trim(ctx, pos(1<<64-1, 1<<32-1)); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, h, s, loc)
	b = s.Backlog("a")
	checkEntries(t, "trimmed, after reopen", readAll(t, b), nil)
	checkStats(t, "trimmed, after reopen", b, nil)
	if err := s.Backlog("never used").Trim(ctx, pos(5, 0)); err != nil {
		t.Errorf("trimming a backlog that was never used: %v", err)
	}
}

func testBacklogReopen(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	want := map[string][]state.Entry{}
	for i, sink := range []string{"a", "b", "c"} {
		for lsn := uint64(1); lsn <= 4; lsn++ {
			es := batch(sink, lsn*10, 2+i)
			if err := s.Backlog(sink).Append(ctx, es); err != nil {
				t.Fatal(err)
			}
			want[sink] = append(want[sink], es...)
		}
	}
	if err := s.Backlog("b").Trim(ctx, pos(20, 99)); err != nil {
		t.Fatal(err)
	}
	want["b"] = want["b"][6:]
	for round := 0; round < 2; round++ {
		s = reopen(t, h, s, loc)
		for sink, es := range want {
			b := s.Backlog(sink)
			checkStats(t, "sink "+sink+" after reopen", b, es)
			checkEntries(t, "sink "+sink+" after reopen", readAll(t, b), es)
		}
		// Appends go on above what is there.
		es := batch("a", 100+uint64(round), 2)
		if err := s.Backlog("a").Append(ctx, es); err != nil {
			t.Fatal(err)
		}
		want["a"] = append(want["a"], es...)
		if err := s.Backlog("a").Append(ctx, batch("a", 50, 1)); err == nil {
			t.Error("an append below the entries of before the reopen: no error")
		}
	}
}

// testBacklogFields stores messages that use every field of change.Message
// in ways the suite's entries do not, and checks they come back the same.
func testBacklogFields(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	other := &change.Relation{Schema: "Sales", Name: "Order Items", Table: `"Sales"."Order Items"`, Identity: 'i',
		Columns: []change.Column{{Name: "a b"}, {Name: "ü", Identity: true}}}
	es := []state.Entry{
		{Msg: &change.Message{Action: change.Insert, Schema: "Sales", Table: "Order Items", Rel: other,
			Record: []byte(`{"a b":null,"ü":"\u00fc"}`), RecordFields: []change.Field{{Col: 0, Start: 7, End: 11}, {Col: 1, Start: 17, End: 25}},
			Pos: pos(1, 0), CommitTime: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), XID: 1<<32 - 1, Key: "\x00binary\xff"}},
		{Msg: &change.Message{Action: change.Delete, Schema: "Sales", Table: "Order Items", Rel: other,
			Record: []byte(`{}`), RecordFields: []change.Field{}, Pos: pos(1, 1), Key: "k"}, Group: 1<<64 - 1},
		{Msg: &change.Message{Action: change.Truncate, Schema: "Sales", Table: "Order Items", Rel: other,
			Pos: pos(1, 2), Key: `"Sales"."Order Items"`, Barrier: true}, Barrier: true},
		{Msg: &change.Message{Action: change.Emitted, Prefix: "audit", Content: []byte(`{"base64":"AP8="}`),
			Pos: pos(2, 0), CommitTime: time.Unix(0, 0).UTC(), Key: "audit"}},
		{Msg: &change.Message{Action: change.Read, Schema: "public", Table: "orders", Rel: relation,
			Record: []byte{}, Changes: []byte{}, ChangesFields: []change.Field{}, UnchangedToast: []string{}, Content: []byte{},
			Pos: pos(1<<40, 1<<31), Key: ""}},
	}
	b := s.Backlog("a")
	if err := b.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "read", readAll(t, b), es)
	d, err := b.MoveToDeadLetters(ctx, 3, 0, state.DeadLetter{Reason: state.ReasonBacklogFull})
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "moved", d.Entries, es[:3])
	s = reopen(t, h, s, loc)
	checkEntries(t, "read after reopen", readAll(t, s.Backlog("a")), es[3:])
	got, err := s.DeadLetters("a").Get(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "dead letter after reopen", got.Entries, es[:3])
	// The messages of one relation that come back together share it, as
	// they did when they were made (a router caches by relation).
	if got.Entries[0].Msg.Rel != got.Entries[1].Msg.Rel {
		t.Error("messages of one relation, read together, have two relations")
	}
}

func testBacklogSinks(t *testing.T, h Harness) {
	ctx := context.Background()
	s, _ := fresh(t, h)
	a, b := s.Backlog("a"), s.Backlog("b")
	if s.Backlog("a") != a {
		t.Log("Backlog returns a new value for the same sink; it must behave as the same backlog")
	}
	if err := a.Append(ctx, batch("a", 5, 2)); err != nil {
		t.Fatal(err)
	}
	// Positions are per backlog: b may hold what a holds, and lower.
	if err := b.Append(ctx, batch("b", 3, 2)); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, batch("b", 5, 2)); err != nil {
		t.Fatal(err)
	}
	if err := a.Trim(ctx, pos(5, 99)); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "a", readAll(t, a), nil)
	checkEntries(t, "b", readAll(t, b), append(batch("b", 3, 2), batch("b", 5, 2)...))
	checkStats(t, "b", s.Backlog("b"), append(batch("b", 3, 2), batch("b", 5, 2)...))
	if _, err := a.MoveToDeadLetters(ctx, 10, 0, state.DeadLetter{}); !errors.Is(err, state.ErrEmpty) {
		t.Errorf("moving from an empty backlog: got %v, want ErrEmpty", err)
	}
}

func testMoveToDeadLetters(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	b, dls := s.Backlog("a"), s.DeadLetters("a")
	var all []state.Entry
	for lsn := uint64(1); lsn <= 4; lsn++ {
		es := batch("a", lsn, 4)
		if err := b.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
	}
	meta := state.DeadLetter{
		ID: "ignored", Count: 99, Reason: state.ReasonBacklogFull, Attempts: 3, LastStatus: 500, LastError: "boom",
		FirstAttempt: epoch, LastAttempt: epoch.Add(time.Minute),
	}
	d1, err := b.MoveToDeadLetters(ctx, 5, 0, meta)
	if err != nil {
		t.Fatal(err)
	}
	if d1.ID == "" || d1.ID == "ignored" || d1.Count != 5 || d1.First != all[0].Msg.Pos || d1.Last != all[4].Msg.Pos {
		t.Errorf("got ID %q count %d %s..%s, want a new ID, 5, %s..%s", d1.ID, d1.Count, d1.First, d1.Last, all[0].Msg.Pos, all[4].Msg.Pos)
	}
	if d1.Created.IsZero() || d1.Reason != meta.Reason || d1.Attempts != 3 || d1.LastStatus != 500 || d1.LastError != "boom" ||
		!d1.FirstAttempt.Equal(meta.FirstAttempt) || !d1.LastAttempt.Equal(meta.LastAttempt) {
		t.Errorf("got %+v, want the reason, attempts, error and times of %+v and a creation time", d1, meta)
	}
	checkEntries(t, "moved", d1.Entries, all[:5])
	checkEntries(t, "left", readAll(t, b), all[5:])
	checkStats(t, "left", b, all[5:])
	// The byte limit applies as in Read.
	d2, err := b.MoveToDeadLetters(ctx, 0, size(all[5])+size(all[6])+size(all[7])-1, meta)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "moved by bytes", d2.Entries, all[5:7])
	if d2.ID <= d1.ID {
		t.Errorf("IDs do not sort in creation order: %q then %q", d1.ID, d2.ID)
	}
	// Everything.
	d3, err := b.MoveToDeadLetters(ctx, 0, 0, meta)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "moved the rest", d3.Entries, all[7:])
	checkStats(t, "emptied", b, nil)
	if _, err := b.MoveToDeadLetters(ctx, 0, 0, meta); !errors.Is(err, state.ErrEmpty) {
		t.Errorf("moving from an emptied backlog: got %v, want ErrEmpty", err)
	}
	if n, err := dls.Count(ctx); err != nil || n != 3 {
		t.Errorf("got %d dead letters, %v, want 3", n, err)
	}
	s = reopen(t, h, s, loc)
	b, dls = s.Backlog("a"), s.DeadLetters("a")
	checkStats(t, "after reopen", b, nil)
	list, err := dls.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].ID != d1.ID || list[1].ID != d2.ID || list[2].ID != d3.ID {
		t.Fatalf("got %d dead letters %v, want %s, %s, %s", len(list), ids(list), d1.ID, d2.ID, d3.ID)
	}
	for i, want := range []state.DeadLetter{d1, d2, d3} {
		got, err := dls.Get(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("dead letter %d: got %+v, want what MoveToDeadLetters returned, %+v", i, got, want)
		}
	}
}

func ids(ds []state.DeadLetter) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}
