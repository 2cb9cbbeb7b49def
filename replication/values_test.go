package replication

import (
	"encoding/json"
	"testing"
)

func TestAppendValue(t *testing.T) {
	text := &valueType{kind: kindText}
	intT := &valueType{kind: kindInt}
	jsonT := &valueType{kind: kindJSON}
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
		{"bool t", &valueType{kind: kindBool}, "t", `true`},
		{"bool f", &valueType{kind: kindBool}, "f", `false`},
		{"text escapes", text, "a\"b\\c\n\x01é", `"a\"b\\c\n\u0001é"`},
		{"json embedded", jsonT, `{"k": [1, 2]}`, `{"k": [1, 2]}`},
		{"bytea", &valueType{kind: kindBytea}, `\x00ff10`, `"AP8Q"`},
		{"bytea empty", &valueType{kind: kindBytea}, `\x`, `""`},
		{"timestamptz", &valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00.123456+00", `"2026-11-26T11:20:00.123456Z"`},
		{"timestamptz short fraction", &valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00.1+00", `"2026-11-26T11:20:00.100000Z"`},
		{"timestamptz no fraction", &valueType{kind: kindTimestamptz}, "2026-11-26 11:20:00+00", `"2026-11-26T11:20:00.000000Z"`},
		{"timestamptz infinity", &valueType{kind: kindTimestamptz}, "infinity", `"infinity"`},
		{"timestamp", &valueType{kind: kindTimestamp}, "2026-11-26 11:20:00.5", `"2026-11-26T11:20:00.500000"`},
		{"timestamp BC", &valueType{kind: kindTimestamp}, "0044-03-15 12:00:00 BC", `"0044-03-15 12:00:00 BC"`},
		{"int array", &valueType{kind: kindArray, elem: intT, delim: ','}, "{1,2,NULL}", `[1,2,null]`},
		{"2-D array", &valueType{kind: kindArray, elem: intT, delim: ','}, "{{1,2},{3,4}}", `[[1,2],[3,4]]`},
		{"empty array", &valueType{kind: kindArray, elem: intT, delim: ','}, "{}", `[]`},
		{"text array quoting", &valueType{kind: kindArray, elem: text, delim: ','}, `{"a,b","c\"d","e\\f","NULL",plain}`, `["a,b","c\"d","e\\f","NULL","plain"]`},
		{"array bounds", &valueType{kind: kindArray, elem: intT, delim: ','}, "[0:1]={7,8}", `[7,8]`},
		{"jsonb array", &valueType{kind: kindArray, elem: jsonT, delim: ','}, `{"{\"a\": 1}","[2]"}`, `[{"a": 1},[2]]`},
		{"malformed array stays text", &valueType{kind: kindArray, elem: intT, delim: ','}, "{1,2", `"{1,2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendValue(nil, tt.typ, []byte(tt.in)))
			if got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("got invalid JSON %s", got)
			}
		})
	}
}
