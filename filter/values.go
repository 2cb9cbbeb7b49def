package filter

import (
	"bytes"
	"fmt"
	"reflect"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/walhook/walhook/change"
)

// object is a JSON object seen from CEL as a map(string, dyn). A lookup
// reads only the field asked for; the whole object is decoded only for what
// needs every entry (size, iteration, equality, conversion), once.
type object struct {
	raw []byte
	// unique says the keys are column names, so the first match is the
	// only one (see lookup).
	unique bool
	all    *entries // every entry, once something needed them
	// rel and fields, when the decoder gave them, locate each column's
	// value in raw without scanning it.
	rel    *change.Relation
	fields []change.Field
}

var (
	_ traits.Mapper = (*object)(nil)
	_ traits.Mapper = (*metadata)(nil)
)

// Find implements traits.Mapper.
func (o *object) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	raw, found, err := o.lookup(string(k))
	if err != nil {
		return types.WrapErr(err), false
	}
	if !found {
		return nil, false
	}
	v := convert(raw)
	return v, !types.IsError(v)
}

// Get implements traits.Indexer.
func (o *object) Get(key ref.Val) ref.Val { return get(o, key) }

// Contains implements traits.Container: the "in" operator.
func (o *object) Contains(key ref.Val) ref.Val { return contains(o, key) }

// Size implements traits.Sizer.
func (o *object) Size() ref.Val {
	all, err := o.entries()
	if err != nil {
		return types.WrapErr(err)
	}
	return types.Int(len(all.keys))
}

// Iterator implements traits.Iterable: the keys, in document order.
func (o *object) Iterator() traits.Iterator {
	all, _ := o.entries() // malformed JSON iterates over nothing; Size reports it
	return &iterator{keys: all.keys}
}

// Equal implements ref.Val.
func (o *object) Equal(other ref.Val) ref.Val {
	all, err := o.entries()
	if err != nil {
		return types.WrapErr(err)
	}
	return all.equal(other)
}

// ConvertToNative implements ref.Val.
func (o *object) ConvertToNative(t reflect.Type) (any, error) {
	all, err := o.entries()
	if err != nil {
		return nil, err
	}
	return all.mapper().ConvertToNative(t)
}

// ConvertToType implements ref.Val.
func (o *object) ConvertToType(t ref.Type) ref.Val { return convertMapToType(o, t) }

// Type implements ref.Val.
func (o *object) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (o *object) Value() any {
	all, err := o.entries()
	if err != nil {
		return err
	}
	return all.mapper().Value()
}

// entries decodes every entry of the object, once. Of duplicate keys the
// last wins, as in lookup.
func (o *object) entries() (*entries, error) {
	if o.all != nil {
		return o.all, nil
	}
	all := &entries{}
	err := members(o.raw, func(key string, raw []byte) error {
		v := convert(raw)
		if types.IsError(v) {
			return errMalformed
		}
		all.set(types.String(key), v)
		return nil
	})
	if err != nil {
		all = &entries{}
		return all, err
	}
	o.all = all
	return all, nil
}

// metadata is a message's metadata object, as delivered, seen from CEL.
// Each field is made when it is asked for.
type metadata struct {
	m    *change.Message
	sink ref.Val
	all  *entries
}

// metadataKeys are the keys of metadata in the order the JSON has them;
// table_schema and table_name are absent on logical decoding messages,
// backfill_id is present on reads only and unchanged_toast_columns only when
// a column is listed.
var metadataKeys = []string{
	"table_schema", "table_name", "commit_lsn", "commit_idx", "commit_timestamp",
	"xid", "idempotency_key", "sink", "backfill_id", "unchanged_toast_columns",
}

// Find implements traits.Mapper.
func (md *metadata) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	return md.field(string(k))
}

func (md *metadata) field(key string) (ref.Val, bool) {
	m := md.m
	switch key {
	case "table_schema":
		if m.Action != change.Emitted {
			return types.String(m.Schema), true
		}
	case "table_name":
		if m.Action != change.Emitted {
			return types.String(m.Table), true
		}
	case "commit_lsn":
		return types.String(change.AppendLSN(nil, m.Pos.CommitLSN)), true
	case "commit_idx":
		return types.Int(m.Pos.Idx), true
	case "commit_timestamp":
		return types.String(change.AppendTimestamp(nil, m.CommitTime)), true
	case "xid":
		return types.Int(m.XID), true
	case "idempotency_key":
		return types.String(m.AppendIdempotencyKey(nil)), true
	case "sink":
		return md.sink, true
	case "backfill_id":
		if m.BackfillID != "" {
			return types.String(m.BackfillID), true
		}
	case "unchanged_toast_columns":
		if len(m.UnchangedToast) > 0 {
			return types.NewStringList(types.DefaultTypeAdapter, m.UnchangedToast), true
		}
	}
	return nil, false
}

