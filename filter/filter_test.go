package filter

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
)

// The record below is written as the decoder writes values: numbers as JSON
// numbers, numeric as strings, jsonb embedded, arrays as arrays, bytea as
// base64, timestamps as RFC 3339 strings; and with keys and strings that
// need escapes.
const testRecord = `{"id":42,"status":"paid","amount":"19.90","gift":false,` +
	`"maxint":9223372036854775807,"minint":-9223372036854775808,"big":9223372036854775808,` +
	`"ratio":1.5,"exp":1e3,"neg":-7,"tags":["a","b"],"grid":[[1,2],[3]],` +
	`"meta":{"k":1,"nested":{"deep":[true,null]}},"dup":{"k":1,"k":2},"nothing":null,` +
	`"blob":"3q2+7w==","at":"2026-11-26T11:20:00.123456Z",` +
	`"a\"b":"quote key","caf\u00e9":"escaped key","text":"line\nbreak \u00e9 \ud83d\ude00 \"q\"","lone":"\ud800x"}`

func update() *change.Message {
	return &change.Message{
		Action: change.Update, Schema: "public", Table: "orders",
		Record:     []byte(testRecord),
		Changes:    []byte(`{"status":"new"}`),
		Pos:        change.Position{CommitLSN: 0x16B3748, Idx: 3},
		CommitTime: time.Date(2026, 11, 26, 12, 20, 0, 123456000, time.FixedZone("CET", 3600)),
		XID:        771,
	}
}

func deleteKeyOnly() *change.Message {
	return &change.Message{Action: change.Delete, Schema: "public", Table: "orders",
		Record: []byte(`{"id":42}`), Pos: change.Position{CommitLSN: 0x16B3750}, XID: 772}
}

func truncate() *change.Message {
	return &change.Message{Action: change.Truncate, Schema: "public", Table: "orders", XID: 773}
}

// backfilled is a row a backfill read.
func backfilled() *change.Message {
	m := toastInsert()
	m.Action, m.UnchangedToast, m.BackfillID = change.Read, nil, "bf_1"
	return m
}

func toastInsert() *change.Message {
	return &change.Message{Action: change.Insert, Schema: "app", Table: "docs",
		Record: []byte(`{ "id" : 1 , "title" : "t" }`), UnchangedToast: []string{"body", "big"}}
}

