package sink

import (
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

func TestFilter(t *testing.T) {
	f := NewFilter(config.Sink{Tables: []config.Table{{Schema: "public", Name: "orders"}}, Actions: []string{"insert", "delete"}})
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
		if got := f.Match(&tt.m); got != tt.want {
			t.Errorf("Match(%s %s.%s): got %t, want %t", tt.m.Action, tt.m.Schema, tt.m.Table, got, tt.want)
		}
	}
	all := NewFilter(config.Sink{})
	for _, a := range change.Actions {
		if !all.Match(&change.Message{Action: a, Schema: "x", Table: "y"}) {
			t.Errorf("default filter rejects %s", a)
		}
	}
}

func TestLaneKeyGroupBy(t *testing.T) {
	if LaneKey(config.Sink{}) != nil {
		t.Fatal("LaneKey without group_by is not nil; want nil (the sink's default)")
	}
	key := LaneKey(config.Sink{GroupBy: map[config.Table][]string{{Schema: "public", Name: "orders"}: {"customer_id"}}})
	a := &change.Message{Schema: "public", Table: "orders", Record: []byte(`{"id":1,"customer_id":7}`), Key: "public.orders\x001"}
	b := &change.Message{Schema: "public", Table: "orders", Record: []byte(`{"id":2,"customer_id":7}`), Key: "public.orders\x002"}
	c := &change.Message{Schema: "public", Table: "orders", Record: []byte(`{"id":3,"customer_id":8}`), Key: "public.orders\x003"}
	other := &change.Message{Schema: "public", Table: "items", Record: []byte(`{"id":1}`), Key: "public.items\x001"}
	if key(a) != key(b) {
		t.Errorf("same customer_id: got keys %q and %q, want equal", key(a), key(b))
	}
	if key(a) == key(c) {
		t.Errorf("different customer_id: got equal keys %q", key(a))
	}
	if key(other) != other.Key {
		t.Errorf("table without group_by: got %q, want the primary key %q", key(other), other.Key)
	}
}
