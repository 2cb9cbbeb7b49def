package backfill

import (
	"github.com/walhook/walhook/change"
)

// Settle decides what becomes of a chunk's read of a row, for one sink,
// given the changes of that row that the sink took between the chunk's
// watermarks, in stream order (those its filter let through). The query
// may or may not have seen them, and the read comes after them:
//   - none: the read stays as it is;
//   - the last one deletes the row, or they carry every column of the
//     read (an insert carries them all): the sink has the row's newest
//     state from them, and the read is left out (nil);
//   - otherwise updates left columns out (unchanged TOASTed values, which
//     pgoutput does not send): the read becomes the row's newest state,
//     each column as the latest change carried it and the read's own value
//     for the others. Those columns did not change between the watermarks
//     (a change that sets a value carries it), so the read's value is
//     theirs, and a receiver that replays the row gets every value.
//
// Settle does not change read; it returns a copy when it merges.
func Settle(read *change.Message, changes []*change.Message) *change.Message {
	if len(changes) == 0 {
		return read
	}
	vals := make([][]byte, len(read.RecordFields)) // what the changes carried, per field of the read
	deleted := false
	for _, c := range changes {
		switch c.Action {
		case change.Delete:
			deleted = true
			clear(vals) // a later insert carries the row anew
		case change.Insert, change.Update:
			deleted = false
			for i, f := range read.RecordFields {
				j := sameColumn(read.Rel, c.Rel, f.Col)
				if j < 0 {
					continue
				}
				if v, ok := change.Lookup(c.Record, c.RecordFields, j); ok {
					vals[i] = v
				}
			}
		}
	}
	if deleted {
		return nil
	}
	missing := false
	for _, v := range vals {
		if v == nil {
			missing = true
			break
		}
	}
	if !missing {
		return nil
	}
	return merge(read, vals)
}

// sameColumn is the index in to of the column that has index col in from,
// matched by name (a change's relation and a read's may number the columns
// differently); -1 when to has none of that name.
func sameColumn(from, to *change.Relation, col uint32) int {
	if from == nil || to == nil || int(col) >= len(from.Columns) {
		return -1
	}
	return to.Column(from.Columns[col].Name)
}

// merge returns a copy of read whose record has vals[i], where set, as the
// value of its i-th field: the same columns in the same order.
func merge(read *change.Message, vals [][]byte) *change.Message {
	m := *read
	rec := make([]byte, 0, len(read.Record))
	fields := make([]change.Field, len(read.RecordFields))
	prev := uint32(0)
	for i, f := range read.RecordFields {
		rec = append(rec, read.Record[prev:f.Start]...) // separator and name
		v := vals[i]
		if v == nil {
			v = read.Record[f.Start:f.End]
		}
		start := len(rec)
		rec = append(rec, v...)
		fields[i] = change.Field{Col: f.Col, Start: uint32(start), End: uint32(len(rec))}
		prev = f.End
	}
	rec = append(rec, read.Record[prev:]...)
	m.Record, m.RecordFields = rec, fields
	return &m
}