func logicalMessage() *change.Message {
	return &change.Message{Action: change.Emitted, Prefix: "audit", Content: []byte(`"hello"`), XID: 9}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name    string
		msg     func() *change.Message
		expr    string
		want    bool
		wantErr string // substring of the evaluation error; "" for none
	}{
		// record
		{"string field", update, `record.status == "paid"`, true, ""},
		{"string field differs", update, `record.status == "new"`, false, ""},
		{"not equal", update, `record.status != "paid"`, false, ""},
		{"int", update, `record.id == 42 && type(record.id) == int`, true, ""},
		{"int equals double", update, `record.id == 42.0`, true, ""},
		{"int compared to double", update, `record.id > 41.5 && record.id < 42.5`, true, ""},
		{"negative int", update, `record.neg == -7`, true, ""},
		{"max int64 stays int", update, `record.maxint == 9223372036854775807 && type(record.maxint) == int`, true, ""},
		{"min int64 stays int", update, `record.minint == -9223372036854775807 - 1 && type(record.minint) == int`, true, ""},
		{"beyond int64 is double", update, `type(record.big) == double && record.big == 9223372036854775808.0`, true, ""},
		{"fraction is double", update, `type(record.ratio) == double && record.ratio == 1.5`, true, ""},
		{"exponent is double", update, `type(record.exp) == double && record.exp == 1000`, true, ""},
		{"numeric is a string", update, `record.amount == "19.90" && type(record.amount) == string`, true, ""},
		{"numeric converted", update, `double(record.amount) > 19.5`, true, ""},
		{"bool", update, `record.gift == false`, true, ""},
		{"bool result", update, `record.gift`, false, ""},
		{"negated bool result", update, `!record.gift`, true, ""},
		{"bytea is base64", update, `record.blob == "3q2+7w=="`, true, ""},
		{"timestamp is a string", update, `timestamp(record.at) == timestamp("2026-11-26T11:20:00.123456Z")`, true, ""},
		{"array", update, `record.tags == ["a", "b"] && size(record.tags) == 2 && record.tags[1] == "b"`, true, ""},
		{"in array", update, `"b" in record.tags`, true, ""},
		{"nested array", update, `record.grid[0][1] == 2 && record.grid[1] == [3]`, true, ""},
		{"array comprehension", update, `record.tags.exists(t, t == "b") && record.tags.all(t, size(t) == 1)`, true, ""},
		{"jsonb field", update, `record.meta.k == 1`, true, ""},
		{"jsonb nested", update, `record.meta.nested.deep[0] == true && record.meta.nested.deep[1] == null`, true, ""},
		{"jsonb equality", update, `record.meta == {"k": 1, "nested": {"deep": [true, null]}}`, true, ""},
		{"jsonb inequality", update, `record.meta == {"k": 1}`, false, ""},
		{"duplicate json key: last wins", update, `record.dup.k == 2 && size(record.dup) == 1`, true, ""},
		{"null field", update, `record.nothing == null && has(record.nothing)`, true, ""},
		{"key with a quote", update, `record["a\"b"] == "quote key"`, true, ""},
		{"key with a unicode escape", update, `record["café"] == "escaped key"`, true, ""},
		{"string with escapes", update, `record.text == "line\nbreak é 😀 \"q\""`, true, ""},
		{"lone surrogate", update, `record.lone == "\uFFFDx"`, true, ""},
		{"size", update, `size(record) == 21`, true, ""},
		{"in record", update, `"status" in record && !("missing" in record)`, true, ""},
		{"iterate keys", update, `record.exists(k, k == "a\"b") && record.all(k, k != "")`, true, ""},
		{"map keys in order", update, `record.map(k, k)[0] == "id" && record.map(k, k)[20] == "lone"`, true, ""},
		{"has", update, `has(record.status) && !has(record.missing)`, true, ""},
		{"missing field", update, `record.missing == 1`, false, "no such key: missing"},
		{"string where a map is needed", update, `record.status.x == 1`, false, "no such key"},
		{"result is not a bool", update, `record.status`, false, "type is string, not bool"},
		{"whitespace in JSON", toastInsert, `record.title == "t" && record.id == 1 && size(record) == 2`, true, ""},

		// changes
		{"changes field", update, `changes.status == "new" && changes != null`, true, ""},
		{"changes without the column", update, `has(changes.amount)`, false, ""},
		{"changes null on delete", deleteKeyOnly, `changes == null`, true, ""},
		{"changes null: has", deleteKeyOnly, `has(changes.status)`, false, ""},
		{"changes null: field", deleteKeyOnly, `changes.status == "new"`, false, "no such key"},

		// action
		{"action", update, `action == "update"`, true, ""},
		{"action in list", deleteKeyOnly, `action in ["insert", "delete"]`, true, ""},
		{"action differs", deleteKeyOnly, `action == "update"`, false, ""},
		{"message action", logicalMessage, `action == "message" && prefix == "audit"`, true, ""},
		{"prefix empty on rows", update, `prefix == ""`, true, ""},

		// metadata
		{"table", update, `metadata.table_schema == "public" && metadata.table_name == "orders"`, true, ""},
		{"commit_lsn", update, `metadata.commit_lsn == "0/16B3748"`, true, ""},
		{"commit_idx", update, `metadata.commit_idx == 3 && type(metadata.commit_idx) == int`, true, ""},
		{"commit_timestamp in UTC as in JSON", update, `metadata.commit_timestamp == "2026-11-26T11:20:00.123456Z"`, true, ""},
		{"commit_timestamp as timestamp", update, `timestamp(metadata.commit_timestamp) > timestamp("2026-01-01T00:00:00Z")`, true, ""},
		{"xid", update, `metadata.xid == 771 && type(metadata.xid) == int`, true, ""},
		{"idempotency_key", update, `metadata.idempotency_key == "0/16B3748:3"`, true, ""},
		{"sink", update, `metadata.sink == "orders"`, true, ""},
		{"backfill_id", backfilled, `action == "read" && metadata.backfill_id == "bf_1" && metadata.idempotency_key.startsWith("bf_1:")`, true, ""},
		{"no backfill_id on changes", update, `has(metadata.backfill_id)`, false, ""},
		{"no toast columns", update, `has(metadata.unchanged_toast_columns)`, false, ""},
		{"toast columns", toastInsert, `"big" in metadata.unchanged_toast_columns && size(metadata.unchanged_toast_columns) == 2`, true, ""},
		{"metadata size", update, `size(metadata) == 8`, true, ""},
		{"metadata keys", toastInsert, `metadata.exists(k, k == "unchanged_toast_columns")`, true, ""},
		{"message has no table", logicalMessage, `!has(metadata.table_name) && !has(metadata.table_schema) && metadata.xid == 9`, true, ""},
		{"missing metadata key", update, `metadata.nope == 1`, false, "no such key: nope"},

		// a delete carries only the key
		{"delete: missing column is an error", deleteKeyOnly, `record.status == "paid"`, false, "no such key: status"},
		{"delete: has guards", deleteKeyOnly, `has(record.status) && record.status == "paid"`, false, ""},
		{"delete: has guards, update passes", update, `has(record.status) && record.status == "paid"`, true, ""},
		{"delete: action short-circuits", deleteKeyOnly, `action == "delete" || record.status == "paid"`, true, ""},
		{"delete: key column", deleteKeyOnly, `record.id == 42`, true, ""},

		// a truncate has no record
		{"truncate: record is null", truncate, `record == null`, true, ""},
		{"truncate: has", truncate, `has(record.id)`, false, ""},
		{"truncate: field", truncate, `record.id == 1`, false, "no such key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.expr, err)
			}
			got, err := e.Bind("orders").Match(tt.msg())
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Match(%q): got error %v, want %v", tt.expr, err, tt.want)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Match(%q): got error %v, want one containing %q", tt.expr, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Match(%q): got %v, want %v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name      string
		expr      string
		line, col int
		msg       string // substring
	}{
		{"syntax", `record.status == `, 1, 18, "Syntax error"},
		{"syntax on a later line", "record.status == \"paid\" &&\n  (action == ", 2, 14, "Syntax error"},
		{"undeclared variable", `row.status == "paid"`, 1, 1, "undeclared reference to 'row'; a filter can use action, record, changes, metadata, prefix"},
		{"undeclared variable on a later line", "record.status == \"paid\"\n  && nope == 1", 2, 6, "undeclared reference to 'nope'"},
		{"type mismatch", `action == 1`, 1, 8, "no matching overload for '_==_' applied to '(string, int)'"},
		{"not a bool", `1 + 2`, 1, 1, "the expression's type is int, not bool"},
		{"string is not a bool", "\n  \"paid\"", 2, 3, "the expression's type is string, not bool"},
		{"map is not a bool", `metadata`, 1, 1, "type is map(string, dyn), not bool"},
		{"unknown function", `record.status.shout()`, 1, 20, "undeclared reference to 'shout'"},
		{"column counts characters", `"é😀" == 1`, 1, 6, "no matching overload"},
		{"empty", ``, 1, 1, "Syntax error"},
		{"too long", strings.Repeat("true && ", MaxLength/8) + "true", 1, 1, "at most 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.expr)
			var ferr *Error
			if !errors.As(err, &ferr) {
				t.Fatalf("Compile(%q): got %v, want *filter.Error", tt.expr, err)
			}
			if ferr.Line != tt.line || ferr.Col != tt.col || !strings.Contains(ferr.Msg, tt.msg) {
				t.Fatalf("Compile(%q): got %d:%d %q, want %d:%d containing %q", tt.expr, ferr.Line, ferr.Col, ferr.Msg, tt.line, tt.col, tt.msg)
			}
		})
	}
}

