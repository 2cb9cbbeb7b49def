package filter

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/walhook/walhook/change"
)

// benchMessage is an update of a twelve-column row, the kind of message a
// filter sees most.
func benchMessage() *change.Message {
	return &change.Message{
		Action: change.Update, Schema: "public", Table: "orders",
		Record: []byte(`{"id":42,"customer_id":1001,"status":"paid","amount":"19.90","currency":"EUR",` +
			`"tags":["a","b"],"meta":{"k":1,"source":"web"},"created_at":"2026-11-26T11:20:00.123456Z",` +
			`"updated_at":"2026-11-26T11:20:00.123456Z","note":"leave at the door","weight":1.25,"gift":false}`),
		Changes:    []byte(`{"status":"new"}`),
		Pos:        change.Position{CommitLSN: 0x16B3748, Idx: 3},
		CommitTime: time.Date(2026, 11, 26, 11, 20, 0, 123456000, time.UTC),
		XID:        771,
	}
}

var benchFilters = []struct{ name, expr string }{
	{"RecordField", `record.status == "paid"`},
	{"LastField", `record.gift == false`},
	{"Metadata", `metadata.table_name == "orders"`},
	{"Comprehension", `record.tags.exists(t, t == "b")`}, // cost tracked at run time
}

// BenchmarkMatch compares Match, which reads only the fields an expression
// uses, with the naive way: unmarshal record and changes into Go maps, build
// metadata as a map, and evaluate over a map activation.
func BenchmarkMatch(b *testing.B) {
	m := benchMessage()
	for _, f := range benchFilters {
		e, err := Compile(f.expr)
		if err != nil {
			b.Fatal(err)
		}
		e = e.Bind("orders")
		b.Run(f.name+"/lazy", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := e.Match(m); !ok || err != nil {
					b.Fatalf("got %v, %v; want true", ok, err)
				}
			}
		})
		b.Run(f.name+"/naive", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := naiveMatch(e.prg, m, "orders"); !ok || err != nil {
					b.Fatalf("got %v, %v; want true", ok, err)
				}
			}
		})
	}
}

// BenchmarkMatchCostTracked shows what tracking the cost at run time would
// add to filters whose cost CEL bounds statically (see Compile).
func BenchmarkMatchCostTracked(b *testing.B) {
	m := benchMessage()
	env, err := environment()
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range benchFilters[:3] {
		ast, iss := env.Compile(f.expr)
		if iss.Err() != nil {
			b.Fatal(iss.Err())
		}
		prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(CostLimit))
		if err != nil {
			b.Fatal(err)
		}
		e := (&Expr{text: f.expr, prg: prg}).Bind("orders")
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := e.Match(m); !ok || err != nil {
					b.Fatalf("got %v, %v; want true", ok, err)
				}
			}
		})
	}
}

func naiveMatch(prg cel.Program, m *change.Message, sink string) (bool, error) {
	var record, changes any
	if err := json.Unmarshal(m.Record, &record); err != nil {
		return false, err
	}
	if m.Changes != nil {
		if err := json.Unmarshal(m.Changes, &changes); err != nil {
			return false, err
		}
	}
	md := map[string]any{
		"table_schema":     m.Schema,
		"table_name":       m.Table,
		"commit_lsn":       string(change.AppendLSN(nil, m.Pos.CommitLSN)),
		"commit_idx":       int64(m.Pos.Idx),
		"commit_timestamp": string(change.AppendTimestamp(nil, m.CommitTime)),
		"xid":              int64(m.XID),
		"idempotency_key":  m.IdempotencyKey(),
		"sink":             sink,
	}
	out, _, err := prg.Eval(map[string]any{
		"action": string(m.Action), "record": record, "changes": changes, "metadata": md, "prefix": m.Prefix,
	})
	if err != nil {
		return false, err
	}
	return out.Value() == true, nil
}
