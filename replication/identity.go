package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
)

// Identity is what a captured table's replica identity gives walhook, as
// `walhook check` reports it.
type Identity struct {
	Table config.Table
	// Mode is the table's REPLICA IDENTITY: "default", "full", "index" or
	// "nothing".
	Mode string
	// Key lists the columns whose values order the table's messages per
	// row; empty means the whole table travels in one lane.
	Key []string
	// Findings say what the identity cannot give, most severe first.
	Findings []Finding
}

// Finding is one thing CheckReplicaIdentity found about a table.
type Finding struct {
	// Blocking findings break the application, not only walhook: while the
	// table is published, PostgreSQL rejects its UPDATE and DELETE
	// statements.
	Blocking bool
	Message  string // what is wrong and what would be right
}

// IdentityNeeds says what the configured sinks rely on.
type IdentityNeeds struct {
	// OldValues: some sink reads `changes` (the old values of an update)
	// or whole deleted rows, which need REPLICA IDENTITY FULL.
	OldValues bool
	// ColumnLists are the tables whose publication has (or will have) a
	// column list: REPLICA IDENTITY FULL would make PostgreSQL reject
	// their updates and deletes, so it is not suggested for them.
	ColumnLists map[config.Table]bool
}

// CheckReplicaIdentity reports, for each table src captures, its replica
// identity and what that identity cannot give: updates and deletes that
// PostgreSQL will refuse, old values that `changes` will lack, unchanged
// TOASTed values left out of records, and tables without a key, whose
// messages travel in one lane. The tables are the publication's when it
// exists, else the configured ones (every user table for "*"); a
// configured table that does not exist is left out. A partitioned table's
// partitions are checked too: their identities decide what updates carry.
func CheckReplicaIdentity(ctx context.Context, conn *pgx.Conn, src config.Source, needs IdentityNeeds) ([]Identity, error) {
	oids, err := capturedOIDs(ctx, conn, src)
	if err != nil {
		return nil, err
	}
	out := make([]Identity, 0, len(oids))
	for _, oid := range oids {
		id, err := tableIdentity(ctx, conn, oid, needs)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

// capturedOIDs lists the tables src captures, by OID, ordered by name.
func capturedOIDs(ctx context.Context, conn *pgx.Conn, src config.Source) ([]uint32, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", src.Publication).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read publication %q: %w", src.Publication, err)
	}
	var (
		rows pgx.Rows
		err  error
	)
	switch {
	case exists:
		// With publish_via_partition_root the view lists roots, not partitions.
		rows, err = conn.Query(ctx, `
			SELECT c.oid FROM pg_publication_tables p
			JOIN pg_namespace n ON n.nspname = p.schemaname
			JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
			WHERE p.pubname = $1 ORDER BY p.schemaname, p.tablename`, src.Publication)
	case src.AllTables():
		rows, err = conn.Query(ctx, `
			SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
			AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
			ORDER BY n.nspname, c.relname`)
	default:
		schemas := make([]string, len(src.Tables))
		names := make([]string, len(src.Tables))
		for i, t := range src.Tables {
			schemas[i], names[i] = t.Schema, t.Name
		}
		rows, err = conn.Query(ctx, `
			SELECT c.oid FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(schema, name, n)
			JOIN pg_namespace s ON s.nspname = t.schema
			JOIN pg_class c ON c.relnamespace = s.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
			ORDER BY t.n`, schemas, names)
	}
	if err != nil {
		return nil, fmt.Errorf("list captured tables: %w", err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, fmt.Errorf("list captured tables: %w", err)
	}
	return oids, nil
}

// relIdentity is one table's identity as the catalog has it.
type relIdentity struct {
	table     config.Table
	mode      byte     // relreplident
	pk        []string // primary key columns, in key order
	index     []string // columns of the REPLICA IDENTITY USING INDEX index
	indexName string
	toastable bool // has a column whose values may be stored out of line
	leaf      bool // a partition holding rows, or a plain table
}

func readRelIdentity(ctx context.Context, conn *pgx.Conn, oid uint32) (relIdentity, error) {
	var (
		r         relIdentity
		mode      string
		relkind   string
		indexName *string
	)
	err := conn.QueryRow(ctx, `
		SELECT n.nspname, c.relname, c.relreplident::text, c.relkind::text,
			coalesce((SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i
				CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
			coalesce((SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i
				CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE i.indrelid = c.oid AND i.indisreplident), '{}'),
			(SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),
			EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
				AND NOT a.attisdropped AND a.attstorage IN ('x', 'e'))
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, oid).
		Scan(&r.table.Schema, &r.table.Name, &mode, &relkind, &r.pk, &r.index, &indexName, &r.toastable)
	if err != nil {
		return r, err
	}
	r.mode, r.leaf = mode[0], relkind != "p"
	if indexName != nil {
		r.indexName = *indexName
	}
	return r, nil
}

// blocking says why PostgreSQL rejects updates and deletes of r while it is
// published, or "" if it does not.
func (r relIdentity) blocking() string {
	switch {
	case r.mode == 'n':
		return "has REPLICA IDENTITY NOTHING"
	case r.mode == 'd' && len(r.pk) == 0:
		return "has no primary key and REPLICA IDENTITY DEFAULT"
	case r.mode == 'i' && len(r.index) == 0:
		return "has REPLICA IDENTITY USING INDEX, but the index is gone"
	}
	return ""
}

func tableIdentity(ctx context.Context, conn *pgx.Conn, oid uint32, needs IdentityNeeds) (Identity, error) {
	r, err := readRelIdentity(ctx, conn, oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return Identity{}, fmt.Errorf("read replica identity of table %d: dropped while walhook checked it", oid)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("read replica identity of table %d: %w", oid, err)
	}
	id := Identity{Table: r.table, Mode: map[byte]string{'d': "default", 'f': "full", 'i': "index", 'n': "nothing"}[r.mode]}
	name := r.table.Quoted()

	// Partitions: updates and deletes are checked against the partition's
	// own identity, and its old rows are what the root's messages carry.
	leaves := []relIdentity{r}
	if !r.leaf {
		if leaves, err = leafIdentities(ctx, conn, oid); err != nil {
			return id, err
		}
	}
	allFull, toastable := true, false
	for _, l := range leaves {
		if why := l.blocking(); why != "" {
			what := "it"
			if l.table != r.table {
				what = "partition " + l.table.Quoted()
			}
			id.Findings = append(id.Findings, Finding{Blocking: true, Message: fmt.Sprintf(
				"%s %s: PostgreSQL rejects UPDATE and DELETE on it while it is published; %s",
				what, why, "add a primary key, or run ALTER TABLE "+l.table.Quoted()+" REPLICA IDENTITY FULL")})
		}
		allFull = allFull && l.mode == 'f'
		toastable = toastable || (l.toastable && l.mode != 'f')
	}

	// The key that groups a row's messages: what decode.go uses.
	id.Key = r.pk
	if r.mode == 'i' {
		id.Key = r.index
	}
	if len(id.Key) == 0 {
		id.Findings = append(id.Findings, Finding{Message: "no primary key to group rows by: all its messages travel in one lane, one batch at a time; a primary key lets rows travel in parallel"})
	} else if r.mode == 'i' && len(r.pk) > 0 && strings.Join(r.pk, ",") != strings.Join(r.index, ",") {
		id.Findings = append(id.Findings, Finding{Message: fmt.Sprintf(
			"rows are grouped by the replica identity index %s (%s), not the primary key: a delete carries only those columns",
			r.indexName, strings.Join(r.index, ", "))})
	}
	full := "ALTER TABLE " + name + " REPLICA IDENTITY FULL gives every old value"
	fill := "run ALTER TABLE " + name + " REPLICA IDENTITY FULL to fill it in from the old row"
	if needs.ColumnLists[r.table] {
		full = "REPLICA IDENTITY FULL would give every old value, but not with the publication's column list (PostgreSQL would reject every UPDATE and DELETE)"
		fill = "REPLICA IDENTITY FULL would fill it in, but not with the publication's column list"
	}
	if !allFull && needs.OldValues {
		id.Findings = append(id.Findings, Finding{Message: "changes holds old values only when the key changes, and a delete carries only the key; " + full})
	}
	if toastable {
		id.Findings = append(id.Findings, Finding{Message: "an update that leaves a large (TOASTed) value alone leaves it out of record and names it in metadata.unchanged_toast_columns; " + fill})
	}
	return id, nil
}

// CheckGroupBy returns a problem for each sink's group_by that a captured
// table cannot support. Per-row order under group_by needs every version
// of a row, its delete too, to carry the group_by columns: so they must be
// in the replica identity (what a delete's old row and an update's old key
// hold), or the identity must be FULL; for a partitioned table, in each
// partition's. A group_by column the table lacks is a problem too. Tables
// that do not exist are left to the other checks.
func CheckGroupBy(ctx context.Context, conn *pgx.Conn, sinks []config.Sink) ([]string, error) {
	var problems []string
	for _, s := range sinks {
		for _, t := range sortedTables(s.GroupBy) {
			cols := s.GroupBy[t]
			var oid *uint32
			if err := conn.QueryRow(ctx, "SELECT to_regclass($1)::oid", t.Quoted()).Scan(&oid); err != nil {
				return nil, fmt.Errorf("look up table %s: %w", t, err)
			}
			if oid == nil {
				continue
			}
			rows, err := conn.Query(ctx, `SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, *oid)
			if err != nil {
				return nil, fmt.Errorf("read columns of %s: %w", t, err)
			}
			have, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return nil, fmt.Errorf("read columns of %s: %w", t, err)
			}
			missing := false
			for _, c := range cols {
				if !slices.Contains(have, c) {
					missing = true
					problems = append(problems, fmt.Sprintf("sink %q: group_by %s: column %q does not exist; group by columns of %s: %s",
						s.Name, t, c, t, strings.Join(have, ", ")))
				}
			}
			if missing {
				continue
			}
			leaves, err := leafIdentities(ctx, conn, *oid)
			if err != nil {
				return nil, err
			}
			for _, l := range leaves {
				if why := l.groupByGap(cols); why != "" {
					what := ""
					if l.table != t {
						what = " (partition " + l.table.Quoted() + ")"
					}
					problems = append(problems, fmt.Sprintf(
						"sink %q: group_by %s [%s]%s: %s, so a delete, which carries only those, cannot be kept after the row's earlier changes; "+
							"run ALTER TABLE %s REPLICA IDENTITY FULL, or group by columns of the replica identity",
						s.Name, t, strings.Join(cols, ", "), what, why, l.table.Quoted()))
				}
			}
		}
	}
	return problems, nil
}

