package backfill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/pgvalue"
)

// ErrInvalid is wrapped by the errors that say a backfill cannot be done as
// asked: a table that does not exist or has no primary key, a sink that does
// not receive it, a condition that does not parse.
var ErrInvalid = errors.New("cannot backfill")

// Table is a table as a backfill reads it: its columns as the stream sends
// them (not dropped, not generated, in attribute order), its primary key,
// and the ordering key the stream gives its rows.
type Table struct {
	Name config.Table
	// Estimate is the table's reltuples (summed over the partitions of a
	// partitioned table); -1 when it was never analysed.
	Estimate int64

	rel     *change.Relation
	cols    []column
	filter  string // the publication's row filter, or ""
	pk      []int  // primary key columns in key order, as indexes into cols
	keyCols []int  // the stream's ordering key (pgvalue.KeyColumns)
}

type column struct {
	name     string
	jsonName []byte // `"name":`
	typ      *pgvalue.Type
	sqlType  string // format_type, to cast keyset parameters
}

// Describe reads t from the catalog over conn, in a read-only
// transaction, with what publication carries of it: its column list and
// row filter. A table that does not exist or has no primary key is an
// error wrapping ErrInvalid that names it.
func Describe(ctx context.Context, conn *pgx.Conn, types *pgvalue.Types, t config.Table, publication string) (*Table, error) {
	var tb *Table
	err := readOnly(ctx, conn, func() (err error) {
		tb, err = describe(ctx, conn, types, t, publication)
		return err
	})
	return tb, err
}

func describe(ctx context.Context, conn *pgx.Conn, types *pgvalue.Types, t config.Table, publication string) (*Table, error) {
	var (
		oid                uint32
		identity, relkind  string
		estimate           float64
		estimateAvailable  bool
		partitionEstimates *float64
	)
	err := conn.QueryRow(ctx, `
		SELECT c.oid, c.relreplident::text, c.relkind::text, c.reltuples::float8, c.reltuples >= 0,
		       (SELECT sum(greatest(l.reltuples, 0))::float8 FROM pg_partition_tree(c.oid) p
		        JOIN pg_class l ON l.oid = p.relid WHERE p.isleaf AND c.relkind = 'p')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
		t.Schema, t.Name).Scan(&oid, &identity, &relkind, &estimate, &estimateAvailable, &partitionEstimates)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: table %s does not exist", ErrInvalid, t)
	}
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", t, err)
	}
	tb := &Table{Name: t, Estimate: -1}
	switch {
	case relkind == "p" && partitionEstimates != nil:
		tb.Estimate = int64(*partitionEstimates)
	case estimateAvailable:
		tb.Estimate = int64(estimate)
	}

	rows, err := conn.Query(ctx, `
		SELECT attname, atttypid, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
		ORDER BY attnum`, oid)
	if err != nil {
		return nil, fmt.Errorf("describe %s: columns: %w", t, err)
	}
	type attr struct {
		name, sqlType string
		oid           uint32
	}
	attrs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (attr, error) {
		var a attr
		return a, row.Scan(&a.name, &a.oid, &a.sqlType)
	})
	if err != nil {
		return nil, fmt.Errorf("describe %s: columns: %w", t, err)
	}
	pub, err := publishedOf(ctx, conn, publication, oid)
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", t, err)
	}
	if pub.columns != nil {
		attrs = slices.DeleteFunc(attrs, func(a attr) bool { return !slices.Contains(pub.columns, a.name) })
	}
	tb.filter = pub.filter
	pk, err := indexColumns(ctx, conn, oid, "indisprimary")
	if err != nil {
		return nil, fmt.Errorf("describe %s: primary key: %w", t, err)
	}
	if len(pk) == 0 {
		return nil, fmt.Errorf("%w: table %s has no primary key; a backfill reads rows in primary key order (ALTER TABLE %s ADD PRIMARY KEY (...)), or leave the table out with --table",
			ErrInvalid, t, t.Quoted())
	}
	var identityCols []string
	switch identity {
	case "d":
		identityCols = pk
	case "i":
		if identityCols, err = indexColumns(ctx, conn, oid, "indisreplident"); err != nil {
			return nil, fmt.Errorf("describe %s: replica identity: %w", t, err)
		}
	}

	names := make([]string, len(attrs))
	isIdentity := make([]bool, len(attrs))
	tb.rel = &change.Relation{Schema: t.Schema, Name: t.Name, Table: t.String(), Identity: identity[0], Columns: make([]change.Column, len(attrs))}
	for i, a := range attrs {
		typ, err := types.Lookup(ctx, a.oid)
		if err != nil {
			return nil, fmt.Errorf("describe %s: column %s: %w", t, a.name, err)
		}
		names[i] = a.name
		isIdentity[i] = identity == "f" || contains(identityCols, a.name)
		tb.cols = append(tb.cols, column{name: a.name, jsonName: append(change.AppendString(nil, a.name), ':'), typ: typ, sqlType: a.sqlType})
		tb.rel.Columns[i] = change.Column{Name: a.name, Identity: isIdentity[i]}
	}
	for _, k := range pk {
		i := indexOf(names, k)
		if i < 0 {
			return nil, fmt.Errorf("%w: publication %q leaves primary key column %s of %s out of its column list, and a backfill reads rows in primary key order; add the column to the publication (ALTER PUBLICATION ... SET TABLE %s (...))",
				ErrInvalid, publication, quoteIdent(k), t, t.Quoted())
		}
		tb.pk = append(tb.pk, i)
	}
	tb.keyCols = pgvalue.KeyColumns(tb.rel.Identity, names, isIdentity, pk)
	tb.rel.Key = tb.keyCols
	return tb, nil
}

// indexColumns returns the columns, in index order, of the table's index
// for which flag (indisprimary, indisreplident) holds.
func indexColumns(ctx context.Context, conn *pgx.Conn, relid uint32, flag string) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT a.attname FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.`+flag+` ORDER BY k.ord`, relid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func contains(list []string, s string) bool { return indexOf(list, s) >= 0 }

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
