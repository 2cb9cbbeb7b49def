package sink

import (
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// Columns leaves columns out of messages, as a sink's columns (or
// source.columns) select them per table: from the record, the changes
// (old values) and metadata.unchanged_toast_columns. A column the selection
// names that the table lacks is no error: it has nothing to remove, or
// nothing to keep.
//
// Apply works on the byte ranges the decoder recorded (Message.RecordFields
// and ChangesFields) and never parses JSON. Which columns of a table to
// drop is worked out once per Relation, the table's latest only, so the
// cache holds at most one entry per configured table.
//
// A Columns is not safe for concurrent use: one goroutine applies it.
type Columns struct {
	tables map[string]*tableColumns // by "schema.table"
}

// tableColumns is one table's selection, resolved against the table's
// latest Relation.
type tableColumns struct {
	sel config.Columns
	rel *change.Relation
	// drop is indexed by column: true for a column left out; nil when rel
	// keeps every column.
	drop []bool
	// names are the columns drop leaves out, for UnchangedToast.
	names map[string]bool
	// keys are the columns' JSON keys, `"name":`, as the decoder writes
	// them.
	keys [][]byte
}

// NewColumns returns the projection of a selection; nil (which keeps every
// column) when the selection is empty.
func NewColumns(sel map[config.Table]config.Columns) *Columns {
	if len(sel) == 0 {
		return nil
	}
	c := &Columns{tables: make(map[string]*tableColumns, len(sel))}
	for t, s := range sel {
		c.tables[t.String()] = &tableColumns{sel: s}
	}
	return c
}

// Apply returns m without the columns the selection leaves out. When it
// removes nothing it returns m itself, without allocating; otherwise a
// shallow copy of m with new Record, RecordFields, Changes, ChangesFields
// and UnchangedToast. m is never modified.
func (c *Columns) Apply(m *change.Message) *change.Message {
	if c == nil || m.Rel == nil {
		return m
	}
	tc, ok := c.tables[m.Rel.Table]
	if !ok {
		return m
	}
	if tc.rel != m.Rel {
		tc.resolve(m.Rel)
	}
	if tc.drop == nil {
		return m
	}
	recordKept, recordDropped, recordSize := tc.count(m.RecordFields)
	changesKept, changesDropped, changesSize := tc.count(m.ChangesFields)
	toastDropped := 0
	for _, name := range m.UnchangedToast {
		if tc.names[name] {
			toastDropped++
		}
	}
	if recordDropped == 0 && changesDropped == 0 && toastDropped == 0 {
		return m
	}

	p := *m
	// One allocation for both objects' bytes, one for both field lists.
	var size int
	if recordDropped > 0 {
		size += recordSize
	}
	if changesDropped > 0 {
		size += changesSize
	}
	buf := make([]byte, 0, size)
	fields := make([]change.Field, 0, recordKept+changesKept)
	if recordDropped > 0 {
		p.Record, p.RecordFields, buf, fields = tc.project(m.Record, m.RecordFields, buf, fields)
	}
	if changesDropped > 0 {
		p.Changes, p.ChangesFields, _, _ = tc.project(m.Changes, m.ChangesFields, buf, fields)
	}
	if toastDropped > 0 {
		p.UnchangedToast = nil
		if kept := len(m.UnchangedToast) - toastDropped; kept > 0 {
			p.UnchangedToast = make([]string, 0, kept)
			for _, name := range m.UnchangedToast {
				if !tc.names[name] {
					p.UnchangedToast = append(p.UnchangedToast, name)
				}
			}
		}
	}
	return &p
}

// resolve works out which columns of rel the selection leaves out.
func (tc *tableColumns) resolve(rel *change.Relation) {
	tc.rel, tc.drop, tc.names, tc.keys = rel, nil, nil, nil
	for i, col := range rel.Columns {
		if tc.sel.Keeps(col.Name) {
			continue
		}
		if tc.drop == nil {
			tc.drop = make([]bool, len(rel.Columns))
			tc.names = make(map[string]bool)
		}
		tc.drop[i] = true
		tc.names[col.Name] = true
	}
	if tc.drop != nil {
		tc.keys = make([][]byte, len(rel.Columns))
		for i, col := range rel.Columns {
			tc.keys[i] = append(change.AppendString(nil, col.Name), ':')
		}
	}
}

// dropped reports whether the column with index col is left out. An index
// outside the relation (the decoder never writes one) has no name to be
// written under, so it is left out too.
func (tc *tableColumns) dropped(col uint32) bool {
	return int(col) >= len(tc.drop) || tc.drop[col]
}

// count returns how many of fields are kept and how many dropped, and the
// size of the object that holds the kept ones.
func (tc *tableColumns) count(fields []change.Field) (kept, dropped, size int) {
	size = 2 // {}
	for _, f := range fields {
		if tc.dropped(f.Col) {
			dropped++
			continue
		}
		if kept > 0 {
			size++ // ,
		}
		kept++
		size += len(tc.keys[f.Col]) + int(f.End-f.Start)
	}
	return kept, dropped, size
}

// project appends to buf the JSON object raw without the dropped fields,
// and to out the kept fields as they lie in the new object. It returns the
// object and its fields, both capped so that appending to them cannot
// reach what follows in buf or out.
func (tc *tableColumns) project(raw []byte, fields []change.Field, buf []byte, out []change.Field) ([]byte, []change.Field, []byte, []change.Field) {
	start, fstart := len(buf), len(out)
	buf = append(buf, '{')
	for _, f := range fields {
		if tc.dropped(f.Col) {
			continue
		}
		if len(out) > fstart {
			buf = append(buf, ',')
		}
		// The key is written from the column's name, as the decoder wrote
		// it, so nothing depends on the bytes between two values.
		buf = append(buf, tc.keys[f.Col]...)
		vstart := len(buf) - start
		buf = append(buf, raw[f.Start:f.End]...)
		out = append(out, change.Field{Col: f.Col, Start: uint32(vstart), End: uint32(len(buf) - start)})
	}
	buf = append(buf, '}')
	return buf[start:len(buf):len(buf)], out[fstart:len(out):len(out)], buf, out
}