// groupByGap says why r's identity cannot carry cols in every message of a
// row, or "" if it can.
func (r relIdentity) groupByGap(cols []string) string {
	var ident []string
	switch {
	case r.mode == 'f':
		return ""
	case r.mode == 'n' || r.blocking() != "":
		return "" // only inserts are published
	case r.mode == 'i':
		ident = r.index
	default:
		ident = r.pk
	}
	for _, c := range cols {
		if !slices.Contains(ident, c) {
			return fmt.Sprintf("%q is not in the replica identity (%s)", c, strings.Join(ident, ", "))
		}
	}
	return ""
}

// leafIdentities returns the identity of the table with oid, or of each of
// its partitions when it is partitioned.
func leafIdentities(ctx context.Context, conn *pgx.Conn, oid uint32) ([]relIdentity, error) {
	r, err := readRelIdentity(ctx, conn, oid)
	if err != nil {
		return nil, fmt.Errorf("read replica identity of table %d: %w", oid, err)
	}
	if r.leaf {
		return []relIdentity{r}, nil
	}
	rows, err := conn.Query(ctx, `SELECT relid::oid FROM pg_partition_tree($1::oid::regclass) WHERE isleaf AND relid::oid <> $1`, oid)
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", r.table.Quoted(), err)
	}
	parts, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", r.table.Quoted(), err)
	}
	out := make([]relIdentity, 0, len(parts))
	for _, p := range parts {
		l, err := readRelIdentity(ctx, conn, p)
		if err != nil {
			return nil, fmt.Errorf("read replica identity of a partition of %s: %w", r.table.Quoted(), err)
		}
		out = append(out, l)
	}
	return out, nil
}

// sortedTables returns the tables of m in name order.
func sortedTables(m map[config.Table][]string) []config.Table {
	out := make([]config.Table, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b config.Table) int { return strings.Compare(a.String(), b.String()) })
	return out
}
