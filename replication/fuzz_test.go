package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// The fuzz targets check that no input makes the decoder panic, loop or
// write invalid JSON. Their seed corpora are in testdata/fuzz: protocol
// messages built here, and (FuzzDecode/golden_*) the raw pgoutput
// transactions of the golden families, written by go test -run TestGolden
// -update.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 5m -parallel 1 ./replication
//	go test -run '^$' -fuzz FuzzValue -fuzztime 5m -parallel 1 ./replication

// FuzzDecode feeds a framed sequence of pgoutput messages (4-byte length,
// message) to a fresh decoder, up to the first error.
func FuzzDecode(f *testing.F) {
	const rel = 16500
	cols := []relCol{{"id", pgtype.Int4OID, true}, {"body", pgtype.TextOID, false}, {"j", pgtype.JSONBOID, false}, {"c", 20003, false}}
	begin, commit := beginMsg(0x200, t0, 7), commitMsg(0x200, 0x210, t0)
	f.Add(frame(begin, relationMsg(rel, "public", "t", 'd', cols...),
		insertMsg(rel, text("1"), text("a"), text(`{"k": [1]}`), text(`{"(1,{x},happy,null)"}`)),
		updateMsg(rel, 'K', []tupleVal{text("1"), nil, nil, nil}, text("2"), toast, nil, text("{}")),
		deleteMsg(rel, 'K', text("2"), nil, nil, nil),
		truncateMsg(1, rel),
		logicalMsg(true, 0x1f0, "app", []byte("content")),
		commit))
	f.Add(frame(begin, relationMsg(rel, "public", "t", 'f', cols...),
		updateMsg(rel, 'O', []tupleVal{text("1"), text("a"), nil, nil}, text("1"), toast, text("[]"), nil),
		deleteMsg(rel, 'O', text("1"), text("b"), nil, text(`{NULL}`)),
		commit))
	f.Add(frame(logicalMsg(false, 0x100, "app", []byte{0xff}), logicalMsg(false, 0x101, heartbeatPrefix, nil), typeMsg(20002, "s", "c")))
	f.Fuzz(func(t *testing.T, in []byte) {
		d := newTestDecoder()
		emit := func(ev Event) error {
			if ev.Kind != EventChange {
				return nil
			}
			m := ev.Msg
			for _, part := range []struct {
				name string
				json []byte
			}{{"record", m.Record}, {"changes", m.Changes}, {"content", m.Content}} {
				if part.json != nil && !json.Valid(part.json) {
					t.Fatalf("%s %s is not valid JSON: %q", m.Action, part.name, part.json)
				}
			}
			if m.Key == "" {
				t.Fatalf("%s without a key", m.Action)
			}
			if err := checkFields(m); err != nil {
				t.Fatal(err)
			}
			if len(d.values.scratch) != 0 {
				t.Fatalf("scratch holds %d bytes after a message", len(d.values.scratch))
			}
			return nil
		}
		for len(in) >= 4 {
			n := binary.BigEndian.Uint32(in)
			in = in[4:]
			if uint64(n) > uint64(len(in)) {
				n = uint32(len(in))
			}
			msg := in[:n:n]
			in = in[n:]
			if err := d.decode(context.Background(), msg, 0x100, t0, emit); err != nil {
				return
			}
		}
	})
}

// fuzzTypes are the value types FuzzValue picks from with its first byte.
var fuzzTypes = func() []*valueType {
	scalars := []*valueType{
		{kind: kindText}, {kind: kindInt}, {kind: kindFloat}, {kind: kindNumeric}, {kind: kindMoney}, {kind: kindBool},
		{kind: kindJSON}, {kind: kindBytea}, {kind: kindTimestamp}, {kind: kindTimestamptz},
	}
	composite := &valueType{kind: kindComposite, fields: []field{
		{jsonName: []byte(`"a":`), typ: scalars[1]},
		{jsonName: []byte(`"b":`), typ: &valueType{kind: kindArray, elem: scalars[0], delim: ','}},
		{jsonName: []byte(`"c":`), typ: scalars[9]},
	}}
	types := append([]*valueType(nil), scalars...)
	for _, s := range scalars {
		types = append(types, &valueType{kind: kindArray, elem: s, delim: ','})
	}
	return append(types,
		composite,
		&valueType{kind: kindArray, elem: composite, delim: ','},
		&valueType{kind: kindArray, elem: scalars[0], delim: ';'},
		&valueType{kind: kindComposite},
	)
}()

// FuzzValue encodes text as the type its first byte picks.
func FuzzValue(f *testing.F) {
	for _, s := range valueSeeds {
		f.Add(s.typ, []byte(s.text))
	}
	var e valueEncoder
	f.Fuzz(func(t *testing.T, pick byte, in []byte) {
		typ := fuzzTypes[int(pick)%len(fuzzTypes)]
		prefix := []byte(`{"x":`)
		out := e.appendValue(append([]byte(nil), prefix...), typ, in)
		if !bytes.HasPrefix(out, prefix) {
			t.Fatalf("output %q lost its prefix", out)
		}
		v := out[len(prefix):]
		if !json.Valid(v) {
			t.Fatalf("type %d: %q gives invalid JSON %q", pick, in, v)
		}
		if len(e.scratch) != 0 {
			t.Fatalf("scratch holds %d bytes", len(e.scratch))
		}
		switch typ.kind {
		case kindText, kindNumeric:
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				t.Fatalf("text %q gives %q, not a string", in, v)
			}
			if utf8.Valid(in) && s != string(in) {
				t.Fatalf("text %q comes back as %q", in, s)
			}
		case kindInt:
			if v[0] != '"' && !bytes.Equal(v, in) {
				t.Fatalf("int %q gives %q", in, v)
			}
		}
	})
}

// valueSeeds are FuzzValue's seeds: picks into fuzzTypes and texts as
// PostgreSQL writes them.
var valueSeeds = []struct {
	typ  byte
	text string
}{
	{0, "plain"}, {0, "a\"b\\c\n\x01é"}, {1, "-42"}, {2, "1.5e+100"}, {2, "NaN"}, {3, "19.90"}, {4, "-$1,234.56"}, {5, "t"},
	{6, `{"k": [1, 2, {"x": null}]}`}, {7, `\x00ff10`}, {8, "2026-11-26 11:20:00.5"}, {8, "0044-03-15 12:00:00 BC"},
	{9, "2026-11-26 11:20:00.123456+00"}, {9, "infinity"},
	{10, `{"a,b","c\"d","e\\f","NULL",NULL,plain,""}`}, {11, "{{1,2},{3,NULL}}"}, {11, "[0:1]={7,8}"}, {12, "{1.5,NaN}"},
	{16, `{"{\"a\": 1}",null}`}, {17, `{"\\x0102",NULL}`}, {19, `{"2026-11-26 11:20:00+00",infinity}`},
	{20, `(1,"{a,""b c""}","2026-11-26 11:20:00+00")`}, {20, `(,,)`},
	{21, `{"(1,{},)",NULL,"(2,\"{\\\"x y\\\"}\",infinity)"}`}, {22, `{(1,1),(0,0);(3,3),(2,2)}`}, {23, "()"},
}
