package replication

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/walhook/walhook/change"
)

// checkFields reports whether m's RecordFields and ChangesFields locate
// exactly the members of Record and Changes, in order, each with its value
// as encoding/json reads it.
func checkFields(m *change.Message) error {
	for _, part := range []struct {
		name   string
		raw    []byte
		fields []change.Field
	}{{"record", m.Record, m.RecordFields}, {"changes", m.Changes, m.ChangesFields}} {
		if part.raw == nil || m.Rel == nil {
			if part.fields != nil {
				return fmt.Errorf("%s %s: null but %d fields", m.Action, part.name, len(part.fields))
			}
			continue
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(part.raw, &members); err != nil {
			return fmt.Errorf("%s %s %s: %v", m.Action, part.name, part.raw, err)
		}
		names := map[string]bool{}
		for _, c := range m.Rel.Columns {
			names[c.Name] = true
		}
		if len(names) != len(m.Rel.Columns) {
			continue // duplicate column names (fuzzed input): members cannot be told apart
		}
		if len(members) != len(part.fields) {
			return fmt.Errorf("%s %s %s: %d members, %d fields", m.Action, part.name, part.raw, len(members), len(part.fields))
		}
		for _, f := range part.fields {
			if m.Rel == nil || int(f.Col) >= len(m.Rel.Columns) || f.Start > f.End || int(f.End) > len(part.raw) {
				return fmt.Errorf("%s %s: field %+v out of range", m.Action, part.name, f)
			}
			name := m.Rel.Columns[f.Col].Name
			want, ok := members[name]
			// json values are embedded as written, whitespace and all.
			if !ok || !bytes.Equal(bytes.TrimSpace(part.raw[f.Start:f.End]), want) {
				return fmt.Errorf("%s %s %s: field %q holds %s, want %s", m.Action, part.name, part.raw, name, part.raw[f.Start:f.End], want)
			}
		}
	}
	return nil
}
