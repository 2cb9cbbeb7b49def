package pgvalue

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

func TestAppendValue(t *testing.T) {
	text := &Type{kind: kindText}
	intT := &Type{kind: kindInt}
	jsonT := &Type{kind: kindJSON}
	byteaT := &Type{kind: kindBytea}
	arrayOf := func(e *Type) *Type { return &Type{kind: kindArray, elem: e, delim: ','} }
	composite := &Type{kind: kindComposite, fields: []field{
		{jsonName: []byte(`"n":`), typ: intT},
		{jsonName: []byte(`"s":`), typ: text},
		{jsonName: []byte(`"a":`), typ: arrayOf(text)},
	}}
	long := strings.Repeat("\x00\x01\xfe\xff", 100)
	tests := []struct {
		name string
		typ  *Type
		in   string
		want string
	}{
		{"int", intT, "-42", `-42`},
		{"int garbage falls back to string", intT, "4x", `"4x"`},
		{"float", &Type{kind: kindFloat}, "1.5e+100", `1.5e+100`},
		{"float NaN", &Type{kind: kindFloat}, "NaN", `"NaN"`},
		{"float -Infinity", &Type{kind: kindFloat}, "-Infinity", `"-Infinity"`},
		{"numeric keeps digits", &Type{kind: kindNumeric}, "19.900000000000000000001", `"19.900000000000000000001"`},
		{"money", &Type{kind: kindMoney}, "$1,234,567.89", `"1234567.89"`},
		{"money negative", &Type{kind: kindMoney}, "-$0.05", `"-0.05"`},
		{"money small", &Type{kind: kindMoney}, "$123.00", `"123.00"`},
		{"money another locale stays text", &Type{kind: kindMoney}, "1.234,56 €", `"1.234,56 €"`},
		{"money three decimals", &Type{kind: kindMoney}, "$1.234", `"1.234"`},
		{"money bad grouping 2 stays text", &Type{kind: kindMoney}, "$12,34", `"$12,34"`},
		{"bool t", &Type{kind: kindBool}, "t", `true`},
		{"bool f", &Type{kind: kindBool}, "f", `false`},
		{"text escapes", text, "a\"b\\c\n\x01é", `"a\"b\\c\n\u0001é"`},
		{"text empty", text, "", `""`},
		{"json embedded", jsonT, `{"k": [1, 2]}`, `{"k": [1, 2]}`},
		{"json invalid stays text", jsonT, `{"k": `, `"{\"k\": "`},
		{"bytea", byteaT, `\x00ff10`, `"AP8Q"`},
		{"bytea empty", byteaT, `\x`, `""`},
		{"bytea long", byteaT, `\x` + hexOf(long), `"` + base64.StdEncoding.EncodeToString([]byte(long)) + `"`},
		{"bytea bad hex stays text", byteaT, `\x0g`, `"\\x0g"`},
		{"timestamptz", &Type{kind: kindTimestamptz}, "2026-11-26 11:20:00.123456+00", `"2026-11-26T11:20:00.123456Z"`},
		{"timestamptz short fraction", &Type{kind: kindTimestamptz}, "2026-11-26 11:20:00.1+00", `"2026-11-26T11:20:00.100000Z"`},
		{"timestamptz no fraction", &Type{kind: kindTimestamptz}, "2026-11-26 11:20:00+00", `"2026-11-26T11:20:00.000000Z"`},
		{"timestamptz infinity", &Type{kind: kindTimestamptz}, "infinity", `"infinity"`},
		{"timestamptz -infinity", &Type{kind: kindTimestamptz}, "-infinity", `"-infinity"`},
		{"timestamptz other zone stays text", &Type{kind: kindTimestamptz}, "2026-11-26 11:20:00+02", `"2026-11-26 11:20:00+02"`},
		{"timestamp", &Type{kind: kindTimestamp}, "2026-11-26 11:20:00.5", `"2026-11-26T11:20:00.500000"`},
		{"timestamp BC", &Type{kind: kindTimestamp}, "0044-03-15 12:00:00 BC", `"0044-03-15 12:00:00 BC"`},
		{"timestamp year 10000", &Type{kind: kindTimestamp}, "10000-01-01 00:00:00", `"10000-01-01T00:00:00.000000"`},
		{"int array", arrayOf(intT), "{1,2,NULL}", `[1,2,null]`},
		{"2-D array", arrayOf(intT), "{{1,2},{3,4}}", `[[1,2],[3,4]]`},
		{"empty array", arrayOf(intT), "{}", `[]`},
		{"text array quoting", arrayOf(text), `{"a,b","c\"d","e\\f","NULL",plain,""}`, `["a,b","c\"d","e\\f","NULL","plain",""]`},
		{"array bounds", arrayOf(intT), "[0:1]={7,8}", `[7,8]`},
		{"jsonb array", arrayOf(jsonT), `{"{\"a\": 1}","[2]"}`, `[{"a": 1},[2]]`},
		{"bytea array", arrayOf(byteaT), `{"\\x0102",NULL}`, `["AQI=",null]`},
		{"box array", &Type{kind: kindArray, elem: text, delim: ';'}, `{(1,1),(0,0);(3,3),(2,2)}`, `["(1,1),(0,0)","(3,3),(2,2)"]`},
		{"malformed array stays text", arrayOf(intT), "{1,2", `"{1,2"`},
		{"array with unquoted backslash stays text", arrayOf(text), `{a\b}`, `"{a\\b}"`},
		{"composite", composite, `(1,"a ""b"" \\c",)`, `{"n":1,"s":"a \"b\" \\c","a":null}`},
		{"composite nested array", composite, `(,"","{x,""y z""}")`, `{"n":null,"s":"","a":["x","y z"]}`},
		{"composite too many fields stays text", composite, `(1,a,{},4)`, `"(1,a,{},4)"`},
		{"composite too few fields stays text", composite, `(1,a)`, `"(1,a)"`},
		{"composite array", arrayOf(composite), `{"(1,x,{})",NULL}`, `[{"n":1,"s":"x","a":[]},null]`},
		{"composite without fields", &Type{kind: kindComposite}, `()`, `{}`},
	}
	var e Encoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(e.Append(nil, tt.typ, []byte(tt.in)))
			if got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("got invalid JSON %s", got)
			}
			if len(e.scratch) != 0 {
				t.Fatalf("scratch left with %d bytes, want 0", len(e.scratch))
			}
		})
	}
}

func hexOf(s string) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(digits[s[i]>>4])
		b.WriteByte(digits[s[i]&0xf])
	}
	return b.String()
}

func TestAppendValueAllocates(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	var e Encoder
	buf := make([]byte, 0, 4096)
	values := []struct {
		typ  *Type
		text string
	}{
		{&Type{kind: kindText}, strings.Repeat("long text value ", 20)},
		{&Type{kind: kindBytea}, `\x` + strings.Repeat("0a", 500)},
		{&Type{kind: kindJSON}, `{"a": [1, 2, {"b": "c"}]}`},
		{&Type{kind: kindTimestamptz}, "2026-11-26 11:20:00.123456+00"},
		{&Type{kind: kindArray, elem: &Type{kind: kindText}, delim: ','}, `{"a \"b\"",c,"{d}"}`},
	}
	for _, v := range values {
		text := []byte(v.text)
		e.Append(buf[:0], v.typ, text) // grow scratch once
		if n := testing.AllocsPerRun(100, func() { e.Append(buf[:0], v.typ, text) }); n != 0 {
			t.Errorf("kind %d: got %v allocations per value, want 0", v.typ.kind, n)
		}
	}
}