// Get implements traits.Indexer.
func (md *metadata) Get(key ref.Val) ref.Val { return get(md, key) }

// Contains implements traits.Container.
func (md *metadata) Contains(key ref.Val) ref.Val { return contains(md, key) }

// Size implements traits.Sizer.
func (md *metadata) Size() ref.Val { return types.Int(len(md.entries().keys)) }

// Iterator implements traits.Iterable.
func (md *metadata) Iterator() traits.Iterator { return &iterator{keys: md.entries().keys} }

// Equal implements ref.Val.
func (md *metadata) Equal(other ref.Val) ref.Val { return md.entries().equal(other) }

// ConvertToNative implements ref.Val.
func (md *metadata) ConvertToNative(t reflect.Type) (any, error) {
	return md.entries().mapper().ConvertToNative(t)
}

// ConvertToType implements ref.Val.
func (md *metadata) ConvertToType(t ref.Type) ref.Val { return convertMapToType(md, t) }

// Type implements ref.Val.
func (md *metadata) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (md *metadata) Value() any { return md.entries().mapper().Value() }

func (md *metadata) entries() *entries {
	if md.all == nil {
		md.all = &entries{}
		for _, k := range metadataKeys {
			if v, ok := md.field(k); ok {
				md.all.set(types.String(k), v)
			}
		}
	}
	return md.all
}

// get is Indexer.Get for a Mapper: a missing key is CEL's "no such key".
func get(m traits.Mapper, key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found {
		return types.ValOrErr(v, "no such key: %v", key)
	}
	return v
}

func contains(m traits.Mapper, key ref.Val) ref.Val {
	v, found := m.Find(key)
	if !found && types.IsError(v) {
		return v
	}
	return types.Bool(found)
}

func convertMapToType(m ref.Val, t ref.Type) ref.Val {
	switch t {
	case types.MapType:
		return m
	case types.TypeType:
		return types.MapType
	}
	return types.NewErr("type conversion error from '%s' to '%s'", types.MapType, t)
}

// entries is a decoded map: its keys in order and their values.
type entries struct {
	keys []ref.Val
	vals map[ref.Val]ref.Val
}

func (e *entries) set(k, v ref.Val) {
	if e.vals == nil {
		e.vals = make(map[ref.Val]ref.Val)
	}
	if _, dup := e.vals[k]; !dup {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

func (e *entries) mapper() traits.Mapper {
	return types.NewRefValMap(types.DefaultTypeAdapter, e.vals)
}

// equal is CEL map equality: the same keys with equal values.
func (e *entries) equal(other ref.Val) ref.Val {
	o, ok := other.(traits.Mapper)
	if !ok {
		return types.False
	}
	if o.Size() != types.Int(len(e.keys)) {
		return types.False
	}
	for _, k := range e.keys {
		ov, found := o.Find(k)
		if !found {
			return types.False
		}
		if types.Equal(e.vals[k], ov) != types.True {
			return types.False
		}
	}
	return types.True
}

// iterator walks a list of keys. CEL only calls HasNext and Next on it.
type iterator struct {
	keys []ref.Val
	next int
}

func (it *iterator) HasNext() ref.Val { return types.Bool(it.next < len(it.keys)) }

func (it *iterator) Next() ref.Val {
	if it.next >= len(it.keys) {
		return nil
	}
	it.next++
	return it.keys[it.next-1]
}

func (it *iterator) ConvertToNative(t reflect.Type) (any, error) {
	return nil, fmt.Errorf("type conversion of an iterator to %v is not supported", t)
}
func (it *iterator) ConvertToType(ref.Type) ref.Val {
	return types.NewErr("iterators cannot be converted")
}
func (it *iterator) Equal(ref.Val) ref.Val { return types.False }
func (it *iterator) Type() ref.Type        { return types.IteratorType }
func (it *iterator) Value() any            { return it }

// lookup finds key's raw JSON value: through the decoder's field offsets
// when o has them, else by scanning raw.
func (o *object) lookup(key string) ([]byte, bool, error) {
	if o.rel != nil && o.unique {
		for _, f := range o.fields {
			if int(f.Col) < len(o.rel.Columns) && o.rel.Columns[f.Col].Name == key {
				return bytes.TrimSpace(o.raw[f.Start:f.End]), true, nil
			}
		}
		return nil, false, nil
	}
	return lookup(o.raw, key, o.unique)
}
