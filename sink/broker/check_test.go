package broker

import (
	"slices"
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

func TestActions(t *testing.T) {
	all := Actions(config.Sink{})
	if slices.Contains(all, change.Emitted) || len(all) != len(change.Actions)-1 {
		t.Errorf("Actions of a sink that names none = %v; want every action but %s", all, change.Emitted)
	}
	some := Actions(config.Sink{Actions: []string{string(change.Emitted), string(all[0])}})
	if !slices.Equal(some, all[:1]) {
		t.Errorf("Actions naming %s and %s = %v; want %v", change.Emitted, all[0], some, all[:1])
	}
}

func TestNames(t *testing.T) {
	tmpl, err := Parse("walhook.{table}", nil)
	if err != nil {
		t.Fatal(err)
	}
	tables := []config.Table{{Schema: "public", Name: "orders"}, {Schema: "shop", Name: "orders"}, {Schema: "public", Name: "users"}}
	got := Names(tmpl, config.Sink{Name: "s"}, tables)
	want := []Named{{tables[0], "walhook.orders"}, {tables[2], "walhook.users"}}
	if !slices.Equal(got, want) {
		t.Errorf("Names = %v; want %v (each name once, with the first table)", got, want)
	}
}
