package state

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
)

var orders = &change.Relation{
	Schema: "public", Name: "orders", Table: "public.orders", Identity: 'd',
	Columns: []change.Column{{Name: "id", Identity: true}, {Name: "status"}, {Name: "note"}},
}

// fullMessage sets every field of change.Message.
func fullMessage() *change.Message {
	rec := []byte(`{"id":42,"status":"paid"}`)
	return &change.Message{
		Action:         change.Update,
		Schema:         "public",
		Table:          "orders",
		Rel:            orders,
		Record:         rec,
		RecordFields:   []change.Field{{Col: 0, Start: 6, End: 8}, {Col: 1, Start: 18, End: 24}},
		Changes:        []byte(`{"status":"new"}`),
		ChangesFields:  []change.Field{{Col: 1, Start: 10, End: 15}},
		UnchangedToast: []string{"note"},
		Prefix:         "p",
		Content:        []byte(`"c"`),
		Pos:            change.Position{CommitLSN: 0x16B3748, Idx: 3},
		CommitTime:     time.Date(2026, 11, 26, 11, 20, 0, 123456000, time.UTC),
		XID:            1<<32 - 1,
		Key:            "42",
		Barrier:        true,
	}
}

func TestMessageRoundTrip(t *testing.T) {
	before1970 := time.Date(1960, 1, 2, 3, 4, 5, 999999000, time.UTC)
	cases := map[string]*change.Message{
		"every field": fullMessage(),
		"zero":        {},
		"read": {
			Action: change.Read, Schema: "public", Table: "orders", Rel: orders,
			Record: []byte(`{"id":1}`), RecordFields: []change.Field{{Col: 0, Start: 6, End: 7}},
			Pos: change.Position{CommitLSN: 9, Idx: 2}, Key: "public.orders\x001", BackfillID: "bf_0000000000000001",
		},
		"insert without changes": {
			Action: change.Insert, Schema: "public", Table: "orders", Rel: orders,
			Record: []byte(`{"id":1}`), RecordFields: []change.Field{{Col: 0, Start: 6, End: 7}},
			Pos: change.Position{CommitLSN: 1}, CommitTime: before1970, Key: "1",
		},
		"empty, not nil": {
			Record: []byte{}, RecordFields: []change.Field{}, Changes: []byte{}, ChangesFields: []change.Field{},
			UnchangedToast: []string{}, Content: []byte{}, Rel: &change.Relation{Columns: []change.Column{}},
		},
		"logical message": {Action: change.Emitted, Prefix: "audit", Content: []byte(`{"base64":"/w=="}`), Key: "audit", XID: 0},
		"unknown action":  {Action: "upsert", Key: "k"},
		"other schema":    {Action: change.Delete, Schema: "s", Table: "t", Rel: orders, Record: []byte(`{}`)},
		"big": {
			Action: change.Insert, Record: bytes.Repeat([]byte("x"), 300000),
			RecordFields: []change.Field{{Col: 1 << 20, Start: 1 << 17, End: 300000}},
			Pos:          change.Position{CommitLSN: 1<<64 - 1, Idx: 1<<32 - 1}, XID: 1 << 31,
		},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			b := AppendMessage([]byte("prefix"), m)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("AppendMessage did not append")
			}
			var d Decoder
			got, err := d.Message(b[len("prefix"):])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("got %+v, want %+v", got, m)
			}
			if m.Rel != nil && got.Rel == m.Rel {
				t.Error("the decoded message shares the original's relation")
			}
		})
	}
}

func TestMessageTime(t *testing.T) {
	local := time.FixedZone("CET", 3600)
	for _, tc := range []struct{ in, want time.Time }{
		{time.Time{}, time.Time{}},
		{time.Date(2026, 1, 2, 13, 4, 5, 123456789, local), time.Date(2026, 1, 2, 12, 4, 5, 123456000, time.UTC)},
		{time.Date(1969, 12, 31, 23, 59, 59, 1000, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 1000, time.UTC)},
		{time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC)},
	} {
		var d Decoder
		got, err := d.Message(AppendMessage(nil, &change.Message{CommitTime: tc.in}))
		if err != nil {
			t.Fatal(err)
		}
		if got.CommitTime != tc.want {
			t.Errorf("%v: got %v, want %v", tc.in, got.CommitTime, tc.want)
		}
		if got.CommitTime.Location() != time.UTC {
			t.Errorf("%v: got location %v, want UTC", tc.in, got.CommitTime.Location())
		}
	}
}

