package filter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/walhook/walhook/change"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		obj, key  string
		firstWins bool
		want      string // raw value; "" when not found
		wantErr   bool
	}{
		{`{"a":1,"b":"x"}`, "b", true, `"x"`, false},
		{`{"a":1,"b":"x"}`, "c", true, ``, false},
		{`{}`, "a", true, ``, false},
		{` { "a" : [1, {"b": "}"}] , "b" : 2 } `, "b", true, `2`, false},
		{`{"a":{"b":1},"b":2}`, "b", true, `2`, false}, // not the nested b
		{`{"x":"a\"b","a\"b":3}`, `a"b`, true, `3`, false},
		{`{"caf\u00e9":1}`, "café", true, `1`, false},
		{`{"\ud83d\ude00":1}`, "😀", true, `1`, false},
		{`{"k":1,"k":2}`, "k", true, `1`, false},
		{`{"k":1,"k":2}`, "k", false, `2`, false},
		{`{"s":"\\"}`, "s", true, `"\\"`, false},
		{`[1]`, "a", true, ``, true},
		{`{"a":1`, "b", true, ``, true},
		{`{"a":[1}`, "b", true, ``, true},
		{`{"a" 1}`, "a", true, ``, true},
		{`{"a":1 "b":2}`, "b", true, ``, true},
		{`{"a":"unterminated}`, "b", true, ``, true},
		{``, "a", true, ``, true},
	}
	for _, tt := range tests {
		got, found, err := lookup([]byte(tt.obj), tt.key, tt.firstWins)
		if (err != nil) != tt.wantErr || found != (tt.want != "") || string(got) != tt.want {
			t.Errorf("lookup(%s, %q): got %s, %v, %v; want %s, error %v", tt.obj, tt.key, got, found, err, tt.want, tt.wantErr)
		}
	}
}

func TestConvert(t *testing.T) {
	tests := []struct {
		raw  string
		want any // as native() gives it; error for a conversion error
	}{
		{`0`, int64(0)},
		{`-0`, int64(0)},
		{`42`, int64(42)},
		{`9223372036854775807`, int64(9223372036854775807)},
		{`-9223372036854775808`, int64(-9223372036854775808)},
		{`9223372036854775808`, 9223372036854775808.0},
		{`-9223372036854775809`, -9223372036854775809.0},
		{`18446744073709551616000`, 18446744073709551616000.0},
		{`1.5`, 1.5},
		{`1e3`, 1000.0},
		{`1E-2`, 0.01},
		{`2.0`, 2.0},
		{`true`, true},
		{`false`, false},
		{`null`, nil},
		{`"x\u0000y"`, "x\x00y"},
		{`"\ud83d"`, "\uFFFD"},
		{`"\ud83d\u0041"`, "\uFFFDA"},
		{`"\udc00"`, "\uFFFD"},
		{`[]`, []any{}},
		{`[1,[2.5,"x"],{"a":null}]`, []any{int64(1), []any{2.5, "x"}, map[string]any{"a": nil}}},
		{`01`, errMalformed},
		{`1.`, errMalformed},
		{`.5`, errMalformed},
		{`1e`, errMalformed},
		{`-`, errMalformed},
		{`+1`, errMalformed},
		{`tru`, errMalformed},
		{`"\x"`, errMalformed},
		{`"\u12"`, errMalformed},
		{`[1,]`, errMalformed},
	}
	for _, tt := range tests {
		got, err := native(convert([]byte(tt.raw)))
		if _, ok := tt.want.(error); ok {
			if err == nil {
				t.Errorf("convert(%s): got %v, want an error", tt.raw, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("convert(%s): got %#v, %v; want %#v", tt.raw, got, err, tt.want)
		}
	}
}

// TestGoldenRecords checks every record of the decoder's golden files,
// compact as the encoder writes them and indented as the files hold them:
// each field read lazily, and the whole object, must be what encoding/json
// gives a receiver.
func TestGoldenRecords(t *testing.T) {
	records := goldenRecords(t)
	if len(records) < 20 {
		t.Fatalf("got %d golden records, want the golden files' records", len(records))
	}
	for i, rec := range records {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if err := sameAsReceiver(rec, true); err != nil {
				t.Fatalf("%v\nrecord: %s", err, rec)
			}
		})
	}
}

// goldenRecords returns the non-null records of testdata/golden, compact
// and as indented in the files.
func goldenRecords(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob("../testdata/golden/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	var records [][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var msgs []struct {
			Record  json.RawMessage `json:"record"`
			Changes json.RawMessage `json:"changes"`
		}
		if err := json.Unmarshal(data, &msgs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, m := range msgs {
			for _, raw := range []json.RawMessage{m.Record, m.Changes} {
				if len(raw) == 0 || string(raw) == "null" {
					continue
				}
				var compact bytes.Buffer
				if err := json.Compact(&compact, raw); err != nil {
					t.Fatal(err)
				}
				records = append(records, compact.Bytes(), raw)
			}
		}
	}
	return records
}

