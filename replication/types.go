package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/walhook/walhook/change"
)

// builtinKinds maps the OIDs of built-in scalar types whose JSON form is
// richer than a string. Every other built-in type that pgtype knows is
// text; built-in arrays are found through pgtype's type map.
var builtinKinds = map[uint32]kind{
	pgtype.Int2OID:        kindInt,
	pgtype.Int4OID:        kindInt,
	pgtype.Int8OID:        kindInt,
	pgtype.OIDOID:         kindInt,
	pgtype.XIDOID:         kindInt,
	pgtype.XID8OID:        kindInt,
	pgtype.CIDOID:         kindInt,
	pgtype.Float4OID:      kindFloat,
	pgtype.Float8OID:      kindFloat,
	pgtype.NumericOID:     kindNumeric,
	moneyOID:              kindMoney,
	pgtype.BoolOID:        kindBool,
	pgtype.JSONOID:        kindJSON,
	pgtype.JSONBOID:       kindJSON,
	pgtype.ByteaOID:       kindBytea,
	pgtype.TimestampOID:   kindTimestamp,
	pgtype.TimestamptzOID: kindTimestamptz,
}

// moneyOID is money's OID, which pgtype does not name.
const moneyOID = 790

// builtins is pgtype's map of PostgreSQL's built-in types: their names and,
// for arrays, the element type and delimiter. It is only read.
var builtins = pgtype.NewMap()

// firstUserOID is where OIDs of objects created after initdb begin.
const firstUserOID = 16384

// maxTypeDepth bounds domains over domains, arrays of composites holding
// arrays, and so on.
const maxTypeDepth = 16

// typeCache resolves column type OIDs to value types. Built-in types are
// known statically; others (enums, domains, composites, arrays of them,
// extension types) are read from the catalog once and cached. Relation
// messages, which pgoutput sends again after a table or one of its types
// changed, drop the cached user types so that they are read again.
type typeCache struct {
	mu    sync.Mutex
	types map[uint32]*valueType
	query func(ctx context.Context, oid uint32) (catalogType, error)
}

// catalogType is what the catalog says of a type.
type catalogType struct {
	typtype  byte   // b base, d domain, e enum, c composite, r range, m multirange, p pseudo
	category byte   // typcategory; 'A' for arrays
	elem     uint32 // element type for arrays
	base     uint32 // base type for domains
	delim    byte   // for arrays: the element type's delimiter
	attrs    []attr // for composites: the attributes in order, dropped ones left out
}

// attr is an attribute of a composite type.
type attr struct {
	name string
	oid  uint32
}

// errNoType says the catalog has no such type (any more).
var errNoType = errors.New("no such type")

func newTypeCache(query func(ctx context.Context, oid uint32) (catalogType, error)) *typeCache {
	return &typeCache{types: map[uint32]*valueType{}, query: query}
}

// forgetUserTypes drops every cached user type, so that the next lookup
// reads the catalog again (after ALTER TYPE, a recreated type, a new
// attribute). Value types already handed out stay as they are.
func (c *typeCache) forgetUserTypes() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for oid := range c.types {
		if oid >= firstUserOID {
			delete(c.types, oid)
		}
	}
}

func (c *typeCache) lookup(ctx context.Context, oid uint32) (*valueType, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resolve(ctx, oid, 0)
}

func (c *typeCache) resolve(ctx context.Context, oid uint32, depth int) (*valueType, error) {
	if t, ok := c.types[oid]; ok {
		return t, nil
	}
	if depth > maxTypeDepth {
		return nil, fmt.Errorf("type %d: nested deeper than %d", oid, maxTypeDepth)
	}
	t, err := c.build(ctx, oid, depth)
	if err != nil {
		return nil, err
	}
	c.types[oid] = t
	return t, nil
}

func (c *typeCache) build(ctx context.Context, oid uint32, depth int) (*valueType, error) {
	if k, ok := builtinKinds[oid]; ok {
		return &valueType{kind: k}, nil
	}
	if pt, ok := builtins.TypeForOID(oid); ok {
		if ac, ok := pt.Codec.(*pgtype.ArrayCodec); ok {
			e, err := c.resolve(ctx, ac.ElementType.OID, depth+1)
			if err != nil {
				return nil, err
			}
			delim := byte(',')
			if ac.Delimiter != 0 {
				delim = ac.Delimiter
			}
			return &valueType{kind: kindArray, elem: e, delim: delim}, nil
		}
		return &valueType{kind: kindText}, nil
	}
	if c.query == nil {
		return &valueType{kind: kindText}, nil
	}
	ct, err := c.query(ctx, oid)
	if errors.Is(err, errNoType) {
		// Dropped since the change was made: its text is all there is.
		return &valueType{kind: kindText}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up type %d: %w", oid, err)
	}
	switch {
	case ct.typtype == 'd':
		return c.resolve(ctx, ct.base, depth+1)
	case ct.category == 'A' && ct.elem != 0:
		e, err := c.resolve(ctx, ct.elem, depth+1)
		if err != nil {
			return nil, err
		}
		return &valueType{kind: kindArray, elem: e, delim: ct.delim}, nil
	case ct.typtype == 'c':
		t := &valueType{kind: kindComposite, fields: make([]field, len(ct.attrs))}
		for i, a := range ct.attrs {
			ft, err := c.resolve(ctx, a.oid, depth+1)
			if err != nil {
				return nil, err
			}
			t.fields[i] = field{jsonName: append(change.AppendString(nil, a.name), ':'), typ: ft}
		}
		return t, nil
	default: // enums, ranges, multiranges, extension base types
		return &valueType{kind: kindText}, nil
	}
}

// queryCatalogType reads a type from pg_type (and, for a composite, its
// attributes from pg_attribute) over a regular connection.
func queryCatalogType(conn *pgx.Conn) func(ctx context.Context, oid uint32) (catalogType, error) {
	return func(ctx context.Context, oid uint32) (catalogType, error) {
		var (
			typtype, category, delim string
			relid                    uint32
			ct                       catalogType
		)
		// For an array the delimiter is the element type's typdelim.
		err := conn.QueryRow(ctx, `
			SELECT t.typtype::text, t.typcategory::text, t.typelem, t.typbasetype, t.typrelid,
			       coalesce((SELECT e.typdelim::text FROM pg_type e WHERE e.oid = t.typelem), ',')
			FROM pg_type t WHERE t.oid = $1`, oid).Scan(&typtype, &category, &ct.elem, &ct.base, &relid, &delim)
		if errors.Is(err, pgx.ErrNoRows) {
			return ct, errNoType
		}
		if err != nil {
			return ct, err
		}
		ct.typtype, ct.category, ct.delim = typtype[0], category[0], delim[0]
		if ct.typtype != 'c' {
			return ct, nil
		}
		rows, err := conn.Query(ctx, `
			SELECT attname, atttypid FROM pg_attribute
			WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, relid)
		if err != nil {
			return ct, err
		}
		ct.attrs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (attr, error) {
			var a attr
			return a, row.Scan(&a.name, &a.oid)
		})
		return ct, err
	}
}
