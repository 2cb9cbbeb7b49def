package pgvalue

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// fuzzTypes are the value types FuzzValue picks from with its first byte.
var fuzzTypes = func() []*Type {
	scalars := []*Type{
		{kind: kindText}, {kind: kindInt}, {kind: kindFloat}, {kind: kindNumeric}, {kind: kindMoney}, {kind: kindBool},
		{kind: kindJSON}, {kind: kindBytea}, {kind: kindTimestamp}, {kind: kindTimestamptz},
	}
	composite := &Type{kind: kindComposite, fields: []field{
		{jsonName: []byte(`"a":`), typ: scalars[1]},
		{jsonName: []byte(`"b":`), typ: &Type{kind: kindArray, elem: scalars[0], delim: ','}},
		{jsonName: []byte(`"c":`), typ: scalars[9]},
	}}
	types := append([]*Type(nil), scalars...)
	for _, s := range scalars {
		types = append(types, &Type{kind: kindArray, elem: s, delim: ','})
	}
	return append(types,
		composite,
		&Type{kind: kindArray, elem: composite, delim: ','},
		&Type{kind: kindArray, elem: scalars[0], delim: ';'},
		&Type{kind: kindComposite},
	)
}()

// FuzzValue encodes text as the type its first byte picks.
func FuzzValue(f *testing.F) {
	for _, s := range valueSeeds {
		f.Add(s.typ, []byte(s.text))
	}
	var e Encoder
	f.Fuzz(func(t *testing.T, pick byte, in []byte) {
		typ := fuzzTypes[int(pick)%len(fuzzTypes)]
		prefix := []byte(`{"x":`)
		out := e.Append(append([]byte(nil), prefix...), typ, in)
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