// TestDecoderOwnsMemory: a store may reuse the bytes it decoded from.
func TestDecoderOwnsMemory(t *testing.T) {
	m := fullMessage()
	b := AppendEntry(nil, Entry{Msg: m, Group: 7})
	var d Decoder
	e, err := d.Entry(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xff
	}
	if !reflect.DeepEqual(e.Msg, m) {
		t.Errorf("overwriting the record changed the message: got %+v", e.Msg)
	}
	// Appending to one slice must not overwrite its neighbour.
	_ = append(e.Msg.Record, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"...)
	if string(e.Msg.Changes) != string(m.Changes) {
		t.Errorf("an append to Record overwrote Changes: %q", e.Msg.Changes)
	}
}

func TestDecoderSharesRelations(t *testing.T) {
	m1, m2 := fullMessage(), fullMessage()
	m2.Pos.Idx++
	other := *orders
	other.Columns = append([]change.Column{}, orders.Columns...)
	other.Columns[2].Name = "notes"
	m3 := fullMessage()
	m3.Rel = &other
	var d Decoder
	var got []*change.Message
	for _, m := range []*change.Message{m1, m2, m3} {
		g, err := d.Message(AppendMessage(nil, m))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
	}
	if got[0].Rel != got[1].Rel {
		t.Error("two messages of one relation got two relations")
	}
	if got[0].Rel == got[2].Rel || got[2].Rel.Columns[2].Name != "notes" {
		t.Error("messages of different relations share one")
	}
	if got[0].Schema != "public" || got[0].Table != "orders" {
		t.Errorf("got %s.%s", got[0].Schema, got[0].Table)
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []Entry{
		{Msg: fullMessage(), Group: 1<<64 - 1, Barrier: true},
		{Msg: &change.Message{Action: change.Truncate, Key: "t"}},
	} {
		var d Decoder
		got, err := d.Entry(AppendEntry(nil, e))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("got %+v, want %+v", got, e)
		}
	}
}

func sampleDeadLetter(t *testing.T, n int) DeadLetter {
	t.Helper()
	d := DeadLetter{
		Attempts: 5, LastStatus: 503, LastError: "503 Service Unavailable: \"down\"",
		FirstAttempt: time.Date(2026, 1, 1, 0, 0, 0, 1000, time.UTC),
		LastAttempt:  time.Date(2026, 1, 1, 0, 5, 0, 2000, time.UTC),
		Created:      time.Date(2026, 1, 1, 0, 5, 1, 3000, time.UTC),
		Reason:       ReasonMaxAttempts,
	}
	for i := range n {
		m := fullMessage()
		m.Pos.Idx = uint32(i)
		d.Entries = append(d.Entries, Entry{Msg: m, Group: uint64(i * 7), Barrier: i == 1})
	}
	d, err := PrepareDeadLetter(d, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDeadLetterRoundTrip(t *testing.T) {
	want := sampleDeadLetter(t, 3)
	want.ID = "000000000000002a"
	b := AppendDeadLetter(nil, &want)
	var d Decoder
	got, err := d.DeadLetter(want.ID, b, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	head, err := d.DeadLetter(want.ID, b, false)
	if err != nil {
		t.Fatal(err)
	}
	want.Entries = nil
	if !reflect.DeepEqual(head, want) {
		t.Errorf("header: got %+v, want %+v", head, want)
	}
	if head.Count != 3 || head.First.Idx != 0 || head.Last.Idx != 2 {
		t.Errorf("header: got count %d, %s to %s, want 3, :0 to :2", head.Count, head.First, head.Last)
	}
	// Only the header is read without entries: a record cut after it
	// still lists.
	if _, err := d.DeadLetter("x", b[:len(b)-1], false); err != nil {
		t.Errorf("header of a cut record: %v", err)
	}
}

func TestDeadLetterLongEntry(t *testing.T) {
	// An entry longer than 127 bytes needs a multi-byte length.
	d := sampleDeadLetter(t, 2)
	d.Entries[0].Msg.Record = bytes.Repeat([]byte("r"), 70000)
	b := AppendDeadLetter(nil, &d)
	var dec Decoder
	got, err := dec.DeadLetter("", b, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Error("a dead letter with a long entry did not round-trip")
	}
}

func TestPrepareDeadLetter(t *testing.T) {
	now := time.Date(2026, 2, 3, 4, 5, 6, 7891, time.Local)
	d := DeadLetter{ID: "given", Count: 99, Entries: []Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: 5}}}},
		LastError: strings.Repeat("é", MaxErrorLen)}
	got, err := PrepareDeadLetter(d, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "" || got.Count != 1 || got.First != d.Entries[0].Msg.Pos || got.Last != got.First {
		t.Errorf("got ID %q count %d %s..%s", got.ID, got.Count, got.First, got.Last)
	}
	if len(got.LastError) != MaxErrorLen || got.LastError != strings.Repeat("é", MaxErrorLen/2) {
		t.Errorf("got a last error of %d bytes, want %d of whole runes", len(got.LastError), MaxErrorLen)
	}
	got.LastError = strings.Repeat("é", MaxErrorLen/2) + "x"
	if got2, _ := PrepareDeadLetter(got, now); len(got2.LastError) != MaxErrorLen {
		t.Errorf("got %d bytes, want %d", len(got2.LastError), MaxErrorLen)
	}
	if want := time.Date(2026, 2, 3, 4, 5, 6, 7000, time.Local).UTC(); got.Created != want {
		t.Errorf("created: got %v, want %v", got.Created, want)
	}
	for name, d := range map[string]DeadLetter{
		"no entries":  {},
		"no message":  {Entries: []Entry{{}}},
		"not ordered": {Entries: []Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: 5}}}, {Msg: &change.Message{Pos: change.Position{CommitLSN: 5}}}}},
		"bad field":   {Entries: []Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: 5}, RecordFields: []change.Field{{End: 1}}}}}},
	} {
		if _, err := PrepareDeadLetter(d, now); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestCheckEntries(t *testing.T) {
	p := func(lsn, idx int) Entry {
		return Entry{Msg: &change.Message{Pos: change.Position{CommitLSN: pglogrepl.LSN(lsn), Idx: uint32(idx)}}}
	}
	last := change.Position{CommitLSN: 10, Idx: 2}
	for _, tc := range []struct {
		name    string
		entries []Entry
		ok      bool
	}{
		{"none", nil, true},
		{"above", []Entry{p(10, 3), p(11, 0), p(11, 1)}, true},
		{"at last", []Entry{p(10, 2)}, false},
		{"below last", []Entry{p(9, 5)}, false},
		{"repeated", []Entry{p(11, 0), p(11, 0)}, false},
		{"backwards", []Entry{p(12, 0), p(11, 0)}, false},
		{"nil message", []Entry{{}}, false},
		{"field outside the record", []Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: 20}, Record: []byte("{}"), RecordFields: []change.Field{{Start: 1, End: 3}}}}}, false},
		{"field after its end", []Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: 20}, Record: []byte("{}"), RecordFields: []change.Field{{Start: 2, End: 1}}}}}, false},
		{"column outside the relation", []Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: 20}, Rel: orders, Changes: []byte("{}"), ChangesFields: []change.Field{{Col: 3}}}}}, false},
	} {
		err := CheckEntries(tc.entries, last)
		if (err == nil) != tc.ok {
			t.Errorf("%s: got error %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestCursorRecord(t *testing.T) {
	c := Cursor{Acked: change.Position{CommitLSN: 0x1_0000_0002, Idx: 7}}
	b := AppendCursor(nil, c)
	if len(b) != 13 || b[0] != 1 {
		t.Fatalf("got %x, want 13 bytes starting with version 1", b)
	}
	got, err := DecodeCursor(b)
	if err != nil || got != c {
		t.Errorf("got %v, %v, want %v", got, err, c)
	}
	legacy := append(AppendPosition(nil, c.Acked), 0, 0, 0, 0, 0, 0, 0x12, 0x34)
	if got, err := DecodeCursor(legacy); err != nil || got != c {
		t.Errorf("legacy: got %v, %v, want %v", got, err, c)
	}
	removed := Cursor{Acked: c.Acked, Removed: time.Date(2026, 12, 3, 9, 0, 0, 250000, time.UTC)}
	rb := AppendCursor(nil, removed)
	if rb[0] != 2 {
		t.Fatalf("a removed sink's cursor: got %x, want version 2", rb)
	}
	if got, err := DecodeCursor(rb); err != nil || got != removed {
		t.Errorf("removed: got %v, %v, want %v", got, err, removed)
	}
	zeroTime := append(append([]byte{2}, b[1:]...), 0, 0, 0, 0, 0, 0, 0, 0)
	for _, bad := range [][]byte{nil, b[:12], append(b, 0), append([]byte{2}, b[1:]...), rb[:len(rb)-2], append(rb, 0), zeroTime} {
		if _, err := DecodeCursor(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%x: got %v, want ErrCorrupt", bad, err)
		}
	}
}

func TestPositionOrder(t *testing.T) {
	ps := []change.Position{{}, {Idx: 1}, {CommitLSN: 1}, {CommitLSN: 1, Idx: 1 << 31}, {CommitLSN: 1 << 40}, {CommitLSN: 1<<64 - 1, Idx: 1<<32 - 1}}
	for i := 1; i < len(ps); i++ {
		if bytes.Compare(AppendPosition(nil, ps[i-1]), AppendPosition(nil, ps[i])) >= 0 {
			t.Errorf("%s does not sort before %s", ps[i-1], ps[i])
		}
		if got, err := DecodePosition(AppendPosition(nil, ps[i])); err != nil || got != ps[i] {
			t.Errorf("got %v, %v, want %v", got, err, ps[i])
		}
	}
}

func TestID(t *testing.T) {
	for _, n := range []uint64{0, 1, 42, 1<<64 - 1} {
		id := FormatID(n)
		if got, ok := ParseID(id); !ok || got != n {
			t.Errorf("ParseID(%q): got %d, %v, want %d", id, got, ok, n)
		}
	}
	if FormatID(42) != "000000000000002a" {
		t.Errorf("got %q", FormatID(42))
	}
	if FormatID(9) >= FormatID(10) || FormatID(255) >= FormatID(256) {
		t.Error("IDs do not sort in order")
	}
	for _, bad := range []string{"", "2a", "000000000000002A", "00000000000000-a", "0000000000000002a", "../../etc/passwd"} {
		if _, ok := ParseID(bad); ok {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

// TestCorrupt: every cut, and every flipped byte, of a record is either an
// error wrapping ErrCorrupt or a record that decodes; never a panic.
func TestCorrupt(t *testing.T) {
	full := sampleDeadLetter(t, 2)
	recs := map[string][]byte{
		"message":     AppendMessage(nil, fullMessage()),
		"entry":       AppendEntry(nil, Entry{Msg: fullMessage(), Group: 3}),
		"dead letter": AppendDeadLetter(nil, &full),
	}
	decode := func(kind string, b []byte) error {
		var d Decoder
		var err error
		switch kind {
		case "message":
			_, err = d.Message(b)
		case "entry":
			_, err = d.Entry(b)
		default:
			_, err = d.DeadLetter("", b, true)
		}
		return err
	}
	for kind, b := range recs {
		for n := 0; n < len(b); n++ {
			err := decode(kind, b[:n])
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s cut to %d of %d bytes: got %v, want ErrCorrupt", kind, n, len(b), err)
			}
		}
		if err := decode(kind, append(append([]byte{}, b...), 0)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s with a byte after it: got %v, want ErrCorrupt", kind, err)
		}
		for i := range b {
			c := append([]byte{}, b...)
			c[i] ^= 0xa5
			if err := decode(kind, c); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s with byte %d flipped: got %v, want nil or ErrCorrupt", kind, i, err)
			}
		}
	}
}

func TestCorruptNamesTheProblem(t *testing.T) {
	m := AppendMessage(nil, fullMessage())
	v2 := append([]byte{2}, m[1:]...)
	badField := AppendMessage(nil, &change.Message{Record: []byte("{}"), RecordFields: []change.Field{{Start: 0, End: 9}}})
	longLen := append([]byte{1, 1, 0}, 0xff, 0xff, 0xff, 0xff, 0x0f) // a schema of 4 GiB
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{v2, "message record, version at byte 1 of"},
		{v2, "from a newer walhook"},
		{[]byte{1, 1}, "flags at byte 2 of 2: the record ends"},
		{badField, "record field 0 spans 0:9 of a 2-byte record"},
		{longLen, "schema at byte 8 of 8: length 4294967295, but 0 bytes are left"},
		{append([]byte{1, 7, 0}, m[3:]...), "unknown action code 7"},
		{append([]byte{1, 1, 4}, m[3:]...), "unknown flags 0x4"},
	} {
		var d Decoder
		_, err := d.Message(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
	e := AppendEntry(nil, Entry{Msg: fullMessage()})
	e[1] = 0x80
	var d Decoder
	if _, err := d.Entry(e); err == nil || !strings.Contains(err.Error(), "entry record, flags at byte 2 of") {
		t.Errorf("got %v, want the entry's flags named", err)
	}
}

func TestEncodeDoesNotAllocate(t *testing.T) {
	m := fullMessage()
	d := sampleDeadLetter(t, 3)
	buf := make([]byte, 0, 1<<16)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendEntry(buf[:0], Entry{Msg: m, Group: 9})
		buf = AppendDeadLetter(buf[:0], &d)
	}); n != 0 {
		t.Errorf("got %v allocations per encoding, want 0", n)
	}
}

func BenchmarkEncodeEntry(b *testing.B) {
	e := Entry{Msg: fullMessage(), Group: 9}
	buf := AppendEntry(nil, e)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEntry(buf[:0], e)
	}
}

func BenchmarkDecodeEntry(b *testing.B) {
	buf := AppendEntry(nil, Entry{Msg: fullMessage(), Group: 9})
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var d Decoder
	for b.Loop() {
		if _, err := d.Entry(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestActionCodes pins the codes: records on disk depend on them.
func TestActionCodes(t *testing.T) {
	for a, want := range map[change.Action]byte{change.Insert: 1, change.Update: 2, change.Delete: 3, change.Truncate: 4, change.Read: 5, change.Emitted: 6, "other": 0} {
		if b := AppendMessage(nil, &change.Message{Action: a}); b[1] != want {
			t.Errorf("%s: got code %d, want %d", a, b[1], want)
		}
	}
	for _, a := range change.Actions {
		if actionCode(a) == 0 {
			t.Errorf("action %s has no code: give it the next one", a)
		}
	}
}

func TestBackfillRecord(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 5000, time.UTC)
	bf := Backfill{
		ID: "bf_1", Sink: "orders", Where: "status = 'open'", State: BackfillRunning, Error: "",
		Created: t0, Updated: t0.Add(time.Minute),
		Tables: []BackfillTable{
			{Table: `"public"."orders"`, Key: []byte{0, 1, 2}, Rows: 42, Estimate: 100},
			{Table: `"public"."lines"`, Estimate: -1},
			{Table: `"public"."empty"`, Key: []byte{}, Done: true},
		},
	}
	rec := AppendBackfill([]byte("prefix"), &bf)[len("prefix"):]
	got, err := DecodeBackfill(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, bf) {
		t.Fatalf("got %+v, want %+v", got, bf)
	}
	// The decoded record owns its memory.
	for i := range rec {
		rec[i] = 0xff
	}
	if !reflect.DeepEqual(got, bf) {
		t.Fatalf("changed with the record: %+v", got)
	}
	rec = AppendBackfill(nil, &bf)
	for n := 0; n < len(rec); n++ {
		if _, err := DecodeBackfill(rec[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut to %d of %d bytes: got %v, want ErrCorrupt", n, len(rec), err)
		}
	}
	if _, err := DecodeBackfill(append(rec, 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a byte too many: got %v, want ErrCorrupt", err)
	}
	bad := append([]byte{}, rec...)
	bad[0] = 2
	if _, err := DecodeBackfill(bad); err == nil || !strings.Contains(err.Error(), "newer walhook") {
		t.Errorf("version 2: got %v", err)
	}
}

func TestOriginRecord(t *testing.T) {
	o := Origin{SystemID: 1<<64 - 1, Timeline: 42}
	rec := AppendOrigin(nil, o)
	if got, err := DecodeOrigin(rec); err != nil || got != o {
		t.Errorf("round trip: got %v, %v, want %v", got, err, o)
	}
	for _, bad := range [][]byte{nil, rec[:12], append([]byte{2}, rec[1:]...), append(rec, 0)} {
		if _, err := DecodeOrigin(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeOrigin(%x): got %v, want ErrCorrupt", bad, err)
		}
	}
}
