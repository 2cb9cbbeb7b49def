package broker

import (
	"slices"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// Actions are the actions cfg sends a table's changes with, in the order
// of change.Actions: those cfg.Actions names, or all when it names none.
// Emitted is never among them: a logical decoding message has no table.
func Actions(cfg config.Sink) []change.Action {
	var out []change.Action
	for _, a := range change.Actions {
		if a == change.Emitted {
			continue
		}
		if len(cfg.Actions) == 0 || slices.Contains(cfg.Actions, string(a)) {
			out = append(out, a)
		}
	}
	return out
}

// Named is a name a template gives a table's changes, with the table.
type Named struct {
	Table config.Table
	Name  string
}

// Names are the distinct names tmpl gives the changes of tables under
// cfg, in the order of tables and then of Actions, each with the first
// table that maps to it: what a check looks at once.
func Names(tmpl *Template, cfg config.Sink, tables []config.Table) []Named {
	var out []Named
	seen := map[string]bool{}
	for _, t := range tables {
		for _, a := range Actions(cfg) {
			name := tmpl.For(t.Schema, t.Name, a, cfg.Name)
			if seen[name] {
				continue
			}
			seen[name] = true
			out = append(out, Named{t, name})
		}
	}
	return out
}
