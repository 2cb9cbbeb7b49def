package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/config"
)

// Privileges is what `walhook check` found of the role walhook connects as.
type Privileges struct {
	Role        string // as SQL writes it: quote_ident(current_user)
	Database    string // likewise, current_database()
	Superuser   bool
	Replication bool // the REPLICATION attribute, superuser, or (on Amazon RDS) rds_replication
	// Missing are the privileges the role lacks for what walhook does,
	// each with the statement that grants it.
	Missing []MissingPrivilege
	// CannotCreatePublication: the publication is missing and the role
	// may not create it (one of Missing says why).
	CannotCreatePublication bool
}

// MissingPrivilege is one privilege the role lacks.
type MissingPrivilege struct {
	What string // "the REPLICATION attribute", "SELECT on public.orders"
	Why  string // what walhook needs it for
	Fix  string // the SQL an administrator runs to grant it
}

// heartbeatFunction is the function walhook's heartbeat (and a backfill's
// watermarks) call.
const heartbeatFunction = "pg_catalog.pg_logical_emit_message(boolean, text, text)"

// CheckPrivileges reports what the connected role lacks to run walhook
// for src: the REPLICATION attribute (the slot and the stream), the right
// to create the publication when it is missing (CREATE on the database and
// ownership of the tables, or superuser for all tables), EXECUTE on
// pg_logical_emit_message (the heartbeat), and USAGE on the schemas and
// SELECT on the tables the publication captures (what a backfill reads;
// streaming needs neither). Reading the catalog needs nothing beyond
// PostgreSQL's defaults.
func CheckPrivileges(ctx context.Context, conn *pgx.Conn, src config.Source) (Privileges, error) {
	var p Privileges
	var rds bool
	// Amazon RDS and Aurora give replication through membership in their
	// rds_replication role instead of the attribute, which they do not let
	// anyone set.
	err := conn.QueryRow(ctx, `SELECT quote_ident(current_user), quote_ident(current_database()), r.rolsuper,
			r.rolreplication OR r.rolsuper OR coalesce(pg_has_role(current_user, rds.oid, 'MEMBER'), false), rds.oid IS NOT NULL
		FROM pg_roles r LEFT JOIN pg_roles rds ON rds.rolname = 'rds_replication'
		WHERE r.rolname = current_user`).Scan(&p.Role, &p.Database, &p.Superuser, &p.Replication, &rds)
	if err != nil {
		return p, fmt.Errorf("read role: %w", err)
	}
	if p.Superuser {
		return p, nil // a superuser passes every check below
	}
	if !p.Replication {
		fix := "ALTER ROLE " + p.Role + " WITH REPLICATION;"
		if rds {
			fix = "GRANT rds_replication TO " + p.Role + ";"
		}
		p.Missing = append(p.Missing, MissingPrivilege{
			What: "the REPLICATION attribute",
			Why:  "to create the replication slot and stream from it",
			Fix:  fix,
		})
	}
	if err := p.checkPublication(ctx, conn, src); err != nil {
		return p, err
	}
	var heartbeat bool
	if err := conn.QueryRow(ctx, "SELECT has_function_privilege($1, 'EXECUTE')", heartbeatFunction).Scan(&heartbeat); err != nil {
		return p, fmt.Errorf("read privileges on pg_logical_emit_message: %w", err)
	}
	if !heartbeat {
		p.Missing = append(p.Missing, MissingPrivilege{
			What: "EXECUTE on pg_logical_emit_message",
			Why:  "for the heartbeat that keeps an idle slot advancing, and a backfill's watermarks",
			Fix:  "GRANT EXECUTE ON FUNCTION " + heartbeatFunction + " TO " + p.Role + ";",
		})
	}
	return p, p.checkTables(ctx, conn, src)
}

