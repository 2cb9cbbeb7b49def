package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/lease"
	"github.com/walhook/walhook/state/pgstore"
)

// stateTables are the tables of schema walhook that walhook writes.
var stateTables = []string{"slots", "cursors", "backlog", "dead_letter_ids", "dead_letters", "backfills", "leaders"}

// checkState checks state.url, when it is set: that walhook can connect,
// and create the schema walhook (or use and migrate the one there), and
// says who holds the slot's lease. It prints what it finds and returns the
// problems that would stop walhook run.
func checkState(ctx context.Context, out io.Writer, cfg *config.Config) []string {
	if cfg.State.URL == "" {
		fmt.Fprintf(out, "state: file %s\n", cfg.State.Path)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, cfg.State.URL)
	if err != nil {
		fmt.Fprintf(out, "state.url: cannot connect: %v (check its host, port, database and credentials; it may name the source database)\n", err)
		return []string{"state.url cannot be reached"}
	}
	defer conn.Close(context.Background())
	var user, db string
	var schema, canCreate bool
	err = conn.QueryRow(cctx, `SELECT current_user, current_database(),
		EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'walhook'),
		has_database_privilege(current_database(), 'CREATE')`).Scan(&user, &db, &schema, &canCreate)
	if err != nil {
		return []string{fmt.Sprintf("state.url: read privileges: %v", err)}
	}
	role, database := sqlIdent(user), sqlIdent(db)
	if !schema {
		if !canCreate {
			fmt.Fprintf(out, "state: schema walhook is missing, and role %s cannot create it: GRANT CREATE ON DATABASE %s TO %s; "+
				"or have an administrator run CREATE SCHEMA walhook AUTHORIZATION %s\n", user, database, role, role)
			return []string{"schema walhook cannot be created"}
		}
		fmt.Fprintf(out, "state: database %s, schema walhook missing (walhook run creates it)\n", db)
		return nil
	}
	var problems []string
	var usage, create bool
	if err := conn.QueryRow(cctx, `SELECT has_schema_privilege('walhook', 'USAGE'), has_schema_privilege('walhook', 'CREATE')`).Scan(&usage, &create); err != nil {
		return []string{fmt.Sprintf("state.url: read privileges: %v", err)}
	}
	if !usage {
		fmt.Fprintf(out, "state: role %s cannot use schema walhook: GRANT USAGE, CREATE ON SCHEMA walhook TO %s\n", user, role)
		return []string{"schema walhook cannot be used"}
	}
	version := 0
	var migrated bool
	if err := conn.QueryRow(cctx, `SELECT to_regclass('walhook.migrations') IS NOT NULL`).Scan(&migrated); err != nil {
		return []string{fmt.Sprintf("state.url: %v", err)}
	}
	if migrated {
		if err := conn.QueryRow(cctx, `SELECT coalesce(max(version), 0) FROM walhook.migrations`).Scan(&version); err != nil {
			fmt.Fprintf(out, "state: cannot read walhook.migrations: %v (GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA walhook TO %s)\n", err, role)
			return []string{"walhook.migrations cannot be read"}
		}
	}
	want := pgstore.SchemaVersion()
	switch {
	case version > want:
		fmt.Fprintf(out, "state: schema walhook is at migration %d, this walhook knows %d: it was migrated by a newer walhook; run that version\n", version, want)
		problems = append(problems, "schema walhook is newer than this walhook")
	case version < want && !create:
		fmt.Fprintf(out, "state: schema walhook is at migration %d of %d, and role %s cannot migrate it: GRANT CREATE ON SCHEMA walhook TO %s\n", version, want, user, role)
		problems = append(problems, "schema walhook cannot be migrated")
	case version < want:
		fmt.Fprintf(out, "state: database %s, schema walhook at migration %d of %d (walhook run migrates it)\n", db, version, want)
	default:
		fmt.Fprintf(out, "state: database %s, schema walhook at migration %d (ok)\n", db, version)
	}
	for _, table := range stateTables {
		var exists, ok bool
		name := "walhook." + table
		err := conn.QueryRow(cctx, `SELECT to_regclass($1) IS NOT NULL,
			to_regclass($1) IS NULL OR (has_table_privilege($1, 'SELECT') AND has_table_privilege($1, 'INSERT')
				AND has_table_privilege($1, 'UPDATE') AND has_table_privilege($1, 'DELETE'))`, name).Scan(&exists, &ok)
		if err != nil {
			return append(problems, fmt.Sprintf("state.url: %v", err))
		}
		if exists && !ok {
			fmt.Fprintf(out, "state: role %s cannot read and write %s: GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA walhook TO %s\n", user, name, role)
			problems = append(problems, "role "+user+" cannot write "+name)
		}
	}
	if version >= 1 && len(problems) == 0 {
		printHolder(cctx, out, cfg)
	}
	return problems
}

// sqlIdent is name as SQL writes it: bare when it can be, else quoted.
func sqlIdent(name string) string {
	if plainIdent.MatchString(name) {
		return name
	}
	return pgx.Identifier{name}.Sanitize()
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// printHolder says which instance holds the slot's lease, if any.
func printHolder(ctx context.Context, out io.Writer, cfg *config.Config) {
	c := lease.NewCandidate(cfg.State.URL, cfg.Source.Slot, nil)
	defer c.Close()
	h, ok, err := c.Holder(ctx)
	switch {
	case err != nil:
		fmt.Fprintf(out, "state: cannot tell who holds the lease of slot %q: %v\n", cfg.Source.Slot, err)
	case ok:
		fmt.Fprintf(out, "state: slot %q is relayed by the walhook with pid %d on %s, active since %s\n", cfg.Source.Slot, h.PID, h.Host, h.Since.UTC().Format(time.RFC3339))
	default:
		fmt.Fprintf(out, "state: no walhook holds the lease of slot %q\n", cfg.Source.Slot)
	}
}
