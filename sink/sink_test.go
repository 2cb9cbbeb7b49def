package sink

import (
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

func TestFilter(t *testing.T) {
	f := NewFilter(config.Sink{Tables: []config.Table{{Schema: "public", Name: "orders"}}, Actions: []string{"insert", "delete"}}, nil)
	tests := []struct {
		m    change.Message
		want bool
	}{
		{change.Message{Action: change.Insert, Schema: "public", Table: "orders"}, true},
		{change.Message{Action: change.Update, Schema: "public", Table: "orders"}, false},
		{change.Message{Action: change.Insert, Schema: "public", Table: "other"}, false},
		{change.Message{Action: change.Delete, Schema: "sales", Table: "orders"}, false},
	}
	for _, tt := range tests {
		if got, _ := f.Match(&tt.m); got != tt.want {
			t.Errorf("Match(%s %s.%s): got %t, want %t", tt.m.Action, tt.m.Schema, tt.m.Table, got, tt.want)
		}
	}
	all := NewFilter(config.Sink{}, nil)
	for _, a := range change.Actions {
		if ok, _ := all.Match(&change.Message{Action: a, Schema: "x", Table: "y"}); !ok {
			t.Errorf("default filter rejects %s", a)
		}
	}
}

// obj builds a JSON object of the named columns of rel, with the fields
// the decoder would give it.
func obj(rel *change.Relation, kv ...string) ([]byte, []change.Field) {
	b := []byte{'{'}
	var fields []change.Field
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(change.AppendString(b, kv[i]), ':')
		start := len(b)
		b = append(b, kv[i+1]...)
		fields = append(fields, change.Field{Col: uint32(rel.Column(kv[i])), Start: uint32(start), End: uint32(len(b))})
	}
	return append(b, '}'), fields
}

func TestRouterGroupBy(t *testing.T) {
	full := &change.Relation{Schema: "public", Name: "orders", Table: "public.orders", Identity: 'f',
		Columns: []change.Column{{Name: "id", Identity: true}, {Name: "customer_id", Identity: true}, {Name: "note", Identity: true}}}
	byKey := &change.Relation{Schema: "public", Name: "orders", Table: "public.orders", Identity: 'd',
		Columns: []change.Column{{Name: "id", Identity: true}, {Name: "customer_id"}, {Name: "note"}}}
	other := &change.Relation{Schema: "public", Name: "items", Table: "public.items", Identity: 'd',
		Columns: []change.Column{{Name: "id", Identity: true}}}
	msg := func(rel *change.Relation, a change.Action, rec []string, changes []string) *change.Message {
		m := &change.Message{Action: a, Schema: rel.Schema, Table: rel.Name, Rel: rel, Key: rel.Table + "\x00" + rec[1]}
		m.Record, m.RecordFields = obj(rel, rec...)
		if changes != nil {
			m.Changes, m.ChangesFields = obj(rel, changes...)
		}
		return m
	}
	r := NewRouter(config.Sink{GroupBy: map[config.Table][]string{{Schema: "public", Name: "orders"}: {"customer_id"}}})
	group := func(m *change.Message) uint64 { g, _ := r.Route(m); return g }

	a := msg(full, change.Insert, []string{"id", "1", "customer_id", "7", "note", `"x"`}, nil)
	b := msg(full, change.Insert, []string{"id", "2", "customer_id", "7", "note", `"y"`}, nil)
	c := msg(full, change.Insert, []string{"id", "3", "customer_id", "8", "note", `"z"`}, nil)
	if group(a) != group(b) || group(a) == group(c) {
		t.Errorf("groups by customer_id: got %d, %d, %d; want the first two equal, the third different", group(a), group(b), group(c))
	}
	tests := []struct {
		name    string
		m       *change.Message
		barrier bool
	}{
		{"insert", a, false},
		{"full: update in the same group", msg(full, change.Update, []string{"id", "1", "customer_id", "7", "note", `"q"`}, []string{"note", `"x"`}), false},
		{"full: update that moves the row to another group", msg(full, change.Update, []string{"id", "1", "customer_id", "9", "note", `"x"`}, []string{"customer_id", "7"}), true},
		{"full: delete carries the whole row", msg(full, change.Delete, []string{"id", "1", "customer_id", "7", "note", `"x"`}, nil), false},
		{"default: update cannot tell whether the group changed", msg(byKey, change.Update, []string{"id", "1", "customer_id", "7", "note", `"x"`}, []string{}), true},
		{"default: delete lacks the group column", msg(byKey, change.Delete, []string{"id", "1"}, nil), true},
		{"table without group_by", msg(other, change.Insert, []string{"id", "1"}, nil), false},
	}
	for _, tt := range tests {
		if _, got := r.Route(tt.m); got != tt.barrier {
			t.Errorf("%s: got barrier %t, want %t", tt.name, got, tt.barrier)
		}
	}
	if g, _ := r.Route(tests[3].m); g != group(a) {
		t.Errorf("a delete under identity full: got group %d, want the row's group %d", g, group(a))
	}
	trunc := &change.Message{Action: change.Truncate, Schema: "public", Table: "orders", Rel: full, Key: "public.orders"}
	if _, barrier := r.Route(trunc); !barrier {
		t.Error("truncate is not a barrier")
	}
	if g, _ := r.Route(tests[6].m); g != HashKey(tests[6].m.Key) {
		t.Errorf("table without group_by: got group %d, want the hash of its key", g)
	}
	// Without group_by the decoder's key and barrier apply as they are.
	plain := NewRouter(config.Sink{})
	keyChange := msg(byKey, change.Update, []string{"id", "2", "customer_id", "7", "note", `"x"`}, []string{"id", "1"})
	keyChange.Barrier = true
	if g, barrier := plain.Route(keyChange); g != HashKey(keyChange.Key) || !barrier {
		t.Errorf("without group_by: got (%d, %t), want (%d, true)", g, barrier, HashKey(keyChange.Key))
	}
}
