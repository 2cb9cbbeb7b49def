package broker

import (
	"strings"
	"testing"
	"unicode"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
)

func TestTemplateName(t *testing.T) {
	// What a NATS subject forbids in a token, as sink/nats says it.
	natsToken := func(r rune) bool { return r == '*' || r == '>' || unicode.IsSpace(r) }
	// What a Kafka topic keeps.
	kafkaTopic := func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-')
	}
	tests := []struct {
		template      string
		forbid        Forbidden
		schema, table string
		action        change.Action
		want          string
	}{
		{"walhook.{schema}.{table}", natsToken, "public", "odd.name x", change.Insert, "walhook.public.odd_name_x"},
		{"walhook.{schema}.{table}", natsToken, "public", "a*b>c\td", change.Insert, "walhook.public.a_b_c_d"},
		{"{sink}.{schema}.{table}.{action}", natsToken, "Sales", "Order Items", change.Update, "s.Sales.Order_Items.update"},
		{"walhook.{schema}.{table}", kafkaTopic, "public", "café/x.y", change.Delete, "walhook.public.caf__x_y"},
		{"walhook:{schema}.{table}", nil, "public", "odd.name x", change.Insert, "walhook:public.odd_name x"},
		{"walhook.{schema}.{table}", natsToken, "", "", change.Emitted, "walhook._._"},
		{"fixed", nil, "public", "t", change.Insert, "fixed"},
	}
	for _, tc := range tests {
		tmpl, err := Parse(tc.template, tc.forbid)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.template, err)
		}
		for range 2 { // the second from the cache
			if got := tmpl.For(tc.schema, tc.table, tc.action, "s"); got != tc.want {
				t.Errorf("%q for %s.%s: got %q, want %q", tc.template, tc.schema, tc.table, got, tc.want)
			}
		}
	}
}

func TestParseRefusesUnknownPlaceholders(t *testing.T) {
	for _, text := range []string{"walhook.{tabel}", "walhook.{schema"} {
		if _, err := Parse(text, nil); err == nil || !strings.Contains(err.Error(), text) {
			t.Errorf("Parse(%q): got %v, want an error naming the template", text, err)
		}
	}
}

func TestHeaders(t *testing.T) {
	m := &change.Message{Action: change.Update, Schema: "public", Table: "odd.name x",
		Pos: change.Position{CommitLSN: pglogrepl.LSN(0x16B3748), Idx: 3}}
	got := Headers(m, "orders")
	want := [5]Header{
		{"walhook-idempotency-key", "0/16B3748:3"},
		{"walhook-table", "public.odd.name x"},
		{"walhook-action", "update"},
		{"walhook-commit-lsn", "0/16B3748"},
		{"walhook-sink", "orders"},
	}
	if got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
