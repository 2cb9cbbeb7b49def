package sink

import (
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// Router decides, for one sink, which ordering group a message belongs to
// and whether it must be a barrier: delivered after everything before it
// and before anything after it.
//
// By default a row's group is its key (the decoder's Message.Key) and the
// decoder's barriers apply (truncates, key changes). For a table in the
// sink's group_by the group is the values of the named columns, read from
// the decoded record, and per-row order needs more: every version of a row
// must travel in the group of its previous version. So an update that
// changes a group_by column, or one whose old values cannot tell, is a
// barrier, and so is any change whose group cannot be read (a delete whose
// old row lacks a group_by column). walhook refuses at start a group_by that
// the table's replica identity cannot support (see CheckGroupBy), so these
// barriers stay rare; they keep order if the identity changes later.
//
// A Router is not safe for concurrent use: one goroutine routes a sink's
// messages.
type Router struct {
	groups map[string][]string // "schema.table" -> group_by columns
	cols   map[string]resolved // per table, the columns of its latest Relation
}

// resolved is a table's group_by columns as indexes into one Relation.
type resolved struct {
	rel  *change.Relation
	cols []int // -1 for a column the relation lacks
	// oldKnown: an update's Changes names every group_by column whose
	// value changed (identity full, or every column in the identity).
	oldKnown bool
}

// NewRouter returns the router of a configured sink.
func NewRouter(cfg config.Sink) *Router {
	r := &Router{}
	if len(cfg.GroupBy) > 0 {
		r.groups = make(map[string][]string, len(cfg.GroupBy))
		r.cols = make(map[string]resolved, len(cfg.GroupBy))
		for t, cols := range cfg.GroupBy {
			r.groups[t.String()] = cols
		}
	}
	return r
}

// Route returns m's group, as a hash that is the same in every process,
// and whether m is a barrier for this sink.
func (r *Router) Route(m *change.Message) (group uint64, barrier bool) {
	if r.groups == nil || m.Rel == nil {
		return HashKey(m.Key), m.Barrier
	}
	names, ok := r.groups[m.Rel.Table]
	if !ok {
		return HashKey(m.Key), m.Barrier
	}
	if m.Action == change.Truncate {
		return HashKey(m.Key), true
	}
	res := r.resolve(m.Rel, names)
	h := hashString(fnvOffset, m.Rel.Table)
	known := true
	for _, c := range res.cols {
		h = hashByte(h, 0)
		v, ok := change.Lookup(m.Record, m.RecordFields, c)
		if c < 0 || !ok {
			known = false
			break
		}
		h = hashBytes(h, v)
	}
	if !known {
		return HashKey(m.Rel.Table), true
	}
	if m.Action == change.Update {
		if !res.oldKnown {
			return h, true
		}
		for _, c := range res.cols {
			if _, changed := change.Lookup(m.Changes, m.ChangesFields, c); changed {
				return h, true
			}
		}
	}
	return h, false
}

func (r *Router) resolve(rel *change.Relation, names []string) resolved {
	if res, ok := r.cols[rel.Table]; ok && res.rel == rel {
		return res
	}
	res := resolved{rel: rel, cols: make([]int, len(names)), oldKnown: true}
	for i, n := range names {
		c := rel.Column(n)
		res.cols[i] = c
		if rel.Identity != 'f' && (c < 0 || !rel.Columns[c].Identity) {
			res.oldKnown = false
		}
	}
	r.cols[rel.Table] = res
	return res
}

// FNV-1a, 64 bit: computed in place, without allocating, and the same in
// every process.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// HashKey hashes a message key as Route does.
func HashKey(key string) uint64 { return hashString(fnvOffset, key) }

func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

func hashBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
}

func hashByte(h uint64, c byte) uint64 { return (h ^ uint64(c)) * fnvPrime }
