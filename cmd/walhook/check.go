package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"github.com/walhook/walhook/config"
)

func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration and the database",
		Long: "check validates the configuration file, then connects to the source and reports wal_level,\n" +
			"the slot, the publication, and each captured table with its replica identity.\n" +
			"Exit code 2: the configuration is wrong; 1: the database is not ready for walhook.",
		Args: noArgs,
	}
	path := configFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		fmt.Fprintf(out, "config %s: ok (%d sinks)\n", cfg.Path, len(cfg.Sinks))
		return checkDatabase(cmd.Context(), out, cfg)
	}
	return cmd
}

// checkDatabase prints what it finds and returns an error if anything would
// stop walhook from running.
func checkDatabase(ctx context.Context, out io.Writer, cfg *config.Config) error {
	conn, err := pgx.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	defer conn.Close(context.Background())
	var problems []string

	var level, version string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version')").Scan(&level, &version); err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	fmt.Fprintf(out, "server: PostgreSQL %s\n", version)
	if level == "logical" {
		fmt.Fprintf(out, "wal_level: logical (ok)\n")
	} else {
		fmt.Fprintf(out, "wal_level: %s (needs logical: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL)\n", level)
		problems = append(problems, "wal_level is not logical")
	}

	var canReplicate bool
	if err := conn.QueryRow(ctx, "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&canReplicate); err != nil {
		return fmt.Errorf("read role: %w", err)
	}
	if canReplicate {
		fmt.Fprintf(out, "role: has REPLICATION (ok)\n")
	} else {
		fmt.Fprintf(out, "role: lacks REPLICATION (ALTER ROLE <user> WITH REPLICATION)\n")
		problems = append(problems, "the role lacks the REPLICATION attribute")
	}

	var active bool
	var confirmed, walStatus *string
	err = conn.QueryRow(ctx, "SELECT active, confirmed_flush_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = $1",
		cfg.Source.Slot).Scan(&active, &confirmed, &walStatus)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		fmt.Fprintf(out, "slot %q: missing (walhook run creates it)\n", cfg.Source.Slot)
	case err != nil:
		return fmt.Errorf("read slot: %w", err)
	default:
		fmt.Fprintf(out, "slot %q: confirmed_flush_lsn %s, wal_status %s, active %t\n", cfg.Source.Slot, str(confirmed), str(walStatus), active)
		if str(walStatus) == "lost" {
			problems = append(problems, fmt.Sprintf("slot %q is invalidated (wal_status lost)", cfg.Source.Slot))
		}
	}

	var allTables bool
	err = conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", cfg.Source.Publication).Scan(&allTables)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		fmt.Fprintf(out, "publication %q: missing (walhook run creates it)\n", cfg.Source.Publication)
	case err != nil:
		return fmt.Errorf("read publication: %w", err)
	default:
		fmt.Fprintf(out, "publication %q: exists, all tables %t\n", cfg.Source.Publication, allTables)
	}

	tables, err := capturedTables(ctx, conn, cfg)
	if err != nil {
		return err
	}
	for _, t := range tables {
		fmt.Fprintf(out, "table %s: %s\n", t.name, t.describe())
		if t.missing {
			problems = append(problems, fmt.Sprintf("table %s does not exist", t.name))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the database is not ready: %s", strings.Join(problems, "; "))
	}
	fmt.Fprintln(out, "ready")
	return nil
}

type tableInfo struct {
	name     string
	missing  bool
	identity string
	hasPK    bool
}

func (t tableInfo) describe() string {
	if t.missing {
		return "does not exist"
	}
	id := map[string]string{"d": "DEFAULT", "f": "FULL", "i": "USING INDEX", "n": "NOTHING"}[t.identity]
	s := "replica identity " + id
	switch {
	case t.identity == "n":
		s += " (updates and deletes cannot be published: ALTER TABLE ... REPLICA IDENTITY FULL)"
	case t.identity == "d" && !t.hasPK:
		s += " without a primary key (updates and deletes fail: add a primary key or REPLICA IDENTITY FULL)"
	case t.identity != "f":
		s += " (changes holds old values only when the key changes; REPLICA IDENTITY FULL gives them all)"
	}
	return s
}

func capturedTables(ctx context.Context, conn *pgx.Conn, cfg *config.Config) ([]tableInfo, error) {
	const q = `SELECT n.nspname, c.relname, c.relreplident::text,
		EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
		AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
		ORDER BY 1, 2`
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	found := map[string]tableInfo{}
	var order []string
	for rows.Next() {
		var schema, name string
		var t tableInfo
		if err := rows.Scan(&schema, &name, &t.identity, &t.hasPK); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		t.name = config.Table{Schema: schema, Name: name}.String()
		found[t.name] = t
		order = append(order, t.name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	if cfg.Source.AllTables() {
		out := make([]tableInfo, 0, len(order))
		for _, n := range order {
			out = append(out, found[n])
		}
		return out, nil
	}
	out := make([]tableInfo, 0, len(cfg.Source.Tables))
	for _, ct := range cfg.Source.Tables {
		t, ok := found[ct.String()]
		if !ok {
			t = tableInfo{name: ct.String(), missing: true}
		}
		out = append(out, t)
	}
	return out, nil
}

func str(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}
