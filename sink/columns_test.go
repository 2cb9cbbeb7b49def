package sink

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

var usersTable = config.Table{Schema: "public", Name: "users"}

func usersRel(names ...string) *change.Relation {
	rel := &change.Relation{Schema: "public", Name: "users", Table: "public.users", Identity: 'd'}
	for _, n := range names {
		rel.Columns = append(rel.Columns, change.Column{Name: n, Identity: n == "id"})
	}
	return rel
}

// userMsg builds a message of rel with the given record and changes
// (column, JSON value pairs; changes nil for none).
func userMsg(rel *change.Relation, a change.Action, record, changes []string, toast ...string) *change.Message {
	m := &change.Message{Action: a, Schema: rel.Schema, Table: rel.Name, Rel: rel, Key: "k", UnchangedToast: toast}
	m.Record, m.RecordFields = obj(rel, record...)
	if changes != nil {
		m.Changes, m.ChangesFields = obj(rel, changes...)
	}
	return m
}

// object decodes raw and checks that every field locates its column's
// value, so a rebuilt object stays usable by filters and group_by.
func object(t *testing.T, rel *change.Relation, raw []byte, fields []change.Field) map[string]json.RawMessage {
	t.Helper()
	if raw == nil {
		return nil
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", raw, err)
	}
	if len(fields) != len(got) {
		t.Errorf("%s: got %d fields, want one per key (%d)", raw, len(fields), len(got))
	}
	for _, f := range fields {
		name := rel.Columns[f.Col].Name
		if v := string(raw[f.Start:f.End]); v != string(got[name]) {
			t.Errorf("%s: field of %s locates %q, want %s", raw, name, v, got[name])
		}
	}
	return got
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestColumnsApply(t *testing.T) {
	rel := usersRel("id", "email", "password_hash", "bio")
	insert := userMsg(rel, change.Insert, []string{"id", "1", "email", `"a@x"`, "password_hash", `"h1"`, "bio", `"hi"`}, nil)
	update := userMsg(rel, change.Update, []string{"id", "1", "email", `"b@x"`, "password_hash", `"h2"`, "bio", `"hi"`},
		[]string{"email", `"a@x"`, "password_hash", `"h1"`})
	deleteKey := userMsg(rel, change.Delete, []string{"id", "1"}, nil)
	toast := userMsg(rel, change.Update, []string{"id", "1", "email", `"c@x"`}, []string{}, "password_hash", "bio")
	toastOnly := userMsg(rel, change.Update, []string{"id", "1", "email", `"c@x"`}, []string{}, "password_hash")
	truncate := &change.Message{Action: change.Truncate, Schema: "public", Table: "users", Rel: rel, Key: "public.users"}
	emitted := &change.Message{Action: change.Emitted, Prefix: "audit", Content: []byte(`"x"`)}

	exclude := map[config.Table]config.Columns{usersTable: {Exclude: []string{"password_hash"}}}
	include := map[config.Table]config.Columns{usersTable: {Include: []string{"id", "email"}}}
	tests := []struct {
		name        string
		sel         map[config.Table]config.Columns
		m           *change.Message
		same        bool // Apply returns m itself
		record      []string
		changes     []string // nil: changes stay null
		toast       []string
		wantChanges string // the changes object, when it is checked whole
	}{
		{name: "exclude: insert", sel: exclude, m: insert, record: []string{"bio", "email", "id"}},
		{name: "exclude: update with changes", sel: exclude, m: update, record: []string{"bio", "email", "id"}, changes: []string{"email"}},
		{name: "exclude: delete of the key only", sel: exclude, m: deleteKey, same: true, record: []string{"id"}},
		{name: "exclude: unchanged toast", sel: exclude, m: toast, record: []string{"email", "id"}, changes: []string{}, toast: []string{"bio"}},
		{name: "exclude: the only unchanged toast", sel: exclude, m: toastOnly, record: []string{"email", "id"}, changes: []string{}},
		{name: "exclude: truncate", sel: exclude, m: truncate, same: true},
		{name: "exclude: logical message", sel: exclude, m: emitted, same: true},
		{name: "include: insert", sel: include, m: insert, record: []string{"email", "id"}},
		{name: "include: update with changes", sel: include, m: update, record: []string{"email", "id"}, changes: []string{"email"}, wantChanges: `{"email":"a@x"}`},
		{name: "include: delete of the key only", sel: include, m: deleteKey, same: true, record: []string{"id"}},
		{name: "include: unchanged toast", sel: include, m: toast, record: []string{"email", "id"}, changes: []string{}},
		{name: "include: unchanged toast of an included column", sel: include,
			m: userMsg(rel, change.Update, []string{"id", "1"}, []string{}, "email"), same: true, record: []string{"id"}, changes: []string{}, toast: []string{"email"}},
		{name: "include: only the old value of a left-out column changed", sel: include,
			m:      userMsg(rel, change.Update, []string{"id", "1", "email", `"a@x"`, "password_hash", `"h2"`, "bio", `"hi"`}, []string{"password_hash", `"h1"`}),
			record: []string{"email", "id"}, changes: []string{}, wantChanges: `{}`},
		{name: "exclude: a column the table lacks", sel: map[config.Table]config.Columns{usersTable: {Exclude: []string{"nope"}}}, m: update, same: true,
			record: []string{"bio", "email", "id", "password_hash"}, changes: []string{"email", "password_hash"}},
		{name: "include: a column the table lacks", sel: map[config.Table]config.Columns{usersTable: {Include: []string{"id", "nope"}}}, m: insert, record: []string{"id"}},
		{name: "another table", sel: map[config.Table]config.Columns{{Schema: "public", Name: "orders"}: {Exclude: []string{"password_hash"}}}, m: insert, same: true,
			record: []string{"bio", "email", "id", "password_hash"}},
		{name: "no selection", sel: nil, m: insert, same: true, record: []string{"bio", "email", "id", "password_hash"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := *tt.m
			before.Record = slices.Clone(tt.m.Record)
			got := NewColumns(tt.sel).Apply(tt.m)
			if (got == tt.m) != tt.same {
				t.Errorf("got the message itself %t, want %t", got == tt.m, tt.same)
			}
			if !reflect.DeepEqual(*tt.m, before) {
				t.Errorf("Apply modified its message:\n got %+v\nwant %+v", *tt.m, before)
			}
			if tt.m.Record == nil {
				if got.Record != nil {
					t.Errorf("record: got %s, want null", got.Record)
				}
				return
			}
			if k := keys(object(t, got.Rel, got.Record, got.RecordFields)); !slices.Equal(k, tt.record) {
				t.Errorf("record %s: got keys %v, want %v", got.Record, k, tt.record)
			}
			switch {
			case tt.changes == nil && got.Changes != nil:
				t.Errorf("changes: got %s, want null", got.Changes)
			case tt.changes != nil:
				if k := keys(object(t, got.Rel, got.Changes, got.ChangesFields)); !slices.Equal(k, tt.changes) {
					t.Errorf("changes %s: got keys %v, want %v", got.Changes, k, tt.changes)
				}
			}
			if tt.wantChanges != "" && string(got.Changes) != tt.wantChanges {
				t.Errorf("changes: got %s, want %s", got.Changes, tt.wantChanges)
			}
			if !slices.Equal(got.UnchangedToast, tt.toast) {
				t.Errorf("unchanged toast: got %q, want %q", got.UnchangedToast, tt.toast)
			}
			if got.Pos != tt.m.Pos || got.Key != tt.m.Key || got.Action != tt.m.Action {
				t.Errorf("got position %v, key %q, action %s; want them unchanged (%v, %q, %s)", got.Pos, got.Key, got.Action, tt.m.Pos, tt.m.Key, tt.m.Action)
			}
		})
	}
}

// TestColumnsDelivered checks the JSON a receiver gets: no trace of a
// left-out column, and the other values byte for byte.
func TestColumnsDelivered(t *testing.T) {
	rel := usersRel("id", "password_hash", "email")
	m := userMsg(rel, change.Update, []string{"id", "1", "password_hash", `"secret-new"`, "email", `"e\"q"`},
		[]string{"password_hash", `"secret-old"`, "email", `"old"`}, "password_hash")
	got := string(NewColumns(map[config.Table]config.Columns{usersTable: {Exclude: []string{"password_hash"}}}).Apply(m).AppendJSON(nil, "s"))
	if strings.Contains(got, "password_hash") || strings.Contains(got, "secret") {
		t.Errorf("delivered JSON shows the left-out column: %s", got)
	}
	for _, want := range []string{`"record":{"id":1,"email":"e\"q"}`, `"changes":{"email":"old"}`} {
		if !strings.Contains(got, want) {
			t.Errorf("delivered JSON lacks %s: %s", want, got)
		}
	}
	if strings.Contains(got, "unchanged_toast_columns") {
		t.Errorf("an emptied unchanged_toast_columns is still delivered: %s", got)
	}
}

// TestColumnsRelationChange: after ALTER TABLE the decoder hands a new
// Relation; the columns to leave out are found anew, by name.
func TestColumnsRelationChange(t *testing.T) {
	c := NewColumns(map[config.Table]config.Columns{usersTable: {Exclude: []string{"password_hash"}}})
	before := usersRel("id", "password_hash", "email")
	after := usersRel("id", "email", "note", "password_hash") // a column added, password_hash re-added at the end
	renamed := usersRel("id", "pw", "email")                  // RENAME COLUMN password_hash TO pw
	for _, tt := range []struct {
		rel    *change.Relation
		record []string
		want   []string
	}{
		{before, []string{"id", "1", "password_hash", `"h"`, "email", `"e"`}, []string{"email", "id"}},
		{after, []string{"id", "1", "email", `"e"`, "note", `"n"`, "password_hash", `"h"`}, []string{"email", "id", "note"}},
		{renamed, []string{"id", "1", "pw", `"h"`, "email", `"e"`}, []string{"email", "id", "pw"}},
		{before, []string{"id", "1", "password_hash", `"h"`, "email", `"e"`}, []string{"email", "id"}}, // a message decoded before the change
	} {
		got := c.Apply(userMsg(tt.rel, change.Insert, tt.record, nil))
		if k := keys(object(t, tt.rel, got.Record, got.RecordFields)); !slices.Equal(k, tt.want) {
			t.Errorf("columns %v: got keys %v, want %v", tt.rel.Columns, k, tt.want)
		}
	}
	if n := len(c.tables); n != 1 {
		t.Errorf("cache holds %d tables, want 1", n)
	}
}

func TestColumnsApplyAllocs(t *testing.T) {
	rel := usersRel("id", "email", "password_hash")
	c := NewColumns(map[config.Table]config.Columns{usersTable: {Exclude: []string{"password_hash"}}})
	keep := userMsg(rel, change.Delete, []string{"id", "1"}, nil)
	drop := userMsg(rel, change.Update, []string{"id", "1", "email", `"e"`, "password_hash", `"h"`}, []string{"password_hash", `"o"`})
	c.Apply(keep) // resolve the relation once
	if n := testing.AllocsPerRun(100, func() { c.Apply(keep) }); n != 0 {
		t.Errorf("Apply that removes nothing: got %v allocations, want 0", n)
	}
	// The copy, the bytes of both objects and their fields.
	if n := testing.AllocsPerRun(100, func() { c.Apply(drop) }); n > 3 {
		t.Errorf("Apply that removes a column: got %v allocations, want at most 3", n)
	}
}

// wideRow is a twelve-column row, as the filter benchmarks use.
func wideRow() (*change.Relation, []string) {
	var names, kv []string
	for i := range 12 {
		name := fmt.Sprintf("column_%d", i)
		names = append(names, name)
		kv = append(kv, name, fmt.Sprintf(`"value of column %d, long enough to be realistic"`, i))
	}
	return usersRel(names...), kv
}

func BenchmarkColumnsApply(b *testing.B) {
	rel, kv := wideRow()
	update := userMsg(rel, change.Update, kv, kv[:6])
	for _, bb := range []struct {
		name string
		sel  config.Columns
	}{
		{"nothing to remove", config.Columns{Exclude: []string{"absent"}}},
		{"exclude one of twelve", config.Columns{Exclude: []string{"column_1"}}},
		{"include two of twelve", config.Columns{Include: []string{"column_0", "column_5"}}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			c := NewColumns(map[config.Table]config.Columns{usersTable: bb.sel})
			b.ReportAllocs()
			for b.Loop() {
				c.Apply(update)
			}
		})
	}
}
