package replication

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// builtinKinds maps the OIDs of common built-in scalar types to their
// mapping, so they need no catalog look-up.
var builtinKinds = map[uint32]kind{
	pgtype.Int2OID:        kindInt,
	pgtype.Int4OID:        kindInt,
	pgtype.Int8OID:        kindInt,
	pgtype.OIDOID:         kindInt,
	pgtype.XIDOID:         kindInt,
	pgtype.CIDOID:         kindInt,
	pgtype.Float4OID:      kindFloat,
	pgtype.Float8OID:      kindFloat,
	pgtype.NumericOID:     kindNumeric,
	pgtype.BoolOID:        kindBool,
	pgtype.JSONOID:        kindJSON,
	pgtype.JSONBOID:       kindJSON,
	pgtype.ByteaOID:       kindBytea,
	pgtype.TimestampOID:   kindTimestamp,
	pgtype.TimestamptzOID: kindTimestamptz,
	pgtype.TextOID:        kindText,
	pgtype.VarcharOID:     kindText,
	pgtype.BPCharOID:      kindText,
	pgtype.NameOID:        kindText,
	pgtype.UUIDOID:        kindText,
	pgtype.DateOID:        kindText,
	pgtype.TimeOID:        kindText,
	pgtype.TimetzOID:      kindText,
	pgtype.IntervalOID:    kindText,
	pgtype.QCharOID:       kindText,
	pgtype.BoxOID:         kindText,
}

// builtinArrays maps built-in array type OIDs to their element OIDs.
var builtinArrays = map[uint32]uint32{
	pgtype.Int2ArrayOID:        pgtype.Int2OID,
	pgtype.Int4ArrayOID:        pgtype.Int4OID,
	pgtype.Int8ArrayOID:        pgtype.Int8OID,
	pgtype.OIDArrayOID:         pgtype.OIDOID,
	pgtype.Float4ArrayOID:      pgtype.Float4OID,
	pgtype.Float8ArrayOID:      pgtype.Float8OID,
	pgtype.NumericArrayOID:     pgtype.NumericOID,
	pgtype.BoolArrayOID:        pgtype.BoolOID,
	pgtype.JSONArrayOID:        pgtype.JSONOID,
	pgtype.JSONBArrayOID:       pgtype.JSONBOID,
	pgtype.ByteaArrayOID:       pgtype.ByteaOID,
	pgtype.TimestampArrayOID:   pgtype.TimestampOID,
	pgtype.TimestamptzArrayOID: pgtype.TimestamptzOID,
	pgtype.TextArrayOID:        pgtype.TextOID,
	pgtype.VarcharArrayOID:     pgtype.VarcharOID,
	pgtype.BPCharArrayOID:      pgtype.BPCharOID,
	pgtype.NameArrayOID:        pgtype.NameOID,
	pgtype.UUIDArrayOID:        pgtype.UUIDOID,
	pgtype.DateArrayOID:        pgtype.DateOID,
	pgtype.TimeArrayOID:        pgtype.TimeOID,
	pgtype.IntervalArrayOID:    pgtype.IntervalOID,
	pgtype.InetArrayOID:        pgtype.InetOID,
	pgtype.CIDRArrayOID:        pgtype.CIDROID,
	pgtype.MacaddrArrayOID:     pgtype.MacaddrOID,
	pgtype.QCharArrayOID:       pgtype.QCharOID,
	pgtype.BoxArrayOID:         pgtype.BoxOID,
	pgtype.XIDArrayOID:         pgtype.XIDOID,
	pgtype.CIDArrayOID:         pgtype.CIDOID,
	pgtype.BitArrayOID:         pgtype.BitOID,
	pgtype.VarbitArrayOID:      pgtype.VarbitOID,
	pgtype.TimetzArrayOID:      pgtype.TimetzOID,
}

// firstUserOID is where OIDs of objects created after initdb begin.
const firstUserOID = 16384

// typeCache resolves column type OIDs to value types. Common built-in types
// are known statically; others (domains, enums, arrays of them, extension
// types) are looked up in the catalog once and cached. A user type is looked
// up again when a Relation message names it, since it may have changed.
type typeCache struct {
	mu    sync.Mutex
	types map[uint32]*valueType
	query func(ctx context.Context, oid uint32) (catalogType, error)
}

// catalogType is a row of pg_type.
type catalogType struct {
	typtype  byte   // b base, d domain, e enum, c composite, r range, m multirange, p pseudo
	category byte   // typcategory; 'A' for arrays
	elem     uint32 // element type for arrays
	base     uint32 // base type for domains
	delim    byte
}

func newTypeCache(query func(ctx context.Context, oid uint32) (catalogType, error)) *typeCache {
	return &typeCache{types: map[uint32]*valueType{}, query: query}
}

// forget drops a cached user type so that the next lookup reads the catalog
// again (a Relation message after ALTER TYPE or a recreated type).
func (c *typeCache) forget(oid uint32) {
	if oid >= firstUserOID {
		c.mu.Lock()
		delete(c.types, oid)
		c.mu.Unlock()
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
	if depth > 16 {
		return nil, fmt.Errorf("type %d: domain or array nesting deeper than 16", oid)
	}
	var t *valueType
	if k, ok := builtinKinds[oid]; ok {
		t = &valueType{kind: k}
	} else if elem, ok := builtinArrays[oid]; ok {
		e, err := c.resolve(ctx, elem, depth+1)
		if err != nil {
			return nil, err
		}
		t = &valueType{kind: kindArray, elem: e, delim: ','}
	} else if c.query == nil {
		t = &valueType{kind: kindText}
	} else {
		ct, err := c.query(ctx, oid)
		if err != nil {
			return nil, fmt.Errorf("look up type %d: %w", oid, err)
		}
		switch {
		case ct.typtype == 'd':
			base, err := c.resolve(ctx, ct.base, depth+1)
			if err != nil {
				return nil, err
			}
			t = base
		case ct.category == 'A' && ct.elem != 0:
			e, err := c.resolve(ctx, ct.elem, depth+1)
			if err != nil {
				return nil, err
			}
			t = &valueType{kind: kindArray, elem: e, delim: ct.delim}
		default:
			t = &valueType{kind: kindText}
		}
	}
	c.types[oid] = t
	return t, nil
}

// queryCatalogType reads one pg_type row over a regular connection.
func queryCatalogType(conn *pgx.Conn) func(ctx context.Context, oid uint32) (catalogType, error) {
	return func(ctx context.Context, oid uint32) (catalogType, error) {
		var (
			typtype, category, delim string
			ct                       catalogType
		)
		// For an array the delimiter is the element type's typdelim.
		err := conn.QueryRow(ctx, `
			SELECT t.typtype::text, t.typcategory::text, t.typelem, t.typbasetype,
			       coalesce((SELECT e.typdelim::text FROM pg_type e WHERE e.oid = t.typelem), ',')
			FROM pg_type t WHERE t.oid = $1`, oid).Scan(&typtype, &category, &ct.elem, &ct.base, &delim)
		if err != nil {
			return ct, err
		}
		ct.typtype, ct.category, ct.delim = typtype[0], category[0], delim[0]
		return ct, nil
	}
}
