package backfill

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// published is what a publication carries of a table: its column list
// (nil: every column) and its row filter ("": every row).
type published struct {
	columns []string
	filter  string
}

// publishedOf reads what publication carries of the table with oid, so
// that a backfill reads what the stream would: pg_publication_tables'
// attnames and rowfilter (PostgreSQL 15 and later; before, publications
// have neither and every column and row is published). For a partition,
// the entry of its topmost published ancestor applies: with
// publish_via_partition_root the root's, without it the partition's own.
// A table the publication does not list has no filter (a sink's tables
// are checked against the publication elsewhere).
func publishedOf(ctx context.Context, conn *pgx.Conn, publication string, oid uint32) (published, error) {
	if publication == "" {
		return published{}, nil
	}
	var has bool
	if err := conn.QueryRow(ctx, `SELECT count(*) = 2 FROM pg_attribute
		WHERE attrelid = 'pg_catalog.pg_publication_tables'::regclass AND attname IN ('attnames', 'rowfilter')`).Scan(&has); err != nil {
		return published{}, fmt.Errorf("read pg_publication_tables' columns: %w", err)
	}
	if !has {
		return published{}, nil
	}
	var p published
	var filter *string
	err := conn.QueryRow(ctx, `
		SELECT pt.attnames::text[], pt.rowfilter
		FROM (SELECT $2::regclass AS relid, 0 AS depth
		      UNION ALL SELECT relid, ord FROM pg_partition_ancestors($2::regclass) WITH ORDINALITY a(relid, ord)) a
		JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_publication_tables pt ON pt.pubname = $1 AND pt.schemaname = n.nspname AND pt.tablename = c.relname
		ORDER BY a.depth DESC LIMIT 1`, publication, oid).Scan(&p.columns, &filter)
	if errors.Is(err, pgx.ErrNoRows) {
		return published{}, nil
	}
	if err != nil {
		return published{}, fmt.Errorf("read publication %q's column list and row filter: %w", publication, err)
	}
	if filter != nil {
		p.filter = *filter
	}
	return p, nil
}
