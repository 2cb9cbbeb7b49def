package backfill

import (
	"testing"

	"github.com/walhook/walhook/change"
)

// msg builds a message of table t (id, n, big) whose record holds the
// given columns' JSON values, in that order.
func msg(a change.Action, cols []string, vals ...string) *change.Message {
	rel := &change.Relation{Schema: "public", Name: "t", Table: "public.t",
		Columns: []change.Column{{Name: "id", Identity: true}, {Name: "n"}, {Name: "big"}}}
	m := &change.Message{Action: a, Schema: "public", Table: "t", Rel: rel, Key: "k"}
	rec := []byte{'{'}
	for i, c := range cols {
		if i > 0 {
			rec = append(rec, ',')
		}
		rec = append(rec, '"')
		rec = append(rec, c...)
		rec = append(rec, '"', ':')
		start := len(rec)
		rec = append(rec, vals[i]...)
		m.RecordFields = append(m.RecordFields, change.Field{Col: uint32(rel.Column(c)), Start: uint32(start), End: uint32(len(rec))})
	}
	m.Record = append(rec, '}')
	return m
}

// TestSettle: a read is kept when its sink took no change of the row, left
// out when the changes the sink took carry the row's newer state, and
// merged with them when they left a column out (unchanged TOAST).
func TestSettle(t *testing.T) {
	all := []string{"id", "n", "big"}
	read := func() *change.Message { return msg(change.Read, all, "1", "0", `"old-toast"`) }
	upd := func(n string) *change.Message { // an update that did not touch big
		m := msg(change.Update, []string{"id", "n"}, "1", n)
		m.UnchangedToast = []string{"big"}
		return m
	}
	for _, tt := range []struct {
		name    string
		changes []*change.Message
		want    string // the record the sink gets; "" for none
	}{
		{"no change: the read", nil, `{"id":1,"n":0,"big":"old-toast"}`},
		{"a full update: left out", []*change.Message{msg(change.Update, all, "1", "5", `"new"`)}, ""},
		{"a delete: left out", []*change.Message{upd("3"), msg(change.Delete, []string{"id"}, "1")}, ""},
		{"delete and insert again: left out", []*change.Message{msg(change.Delete, []string{"id"}, "1"), msg(change.Insert, all, "1", "0", `"x"`)}, ""},
		{"unchanged TOAST: merged", []*change.Message{upd("3")}, `{"id":1,"n":3,"big":"old-toast"}`},
		{"unchanged TOAST twice: the newest values", []*change.Message{upd("3"), upd("4")}, `{"id":1,"n":4,"big":"old-toast"}`},
		{"a full update, then unchanged TOAST: left out", []*change.Message{msg(change.Update, all, "1", "5", `"new"`), upd("6")}, ""},
		{"deleted, then unchanged TOAST is impossible without an insert", []*change.Message{msg(change.Delete, []string{"id"}, "1"), msg(change.Insert, all, "1", "0", `"x"`), upd("7")}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := read()
			got := Settle(r, tt.changes)
			switch {
			case tt.want == "" && got != nil:
				t.Fatalf("got %s, want the read left out", got.Record)
			case tt.want != "" && got == nil:
				t.Fatalf("got the read left out, want %s", tt.want)
			case got != nil && string(got.Record) != tt.want:
				t.Fatalf("got %s, want %s", got.Record, tt.want)
			}
			if string(r.Record) != `{"id":1,"n":0,"big":"old-toast"}` {
				t.Errorf("the read was changed: %s", r.Record)
			}
			if got != nil {
				for i, f := range got.RecordFields {
					v, _ := change.Lookup(got.Record, got.RecordFields, int(f.Col))
					if string(v) != string(got.Record[f.Start:f.End]) || int(f.Col) != i {
						t.Errorf("field %d: %+v does not locate its value in %s", i, f, got.Record)
					}
				}
			}
		})
	}
}