// sameAsReceiver checks that data, a JSON object, reads through object
// (field by field and whole) exactly as encoding/json decodes it, numbers
// taken as int when they parse as int64. unique is passed to object; with
// duplicate keys only unique == false agrees with encoding/json.
func sameAsReceiver(data []byte, unique bool) error {
	want, err := receiverValue(data)
	if err != nil {
		return fmt.Errorf("reference decode: %w", err)
	}
	wantMap, ok := want.(map[string]any)
	if !ok {
		return fmt.Errorf("not an object")
	}
	o := &object{raw: data, unique: unique}
	for k, wantVal := range wantMap {
		v, found := o.Find(types.String(k))
		if !found {
			return fmt.Errorf("key %q: not found (%v)", k, v)
		}
		got, err := native(v)
		if err != nil || !reflect.DeepEqual(got, wantVal) {
			return fmt.Errorf("key %q: got %#v, %v; want %#v", k, got, err, wantVal)
		}
	}
	got, err := native(o)
	if err != nil || !reflect.DeepEqual(got, want) {
		return fmt.Errorf("whole object: got %#v, %v; want %#v", got, err, want)
	}
	return nil
}

// receiverValue decodes data with encoding/json, as a receiver would, and
// types numbers by the rule filters use.
func receiverValue(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return typeNumbers(v), nil
}

func typeNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return n
		}
		f, _ := strconv.ParseFloat(string(v), 64) // ±Inf past the float64 range
		return f
	case []any:
		for i := range v {
			v[i] = typeNumbers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = typeNumbers(v[k])
		}
	}
	return v
}

// native turns a CEL value into Go values of exactly its types: int64,
// float64, string, bool, nil, []any and map[string]any.
func native(v ref.Val) (any, error) {
	switch v := v.(type) {
	case *types.Err:
		return nil, v
	case types.Int:
		return int64(v), nil
	case types.Double:
		return float64(v), nil
	case types.String:
		return string(v), nil
	case types.Bool:
		return bool(v), nil
	case types.Null:
		return nil, nil
	case traits.Lister:
		n, ok := v.Size().(types.Int)
		if !ok {
			return nil, fmt.Errorf("list size: %v", v.Size())
		}
		list := make([]any, 0, n)
		for i := range int64(n) {
			e, err := native(v.Get(types.Int(i)))
			if err != nil {
				return nil, err
			}
			list = append(list, e)
		}
		return list, nil
	case traits.Mapper:
		if size := v.Size(); types.IsError(size) {
			return nil, size.(*types.Err)
		}
		m := make(map[string]any)
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			e, err := native(v.Get(k))
			if err != nil {
				return nil, err
			}
			m[string(k.(types.String))] = e
		}
		return m, nil
	}
	return nil, fmt.Errorf("unexpected CEL value %T", v)
}

// fuzzFilters exercise field lookup, nested access, iteration, equality
// and presence on whatever the fuzzer puts in record and changes.
var fuzzFilters = []string{
	`record.id == 1`,
	`has(record.a) && record.a.b[0] == "x"`,
	`size(record) > 2 && record.exists(k, k == "id")`,
	`record == {"id": 1}`,
	`record.map(k, record[k]).size() >= 0`,
	`has(changes.status) || "a\"b" in record`,
	`record.all(k, type(record[k]) != null_type)`,
	`metadata.table_name == "t" && action == "update"`,
}

// FuzzMatch feeds JSON (seeded with the golden records) to every filter as
// record and changes: no input may panic, and a valid JSON object must read
// exactly as encoding/json decodes it. Run with
//
//	go test ./filter -run '^$' -fuzz FuzzMatch -fuzztime 60s
func FuzzMatch(f *testing.F) {
	for _, rec := range goldenRecords(f) {
		f.Add(rec)
	}
	for _, s := range []string{
		testRecord, `{}`, `{"id":1}`, `{"a":{"b":["x"]}}`, `{"k":1,"k":2}`, `[1,2]`, `null`, `{"a":`, `{"a":"\ud800"}`,
		`{"a\"b":1,"id":1,"x":[[[[[]]]]]}`, `{"n":1e400,"m":-0,"i":123456789012345678901234567890}`,
	} {
		f.Add([]byte(s))
	}
	exprs := make([]*Expr, len(fuzzFilters))
	for i, src := range fuzzFilters {
		e, err := Compile(src)
		if err != nil {
			f.Fatalf("Compile(%q): %v", src, err)
		}
		exprs[i] = e.Bind("fuzz")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &change.Message{Action: change.Update, Schema: "public", Table: "t", Record: data, Changes: data}
		for _, e := range exprs {
			_, _ = e.Match(m) // errors are expected for malformed JSON; panics are not
		}
		if !json.Valid(data) || !utf8.Valid(data) || !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")) {
			return
		}
		if err := sameAsReceiver(data, false); err != nil {
			t.Fatalf("%v\ninput: %s", err, data)
		}
	})
}
