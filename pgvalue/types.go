package pgvalue

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

// Types resolves column type OIDs to value types. Built-in types are
// known statically; others (enums, domains, composites, arrays of them,
// extension types) are read from the catalog once and cached. Relation
// messages, which pgoutput sends again after a table or one of its types
// changed, drop the cached user types so that they are read again.
type Types struct {
	mu    sync.Mutex
	types map[uint32]*Type
	query CatalogQuery
}

// CatalogType is what the catalog says of a type.
type CatalogType struct {
	Typtype  byte   // b base, d domain, e enum, c composite, r range, m multirange, p pseudo
	Category byte   // typcategory; 'A' for arrays
	Elem     uint32 // element type for arrays
	Base     uint32 // base type for domains
	Delim    byte   // for arrays: the element type's delimiter
	Attrs    []Attr // for composites: the attributes in order, dropped ones left out
}

// Attr is an attribute of a composite type.
type Attr struct {
	Name string
	OID  uint32
}

// CatalogQuery reads a type from the catalog; it returns an error wrapping
// ErrNoType for a type that does not exist.
type CatalogQuery func(ctx context.Context, oid uint32) (CatalogType, error)

// ErrNoType says the catalog has no such type (any more).
var ErrNoType = errors.New("no such type")

// NewTypes returns an empty cache that reads user types with query; with a
// nil query every type that is not built in is text.
func NewTypes(query CatalogQuery) *Types {
	return &Types{types: map[uint32]*Type{}, query: query}
}

// ForgetUserTypes drops every cached user type, so that the next lookup
// reads the catalog again (after ALTER TYPE, a recreated type, a new
// attribute). Value types already handed out stay as they are.
func (c *Types) ForgetUserTypes() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for oid := range c.types {
		if oid >= firstUserOID {
			delete(c.types, oid)
		}
	}
}

// Lookup returns the value type of the type oid.
func (c *Types) Lookup(ctx context.Context, oid uint32) (*Type, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resolve(ctx, oid, 0)
}

func (c *Types) resolve(ctx context.Context, oid uint32, depth int) (*Type, error) {
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

func (c *Types) build(ctx context.Context, oid uint32, depth int) (*Type, error) {
	if k, ok := builtinKinds[oid]; ok {
		return &Type{kind: k}, nil
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
			return &Type{kind: kindArray, elem: e, delim: delim}, nil
		}
		return &Type{kind: kindText}, nil
	}
	if c.query == nil {
		return &Type{kind: kindText}, nil
	}
	ct, err := c.query(ctx, oid)
	if errors.Is(err, ErrNoType) {
		// Dropped since the change was made: its text is all there is.
		return &Type{kind: kindText}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up type %d: %w", oid, err)
	}
	switch {
	case ct.Typtype == 'd':
		return c.resolve(ctx, ct.Base, depth+1)
	case ct.Category == 'A' && ct.Elem != 0:
		e, err := c.resolve(ctx, ct.Elem, depth+1)
		if err != nil {
			return nil, err
		}
		return &Type{kind: kindArray, elem: e, delim: ct.Delim}, nil
	case ct.Typtype == 'c':
		t := &Type{kind: kindComposite, fields: make([]field, len(ct.Attrs))}
		for i, a := range ct.Attrs {
			ft, err := c.resolve(ctx, a.OID, depth+1)
			if err != nil {
				return nil, err
			}
			t.fields[i] = field{jsonName: append(change.AppendString(nil, a.Name), ':'), typ: ft}
		}
		return t, nil
	default: // enums, ranges, multiranges, extension base types
		return &Type{kind: kindText}, nil
	}
}

// QueryCatalog reads a type from pg_type (and, for a composite, its
// attributes from pg_attribute) over a regular connection.
func QueryCatalog(conn *pgx.Conn) CatalogQuery {
	return func(ctx context.Context, oid uint32) (CatalogType, error) {
		var (
			typtype, category, delim string
			relid                    uint32
			ct                       CatalogType
		)
		// For an array the delimiter is the element type's typdelim.
		err := conn.QueryRow(ctx, `
			SELECT t.typtype::text, t.typcategory::text, t.typelem, t.typbasetype, t.typrelid,
			       coalesce((SELECT e.typdelim::text FROM pg_type e WHERE e.oid = t.typelem), ',')
			FROM pg_type t WHERE t.oid = $1`, oid).Scan(&typtype, &category, &ct.Elem, &ct.Base, &relid, &delim)
		if errors.Is(err, pgx.ErrNoRows) {
			return ct, ErrNoType
		}
		if err != nil {
			return ct, err
		}
		ct.Typtype, ct.Category, ct.Delim = typtype[0], category[0], delim[0]
		if ct.Typtype != 'c' {
			return ct, nil
		}
		rows, err := conn.Query(ctx, `
			SELECT attname, atttypid FROM pg_attribute
			WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, relid)
		if err != nil {
			return ct, err
		}
		ct.Attrs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Attr, error) {
			var a Attr
			return a, row.Scan(&a.Name, &a.OID)
		})
		return ct, err
	}
}
