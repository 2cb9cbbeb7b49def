// Package sink holds what every kind of destination shares: which messages
// a sink wants. Destinations live in subpackages (sink/webhook).
package sink

import (
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// Filter selects the messages a sink receives.
type Filter struct {
	tables  map[string]bool // "schema.table"; nil means every table
	actions map[change.Action]bool
}

// NewFilter builds the filter of a configured sink.
func NewFilter(cfg config.Sink) *Filter {
	f := &Filter{actions: map[change.Action]bool{}}
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
// table: only the action filter applies to them.
func (f *Filter) Match(m *change.Message) bool {
	if !f.actions[m.Action] {
		return false
	}
	if f.tables == nil || m.Action == change.Emitted {
		return true
	}
	return f.tables[m.QualifiedTable()]
}
