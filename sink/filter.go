// Package sink holds what every kind of destination shares: which messages
// a sink wants. Destinations live in subpackages (sink/webhook).
package sink

import (
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/filter"
)

// Filter selects the messages a sink receives: its tables, its actions,
// and its CEL filter.
type Filter struct {
	tables  map[string]bool // "schema.table"; nil means every table
	actions map[change.Action]bool
	expr    *filter.Expr // nil matches every message
}

// NewFilter builds the filter of a configured sink; expr is its compiled
// CEL filter, nil for none.
func NewFilter(cfg config.Sink, expr *filter.Expr) *Filter {
	f := &Filter{actions: map[change.Action]bool{}, expr: expr}
	if len(cfg.Tables) > 0 {
		f.tables = map[string]bool{}
		for _, t := range cfg.Tables {
			f.tables[t.String()] = true
		}
	}
	if len(cfg.Actions) == 0 {
		for _, a := range change.Actions {
			f.actions[a] = true
		}
	}
	for _, a := range cfg.Actions {
		f.actions[change.Action(a)] = true
	}
	return f
}

// Match reports whether the sink wants m. Logical decoding messages have no
// table: only the action and CEL filters apply to them. A CEL filter that
// fails on m (a key the record lacks, a cost limit) does not match; the
// error says why, for the caller to report.
func (f *Filter) Match(m *change.Message) (bool, error) {
	if !f.actions[m.Action] {
		return false, nil
	}
	if f.tables != nil && m.Action != change.Emitted && !f.tables[table(m)] {
		return false, nil
	}
	if f.expr == nil {
		return true, nil
	}
	return f.expr.Match(m)
}

// table is m's "schema.table", without building it when the decoder gave
// the relation.
func table(m *change.Message) string {
	if m.Rel != nil {
		return m.Rel.Table
	}
	return m.QualifiedTable()
}