// TestCostLimit checks that an expression whose work grows with the
// message is stopped at run time, that one that always costs too much is a
// compile error, and that one CEL can bound is compiled without run-time
// cost tracking.
func TestCostLimit(t *testing.T) {
	e, err := Compile(`record.n.all(x, record.n.all(y, record.n.all(z, x + y + z > 0)))`)
	if err != nil {
		t.Fatal(err)
	}
	m := &change.Message{Action: change.Insert, Record: []byte(`{"n":[` + strings.Repeat("1,", 199) + `1]}`)}
	if ok, err := e.Match(m); ok || err == nil || !strings.Contains(err.Error(), "cost limit exceeded") {
		t.Fatalf("got %v, %v; want false and a cost limit error", ok, err)
	}
	m.Record = []byte(`{"n":[1,2,3]}`)
	if ok, err := e.Match(m); !ok || err != nil {
		t.Fatalf("small input: got %v, %v; want true", ok, err)
	}

	list := "[" + strings.Repeat("1,", 199) + "1]"
	_, err = Compile(list + ".map(x, " + list + ".map(y, " + list + ".map(z, z))).size() > 0")
	var ferr *Error
	if !errors.As(err, &ferr) || !strings.Contains(ferr.Msg, "more than the limit of 1000000") {
		t.Fatalf("got %v, want a compile error about the cost limit", err)
	}

	for expr, tracked := range map[string]bool{
		`record.status == "paid"`:                  false,
		`has(record.a) && record.a in [1, 2, 3]`:   false,
		`metadata.table_name == "orders"`:          false,
		`record.amount > 10 && action == "insert"`: false,
		`record.tags.exists(t, t == "b")`:          true, // as long as the array
		`record.text.contains("x")`:                true, // as long as the string
		`record.status == changes.status`:          true, // as long as the strings
	} {
		e, err := Compile(expr)
		if err != nil {
			t.Fatal(err)
		}
		if e.tracked != tracked {
			t.Errorf("%s: got cost tracked %v, want %v", expr, e.tracked, tracked)
		}
	}
}