// checkPublication reports, when the publication is missing, whether the
// role may create it as walhook run would, and if not, the statement an
// administrator runs instead.
func (p *Privileges) checkPublication(ctx context.Context, conn *pgx.Conn, src config.Source) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", src.Publication).Scan(&exists); err != nil {
		return fmt.Errorf("read publication %q: %w", src.Publication, err)
	}
	if exists {
		return nil // using a publication needs no privilege
	}
	var canCreate bool
	if err := conn.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&canCreate); err != nil {
		return fmt.Errorf("read privileges on the database: %w", err)
	}
	var reasons []string
	if !canCreate {
		reasons = append(reasons, "it lacks CREATE on database "+p.Database)
	}
	owned := true
	if src.AllTables() {
		owned = false
		reasons = append(reasons, "a publication FOR ALL TABLES needs a superuser")
	} else {
		notOwned, err := tablesNotOwned(ctx, conn, src.Tables)
		if err != nil {
			return err
		}
		if len(notOwned) > 0 {
			owned = false
			reasons = append(reasons, "it does not own "+strings.Join(notOwned, ", ")+" (a publication needs the owner of its tables)")
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	stmt, err := createPublicationSQL(ctx, conn, src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		// source.columns cannot become column lists: check reports why.
		stmt = "CREATE PUBLICATION " + pgx.Identifier{src.Publication}.Sanitize() + " ..."
	}
	fix := "have an administrator (the tables' owner or a superuser) create it: " + stmt + ";"
	if owned {
		fix = "GRANT CREATE ON DATABASE " + p.Database + " TO " + p.Role + "; or " + fix
	}
	p.CannotCreatePublication = true
	p.Missing = append(p.Missing, MissingPrivilege{
		What: fmt.Sprintf("the right to create the publication %q", src.Publication),
		Why:  "walhook run creates the publication when it is missing, but " + strings.Join(reasons, ", and "),
		Fix:  fix,
	})
	return nil
}

// tablesNotOwned returns those of tables (that exist) the current role
// does not own, directly or through a role it belongs to, as SQL names.
func tablesNotOwned(ctx context.Context, conn *pgx.Conn, tables []config.Table) ([]string, error) {
	schemas, names := splitTables(tables)
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', s.nspname, c.relname)
		FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(schema, name, n)
		JOIN pg_namespace s ON s.nspname = t.schema
		JOIN pg_class c ON c.relnamespace = s.oid AND c.relname = t.name
		WHERE NOT pg_has_role(current_user, c.relowner, 'USAGE')
		ORDER BY t.n`, schemas, names)
	if err != nil {
		return nil, fmt.Errorf("read table owners: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read table owners: %w", err)
	}
	return out, nil
}

// checkTables reports the captured tables the role cannot read, and the
// schemas it cannot use, in one GRANT each.
func (p *Privileges) checkTables(ctx context.Context, conn *pgx.Conn, src config.Source) error {
	oids, err := capturedOIDs(ctx, conn, src)
	if err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `
		SELECT format('%I.%I', n.nspname, c.relname), quote_ident(n.nspname),
			has_schema_privilege(n.oid, 'USAGE'), has_table_privilege(c.oid, 'SELECT')
		FROM unnest($1::oid[]) WITH ORDINALITY AS t(oid, i)
		JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace n ON n.oid = c.relnamespace
		ORDER BY t.i`, oids)
	if err != nil {
		return fmt.Errorf("read privileges on the captured tables: %w", err)
	}
	var tables, schemas []string
	seen := map[string]bool{}
	for rows.Next() {
		var table, schema string
		var usage, sel bool
		if err := rows.Scan(&table, &schema, &usage, &sel); err != nil {
			rows.Close()
			return fmt.Errorf("read privileges on the captured tables: %w", err)
		}
		if !usage && !seen[schema] {
			seen[schema] = true
			schemas = append(schemas, schema)
		}
		if !sel {
			tables = append(tables, table)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read privileges on the captured tables: %w", err)
	}
	const why = "a backfill (walhook backfill, sinks[].backfill) reads the captured tables' rows; streaming does not need it"
	if len(schemas) > 0 {
		p.Missing = append(p.Missing, MissingPrivilege{
			What: "USAGE on schema " + strings.Join(schemas, ", "),
			Why:  why,
			Fix:  "GRANT USAGE ON SCHEMA " + strings.Join(schemas, ", ") + " TO " + p.Role + ";",
		})
	}
	if len(tables) > 0 {
		p.Missing = append(p.Missing, MissingPrivilege{
			What: "SELECT on " + strings.Join(tables, ", "),
			Why:  why,
			Fix:  "GRANT SELECT ON " + strings.Join(tables, ", ") + " TO " + p.Role + ";",
		})
	}
	return nil
}

// splitTables returns the schemas and names of tables, for unnest.
func splitTables(tables []config.Table) (schemas, names []string) {
	schemas = make([]string, len(tables))
	names = make([]string, len(tables))
	for i, t := range tables {
		schemas[i], names[i] = t.Schema, t.Name
	}
	return schemas, names
}

// privilegeError adds to a "permission denied" (insufficient_privilege)
// error from PostgreSQL the statement that would fix it.
func privilegeError(err error, fix string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return fmt.Errorf("%w; %s (walhook check lists every privilege walhook's role lacks)", err, fix)
	}
	return err
}

// connectPrivilege returns what lets walhook's role connect when
// PostgreSQL refused the connection for a privilege (a replication
// connection without REPLICATION, a database without CONNECT), or "".
func connectPrivilege(err error) string {
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !errors.As(err, &connErr) || connErr.Config == nil {
		return ""
	}
	role := pgx.Identifier{connErr.Config.User}.Sanitize()
	text := pgErr.Message + " " + pgErr.Detail
	switch {
	case strings.Contains(strings.ToLower(text), "replication") || strings.Contains(text, "WAL sender"):
		// PostgreSQL 15: "must be superuser or replication role to start
		// walsender"; 16 and later: "permission denied to start WAL sender".
		return "give walhook's role the REPLICATION attribute: ALTER ROLE " + role + " WITH REPLICATION"
	case strings.Contains(text, "permission denied for database"):
		return "let walhook's role connect: GRANT CONNECT ON DATABASE " + pgx.Identifier{connErr.Config.Database}.Sanitize() + " TO " + role
	}
	return ""
}
