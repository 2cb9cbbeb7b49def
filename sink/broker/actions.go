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