func TestNilExprMatchesEverything(t *testing.T) {
	var e *Expr
	if ok, err := e.Match(update()); !ok || err != nil {
		t.Fatalf("got %v, %v; want true, nil", ok, err)
	}
	if e.Bind("x") != nil || e.String() != "" {
		t.Fatal("a nil filter must stay nil when bound")
	}
}

func TestBindKeepsTheOriginal(t *testing.T) {
	e, err := Compile(`metadata.sink == "a"`)
	if err != nil {
		t.Fatal(err)
	}
	a, b := e.Bind("a"), e.Bind("b")
	for _, c := range []struct {
		e    *Expr
		want bool
	}{{a, true}, {b, false}, {e, false}} {
		if got, err := c.e.Match(update()); got != c.want || err != nil {
			t.Errorf("got %v, %v; want %v", got, err, c.want)
		}
	}
	if a.String() != `metadata.sink == "a"` {
		t.Errorf("got %q, want the expression as written", a.String())
	}
}

// TestMatchConcurrent evaluates one filter from several goroutines (run
// with -race): activations come from a pool and must not be shared.
func TestMatchConcurrent(t *testing.T) {
	e, err := Compile(`has(record.status) && record.status == "paid" && metadata.xid > 0`)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*change.Message{update(), deleteKeyOnly()}
	want := []bool{true, false}
	done := make(chan error)
	for g := range 4 {
		go func() {
			for i := range 500 {
				k := (g + i) % 2
				if got, err := e.Match(msgs[k]); got != want[k] || err != nil {
					done <- errors.New("wrong result")
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestMatchThroughFields: with the decoder's field offsets the filter
// reads the same values as by scanning the JSON.
func TestMatchThroughFields(t *testing.T) {
	rel := &change.Relation{Schema: "public", Name: "orders", Table: "public.orders", Identity: 'd',
		Columns: []change.Column{{Name: "id", Identity: true}, {Name: "status"}, {Name: "meta"}}}
	record := []byte(`{"id":7,"status":"paid","meta":  {"k": [1, 2]} }`)
	fields := []change.Field{{Col: 0, Start: 6, End: 7}, {Col: 1, Start: 17, End: 23}, {Col: 2, Start: 31, End: 47}}
	for _, f := range fields {
		if !json.Valid(record[f.Start:f.End]) {
			t.Fatalf("bad test field %s", record[f.Start:f.End])
		}
	}
	with := &change.Message{Action: change.Insert, Schema: "public", Table: "orders", Rel: rel, Record: record, RecordFields: fields}
	without := &change.Message{Action: change.Insert, Schema: "public", Table: "orders", Record: record}
	for _, expr := range []string{`record.status == "paid"`, `record.id == 7`, `record.meta.k[1] == 2`, `has(record.nope)`, `record.status == "new"`} {
		e, err := Compile(expr)
		if err != nil {
			t.Fatal(err)
		}
		a, errA := e.Match(with)
		b, errB := e.Match(without)
		if a != b || (errA == nil) != (errB == nil) {
			t.Errorf("%s: got %t, %v with fields and %t, %v without", expr, a, errA, b, errB)
		}
	}
}
