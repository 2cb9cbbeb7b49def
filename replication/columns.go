package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
)

// columnListVersion is the first server_version_num whose publications
// can have column lists.
const columnListVersion = 150000

// serverVersion returns the server's server_version_num.
func serverVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var v int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		return 0, fmt.Errorf("read server_version_num: %w", err)
	}
	return v, nil
}

// NoColumnListsMessage says what source.columns does on a server without
// publication column lists; walhook run logs it and check prints it.
const NoColumnListsMessage = "PostgreSQL before 15 has no publication column lists: walhook removes the columns source.columns leaves out " +
	"from every message, but they still leave PostgreSQL; PostgreSQL 15 or later keeps them in the database"

// tableColumns returns the columns of the table with oid that pgoutput can
// publish (generated columns are never published), in column order.
func tableColumns(ctx context.Context, conn *pgx.Conn, oid uint32) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT attname::text FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// columnList works out the publication column list of table t under sel:
// nil when sel keeps every column, so the table needs no list. It refuses
// a list that names a column the table lacks (a typo in exclude would let
// the real column through), that keeps no column, or that leaves out a
// replica identity column: PostgreSQL would then reject every UPDATE and
// DELETE of the table (the check runs at each statement, not when the
// publication is made). A table that does not exist has no list; creating
// the publication reports it.
func columnList(ctx context.Context, conn *pgx.Conn, t config.Table, sel config.Columns) ([]string, error) {
	var oid *uint32
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1)::oid", t.Quoted()).Scan(&oid); err != nil {
		return nil, fmt.Errorf("look up table %s: %w", t, err)
	}
	if oid == nil {
		return nil, nil
	}
	have, err := tableColumns(ctx, conn, *oid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", t, err)
	}
	for _, c := range slices.Concat(sel.Include, sel.Exclude) {
		if !slices.Contains(have, c) {
			return nil, fmt.Errorf("source.columns %s: %s has no column %q; name columns of the table (%s), as written in its definition (case counts)",
				t, t, c, strings.Join(have, ", "))
		}
	}
	var list []string
	for _, c := range have {
		if sel.Keeps(c) {
			list = append(list, c)
		}
	}
	if len(list) == len(have) {
		return nil, nil
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("source.columns %s leaves out every column of the table; keep at least its key, or take %s out of source.tables", t, t)
	}
	leaves, err := leafIdentities(ctx, conn, *oid)
	if err != nil {
		return nil, err
	}
	for _, l := range leaves {
		if err := l.coveredBy(t, list); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// coveredBy refuses a column list of table t that lacks one of r's replica
// identity columns (r is t or one of its partitions).
func (r relIdentity) coveredBy(t config.Table, list []string) error {
	what := t.String()
	if r.table != t {
		what = fmt.Sprintf("%s (partition %s)", t, r.table)
	}
	const instead = "or leave the columns out with sinks[].columns instead, which removes them in walhook"
	var ident []string
	switch {
	case r.mode == 'f':
		return fmt.Errorf("source.columns %s: %s has REPLICA IDENTITY FULL, which makes every column part of the replica identity, "+
			"and PostgreSQL rejects every UPDATE and DELETE of a table whose publication column list leaves out a replica identity column; "+
			"run ALTER TABLE %s REPLICA IDENTITY DEFAULT (its primary key) and keep the key in source.columns, %s",
			t, what, r.table.Quoted(), instead)
	case r.mode == 'n' || r.blocking() != "":
		return nil // PostgreSQL rejects its updates and deletes anyway; CheckReplicaIdentity says so
	case r.mode == 'i':
		ident = r.index
	default:
		ident = r.pk
	}
	var missing []string
	for _, c := range ident {
		if !slices.Contains(list, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("source.columns %s leaves out %s, of the replica identity (%s) of %s, and PostgreSQL rejects every UPDATE and DELETE "+
		"of a table whose publication column list leaves out a replica identity column; keep %s in source.columns, %s",
		t, strings.Join(missing, ", "), strings.Join(ident, ", "), what, strings.Join(missing, ", "), instead)
}

// publicationTables returns the FOR TABLE list of a new publication: each
// table of src, with its column list when source.columns gives it one.
func publicationTables(ctx context.Context, conn *pgx.Conn, src config.Source) (string, error) {
	names := make([]string, len(src.Tables))
	for i, t := range src.Tables {
		var list []string
		if sel, ok := src.Columns[t]; ok {
			var err error
			if list, err = columnList(ctx, conn, t, sel); err != nil {
				return "", err
			}
		}
		names[i] = tableWithColumns(t, list)
	}
	return strings.Join(names, ", "), nil
}

// tableWithColumns is t as a publication lists it: "schema"."name", then
// its column list, if any.
func tableWithColumns(t config.Table, list []string) string {
	if list == nil {
		return t.Quoted()
	}
	quoted := make([]string, len(list))
	for i, c := range list {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	return t.Quoted() + " (" + strings.Join(quoted, ", ") + ")"
}

// PublishedColumns is what a publication publishes of one of its tables,
// against source.columns.
type PublishedColumns struct {
	Table config.Table
	// Columns are the published columns; every column when List is false.
	Columns []string
	List    bool // the table has a column list
	// Leaked are published columns that source.columns leaves out: walhook
	// removes them from every message, but they leave PostgreSQL.
	Leaked []string
	// Missing are columns source.columns includes that the list leaves
	// out: they never arrive.
	Missing []string
	// Blocking, when set, says why PostgreSQL rejects UPDATE and DELETE of
	// the table: its column list lacks a replica identity column.
	Blocking string
}

// ColumnReport compares a publication's column lists with source.columns,
// for `walhook check` and for the warning walhook run gives about an
// existing publication.
type ColumnReport struct {
	// Supported: the server has column lists (PostgreSQL 15+).
	Supported bool
	// Exists: the publication exists. When it does not, Planned holds the
	// column lists walhook would create it with, or PlanErr why it cannot.
	Exists  bool
	Planned map[config.Table][]string
	PlanErr error
	// AllTables: the publication is FOR ALL TABLES, so it has no column
	// lists.
	AllTables bool
	Tables    []PublishedColumns // the publication's tables, by name
	// Fix is the ALTER PUBLICATION that makes the publication agree with
	// source.columns, when some table disagrees and one statement can;
	// FixErr says why none can.
	Fix    string
	FixErr error
}

// Listed returns the tables that have a column list, or will have one
// when walhook creates the publication.
func (rep ColumnReport) Listed() map[config.Table]bool {
	listed := make(map[config.Table]bool)
	for t, list := range rep.Planned {
		listed[t] = list != nil
	}
	for _, pc := range rep.Tables {
		listed[pc.Table] = pc.List
	}
	return listed
}

// CheckColumnLists compares the publication of src with src.Columns. On a
// server before PostgreSQL 15 it reports only that lists are not
// supported.
func CheckColumnLists(ctx context.Context, conn *pgx.Conn, src config.Source) (ColumnReport, error) {
	var rep ColumnReport
	v, err := serverVersion(ctx, conn)
	if err != nil {
		return rep, err
	}
	if rep.Supported = v >= columnListVersion; !rep.Supported {
		return rep, nil
	}
	err = conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", src.Publication).Scan(&rep.AllTables)
	if errors.Is(err, pgx.ErrNoRows) {
		rep.Planned = make(map[config.Table][]string)
		for _, t := range src.Tables {
			if sel, ok := src.Columns[t]; ok {
				list, err := columnList(ctx, conn, t, sel)
				if err != nil {
					rep.PlanErr = err
					break
				}
				rep.Planned[t] = list
			}
		}
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("read publication %q: %w", src.Publication, err)
	}
	rep.Exists = true
	rows, err := conn.Query(ctx, `
		SELECT n.nspname::text, c.relname::text, c.oid,
			coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
				WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
				AND (r.prattrs IS NULL OR a.attnum = ANY (r.prattrs::int2[]))), '{}'),
			r.prattrs IS NOT NULL, r.prrelid IS NOT NULL
		FROM pg_publication_tables p
		JOIN pg_publication pub ON pub.pubname = p.pubname
		JOIN pg_namespace n ON n.nspname = p.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
		LEFT JOIN pg_publication_rel r ON r.prpubid = pub.oid AND r.prrelid = c.oid
		WHERE p.pubname = $1 ORDER BY n.nspname, c.relname`, src.Publication)
	if err != nil {
		return rep, fmt.Errorf("read column lists of publication %q: %w", src.Publication, err)
	}
	type row struct {
		table  config.Table
		oid    uint32
		cols   []string
		list   bool
		listed bool // listed by table, not through FOR ALL TABLES or a schema
	}
	var tables []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.table.Schema, &r.table.Name, &r.oid, &r.cols, &r.list, &r.listed); err != nil {
			rows.Close()
			return rep, fmt.Errorf("read column lists of publication %q: %w", src.Publication, err)
		}
		tables = append(tables, r)
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("read column lists of publication %q: %w", src.Publication, err)
	}

	disagree, byTable := false, true
	fix := make([]string, 0, len(tables))
	for _, r := range tables {
		pc := PublishedColumns{Table: r.table, Columns: r.cols, List: r.list}
		sel, selected := src.Columns[r.table]
		for _, c := range r.cols {
			if selected && !sel.Keeps(c) {
				pc.Leaked = append(pc.Leaked, c)
			}
		}
		if r.list {
			for _, c := range sel.Include {
				if !slices.Contains(r.cols, c) {
					pc.Missing = append(pc.Missing, c)
				}
			}
			leaves, err := leafIdentities(ctx, conn, r.oid)
			if err != nil {
				return rep, err
			}
			for _, l := range leaves {
				if err := l.coveredBy(r.table, r.cols); err != nil {
					pc.Blocking = fmt.Sprintf("its column list (%s) leaves out a replica identity column: PostgreSQL rejects every UPDATE and DELETE of it",
						strings.Join(r.cols, ", "))
					break
				}
			}
		}
		disagree = disagree || len(pc.Leaked) > 0 || len(pc.Missing) > 0
		byTable = byTable && r.listed
		rep.Tables = append(rep.Tables, pc)

		// The fix keeps every table, with the list source.columns asks
		// for, or the one it has.
		list := r.cols
		if !r.list {
			list = nil
		}
		if selected && rep.FixErr == nil {
			if list, err = columnList(ctx, conn, r.table, sel); err != nil {
				rep.FixErr = err
			}
		}
		fix = append(fix, tableWithColumns(r.table, list))
	}
	switch {
	case !disagree:
	case rep.AllTables || !byTable:
		rep.FixErr = fmt.Errorf("publication %q takes tables FOR ALL TABLES or from a schema, which cannot have column lists; "+
			"a publication that lists its tables FOR TABLE can", src.Publication)
	case rep.FixErr == nil:
		rep.Fix = fmt.Sprintf("ALTER PUBLICATION %s SET TABLE %s", pgx.Identifier{src.Publication}.Sanitize(), strings.Join(fix, ", "))
	}
	return rep, nil
}

// warnColumnLists logs, for an existing publication, what source.columns
// cannot keep in PostgreSQL.
func warnColumnLists(ctx context.Context, conn *pgx.Conn, src config.Source, log *slog.Logger) error {
	rep, err := CheckColumnLists(ctx, conn, src)
	if err != nil {
		return err
	}
	if !rep.Supported {
		log.Warn(NoColumnListsMessage, "publication", src.Publication)
		return nil
	}
	for _, pc := range rep.Tables {
		if len(pc.Leaked) == 0 {
			continue
		}
		fix := rep.Fix
		if fix == "" && rep.FixErr != nil {
			fix = rep.FixErr.Error()
		}
		log.Warn("publication publishes columns that source.columns leaves out: walhook removes them from every message, but they leave PostgreSQL; "+
			"walhook leaves an existing publication as it is: "+fix,
			"publication", src.Publication, "table", pc.Table.String(), "columns", strings.Join(pc.Leaked, ","))
	}
	return nil
}
