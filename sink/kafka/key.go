package kafka

import (
	"sync"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// keyer builds record keys: the JSON array of a row's group values, in
// the order of its group_by columns or of its key (the primary key by
// default), e.g. [42] or ["eu",42]. Every change of a row has the same
// key, so Kafka's key partitioner puts them in one partition. A truncate,
// a logical decoding message and a table without a key have a null key.
// It is safe for concurrent use.
type keyer struct {
	groupBy map[string][]string // "schema.table" -> group_by columns
	cols    sync.Map            // *change.Relation -> []int
}

func newKeyer(cfg config.Sink) *keyer {
	k := &keyer{groupBy: make(map[string][]string, len(cfg.GroupBy))}
	for t, cols := range cfg.GroupBy {
		k.groupBy[t.String()] = cols
	}
	return k
}

// key is m's record key; nil is Kafka's null key.
func (k *keyer) key(m *change.Message) []byte {
	if m.Rel == nil || m.Action == change.Truncate || m.Action == change.Emitted {
		return nil
	}
	cols := k.columns(m.Rel)
	if len(cols) == 0 {
		return nil
	}
	b := append(make([]byte, 0, 16), '[')
	for i, c := range cols {
		if i > 0 {
			b = append(b, ',')
		}
		v, ok := change.Lookup(m.Record, m.RecordFields, c)
		if c < 0 || !ok {
			v = []byte("null")
		}
		b = append(b, v...)
	}
	return append(b, ']')
}

// columns are the group columns of rel, as indexes into its columns (-1
// for a group_by column it lacks).
func (k *keyer) columns(rel *change.Relation) []int {
	if c, ok := k.cols.Load(rel); ok {
		return c.([]int)
	}
	cols := rel.Key
	if names, ok := k.groupBy[rel.Table]; ok {
		cols = make([]int, len(names))
		for i, n := range names {
			cols[i] = rel.Column(n)
		}
	}
	k.cols.Store(rel, cols)
	return cols
}
