package sink

import (
	"encoding/json"
	"strings"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// LaneKey returns the function that groups a sink's messages into ordered
// lanes: the row's primary key (the decoder's Key) unless the sink's
// group_by names other columns for the message's table. Messages with the
// same key are delivered one batch at a time, in order.
func LaneKey(cfg config.Sink) func(*change.Message) string {
	if len(cfg.GroupBy) == 0 {
		return nil
	}
	groups := make(map[string][]string, len(cfg.GroupBy))
	for t, cols := range cfg.GroupBy {
		groups[t.String()] = cols
	}
	return func(m *change.Message) string {
		cols, ok := groups[m.QualifiedTable()]
		if !ok || m.Record == nil {
			return m.Key
		}
		var rec map[string]json.RawMessage
		if err := json.Unmarshal(m.Record, &rec); err != nil {
			return m.Key
		}
		var b strings.Builder
		b.WriteString(m.QualifiedTable())
		for _, c := range cols {
			b.WriteByte(0)
			b.Write(rec[c]) // a missing column groups as empty: still one lane per value set
		}
		return b.String()
	}
}
