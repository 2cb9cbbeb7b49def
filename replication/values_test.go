package replication

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

func TestAppendValue(t *testing.T) {
	text := &valueType{kind: kindText}
	intT := &valueType{kind: kindInt}
	jsonT := &valueType{kind: kindJSON}
	byteaT := &valueType{kind: kindBytea}
	arrayOf := func(e *valueType) *valueType { return &valueType{kind: kindArray, elem: e, delim: ','} }
	composite := &valueType{kind: kindComposite, fields: []field{
		{jsonName: []byte(`"n":`), typ: intT},
		{jsonName: []byte(`"s":`), typ: text},
		{jsonName: []byte(`"a":`), typ: arrayOf(text)},
	}}
	long := strings.Repeat("\x00\x01\xfe\xff", 100)
	tests := []struct {
		name string
		typ  *valueType
		in   string
		want string
	}{
		{"int", intT, "-42", `-42`},
		{"int garbage falls back to string", intT, "4x", `"4x"`},
		{"float", &valueType{kind: kindFloat}, "1.5e+100", `1.5e+100`},
		{"float NaN", &valueType{kind: kindFloat}, "NaN", `"NaN"`},
		{"float -Infinity", &valueType{kind: kindFloat}, "-Infinity", `"-Infinity"`},
		{"numeric keeps digits", &valueType{kind: kindNumeric}, "19.900000000000000000001", `"19.900000000000000000001"`},
		{"money", &valueType{kind: kindMoney}, "$1,234,567.89", `"1234567.89"`},
		{"money negative", &valueType{kind: kindMoney}, "-$0.05", `"-0.05"`},
		{"money small", &valueType{kind: kindMoney}, "$123.00", `"123.00"`},
		{"money another locale stays text", &valueType{kind: kindMoney}, "1.234,56 €", `"1.234,56 €"`},
		{"money three decimals", &valueType{kind: kindMoney}, "$1.234", `"1.234"`},
		{"money bad grouping 2 stays text", &valueType{kind: kindMoney}, "$12,34", `"$12,34"`},
		{"bool t", &valueType{kind: kindBool}, "t", `true`},
		{"bool f", &valueType{kind: kindBool}, "f", `false`},
		{"text escapes", text, "a\"b\\c\n\x01é", `"a\"b\\c\n\u0001é"`},
		{"text empty", text, "", `""`},
		{"json embedded", jsonT, `{"k": [1, 2]}`, `{"k": [1, 2]}`},
		{"json invalid stays text", jsonT, `{"k": `, `"{\"k\": "`},
		{"bytea", byteaT, `\x00ff10`, `"AP8Q"`},
		{"bytea empty", byteaT, `\x`, `""`},
		{"bytea long", byteaT, `\x` + hexOf(long), `"` + base64.StdEncoding.EncodeToString([]byte(long)) + `"`},
		{"bytea bad hex stays text", byteaT, `\x0g`, `"\\x0g"`},
		{"timestamptz", &valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00.123456+00", `"2026-11-26T11:20:00.123456Z"`},
		{"timestamptz short fraction", &valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00.1+00", `"2026-11-26T11:20:00.100000Z"`},
		{"timestamptz no fraction", &valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00+00", `"2026-11-26T11:20:00.000000Z"`},
		{"timestamptz infinity", &valueType{kind: kindTimestamptz}, "infinity", `"infinity"`},
		{"timestamptz -infinity", &valueType{kind: kindTimestamptz}, "-infinity", `"-infinity"`},
		{"timestamptz other zone stays text", &valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00+02", `"2026-11-26 11:20:00+02"`},
		{"timestamp", &valueType{kind: kindTimestamp}, "2026-11-26 11:20:00.5", `"2026-11-26T11:20:00.500000"`},
		{"timestamp BC", &valueType{kind: kindTimestamp}, "0044-03-15 12:00:00 BC", `"0044-03-15 12:00:00 BC"`},
		{"timestamp year 10000", &valueType{kind: kindTimestamp}, "10000-01-01 00:00:00", `"10000-01-01T00:00:00.000000"`},
		{"int array", arrayOf(intT), "{1,2,NULL}", `[1,2,null]`},
		{"2-D array", arrayOf(intT), "{{1,2},{3,4}}", `[[1,2],[3,4]]`},
		{"empty array", arrayOf(intT), "{}", `[]`},
		{"text array quoting", arrayOf(text), `{"a,b","c\"d","e\\f","NULL",plain,""}`, `["a,b","c\"d","e\\f","NULL","plain",""]`},
		{"array bounds", arrayOf(intT), "[0:1]={7,8}", `[7,8]`},
		{"jsonb array", arrayOf(jsonT), `{"{\"a\": 1}","[2]"}`, `[{"a": 1},[2]]`},
		{"bytea array", arrayOf(byteaT), `{"\\x0102",NULL}`, `["AQI=",null]`},
		{"box array", &valueType{kind: kindArray, elem: text, delim: ';'}, `{(1,1),(0,0);(3,3),(2,2)}`, `["(1,1),(0,0)","(3,3),(2,2)"]`},
		{"malformed array stays text", arrayOf(intT), "{1,2", `"{1,2"`},
		{"array with unquoted backslash stays text", arrayOf(text), `{a\b}`, `"{a\\b}"`},
		{"composite", composite, `(1,"a ""b"" \\c",)`, `{"n":1,"s":"a \"b\" \\c","a":null}`},
		{"composite nested array", composite, `(,"","{x,""y z""}")`, `{"n":null,"s":"","a":["x","y z"]}`},
		{"composite too many fields stays text", composite, `(1,a,{},4)`, `"(1,a,{},4)"`},
		{"composite too few fields stays text", composite, `(1,a)`, `"(1,a)"`},
		{"composite array", arrayOf(composite), `{"(1,x,{})",NULL}`, `[{"n":1,"s":"x","a":[]},null]`},
		{"composite without fields", &valueType{kind: kindComposite}, `()`, `{}`},
	}
	var e valueEncoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(e.appendValue(nil, tt.typ, []byte(tt.in)))
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
	var e valueEncoder
	buf := make([]byte, 0, 4096)
	values := []struct {
		typ  *valueType
		text string
	}{
		{&valueType{kind: kindText}, strings.Repeat("long text value ", 20)},
		{&valueType{kind: kindBytea}, `\x` + strings.Repeat("0a", 500)},
		{&valueType{kind: kindJSON}, `{"a": [1, 2, {"b": "c"}]}`},
		{&valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00.123456+00"},
		{&valueType{kind: kindArray, elem: &valueType{kind: kindText}, delim: ','}, `{"a \"b\"",c,"{d}"}`},
	}
	for _, v := range values {
		text := []byte(v.text)
		e.appendValue(buf[:0], v.typ, text) // grow scratch once
		if n := testing.AllocsPerRun(100, func() { e.appendValue(buf[:0], v.typ, text) }); n != 0 {
			t.Errorf("kind %d: got %v allocations per value, want 0", v.typ.kind, n)
		}
	}
}
