package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/replication"
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
		out := redactingWriter{w: cmd.OutOrStdout(), r: secrets}
		fmt.Fprintf(out, "config %s: ok (%d sinks)\n", cfg.Path, len(cfg.Sinks))
		return checkDatabase(cmd.Context(), out, cfg)
	}
	return cmd
}

// checkDatabase prints what it finds and returns an error if anything would
// stop walhook from running.
func checkDatabase(ctx context.Context, out io.Writer, cfg *config.Config) error {
	conn, err := replication.Connect(ctx, cfg.Source.URL)
	if err != nil {
		return err
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

	tls, err := replication.CheckTLS(ctx, conn)
	if err != nil {
		return err
	}
	printTLS(out, tls)
	privs, err := replication.CheckPrivileges(ctx, conn, cfg.Source)
	if err != nil {
		return err
	}
	problems = append(problems, printPrivileges(out, privs)...)

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
		lost, err := replication.SlotInvalidated(ctx, conn, cfg.Source.Slot)
		if err != nil {
			return err
		}
		if lost != "" {
			problems = append(problems, fmt.Sprintf("slot %q is %s", cfg.Source.Slot, lost))
		}
	}

	var allTables bool
	err = conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", cfg.Source.Publication).Scan(&allTables)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && privs.CannotCreatePublication:
		fmt.Fprintf(out, "publication %q: missing, and this role cannot create it (see above)\n", cfg.Source.Publication)
	case errors.Is(err, pgx.ErrNoRows):
		fmt.Fprintf(out, "publication %q: missing (walhook run creates it)\n", cfg.Source.Publication)
	case err != nil:
		return fmt.Errorf("read publication: %w", err)
	default:
		fmt.Fprintf(out, "publication %q: exists, all tables %t\n", cfg.Source.Publication, allTables)
	}

	for _, t := range cfg.Source.Tables {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", t.Quoted()).Scan(&exists); err != nil {
			return fmt.Errorf("look up table %s: %w", t, err)
		}
		if !exists {
			fmt.Fprintf(out, "table %s: does not exist\n", t)
			problems = append(problems, fmt.Sprintf("table %s does not exist", t))
		}
	}
	columns, err := replication.CheckColumnLists(ctx, conn, cfg.Source)
	if err != nil {
		return err
	}
	ids, err := replication.CheckReplicaIdentity(ctx, conn, cfg.Source, replication.IdentityNeeds{OldValues: sinksGetUpdates(cfg), ColumnLists: columns.Listed()})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if cfg.State.URL != "" && id.Table.Schema == "walhook" {
			continue // walhook's own state: never relayed
		}
		key := "the whole table (no key)"
		if len(id.Key) > 0 {
			key = strings.Join(id.Key, ", ")
		}
		fmt.Fprintf(out, "table %s: replica identity %s; rows ordered by %s\n", id.Table, strings.ToUpper(id.Mode), key)
		for _, f := range id.Findings {
			fmt.Fprintf(out, "  warning: %s\n", f.Message)
		}
	}
	problems = append(problems, printColumnLists(out, cfg.Source, columns)...)
	groupBy, err := replication.CheckGroupBy(ctx, conn, cfg.Sinks)
	if err != nil {
		return err
	}
	for _, p := range groupBy {
		fmt.Fprintf(out, "error: %s\n", p)
	}
	problems = append(problems, checkState(ctx, out, cfg)...)
	sinkProblems := checkSinks(ctx, out, cfg, ids)
	problems = append(problems, checkEvents(ctx, out, cfg)...)
	if len(problems) > 0 {
		return fmt.Errorf("the database is not ready: %s", strings.Join(append(problems, sinkProblems...), "; "))
	}
	if len(sinkProblems) > 0 {
		return fmt.Errorf("a sink's destination is not ready: %s", strings.Join(sinkProblems, "; "))
	}
	if len(groupBy) > 0 {
		return usageError{fmt.Errorf("%s: group_by cannot keep per-row order: %s", cfg.Path, strings.Join(groupBy, "; "))}
	}
	fmt.Fprintln(out, "ready")
	return nil
}

// printColumnLists prints each table's publication column list, and warns
// where it disagrees with source.columns. It returns the problems that
// would stop walhook run.
func printColumnLists(out io.Writer, src config.Source, rep replication.ColumnReport) []string {
	switch {
	case !rep.Supported:
		if len(src.Columns) > 0 {
			fmt.Fprintf(out, "warning: %s\n", replication.NoColumnListsMessage)
		}
		return nil
	case !rep.Exists:
		if rep.PlanErr != nil {
			fmt.Fprintf(out, "error: %v\n", rep.PlanErr)
			return []string{"source.columns cannot become the publication's column lists"}
		}
		for _, t := range src.Tables {
			if list, ok := rep.Planned[t]; ok && list != nil {
				fmt.Fprintf(out, "table %s: walhook run creates the publication with column list (%s)\n", t, strings.Join(list, ", "))
			} else if ok {
				fmt.Fprintf(out, "table %s: source.columns keeps every column; no column list needed\n", t)
			}
		}
		return nil
	}
	fix := rep.Fix
	if fix == "" && rep.FixErr != nil {
		fix = rep.FixErr.Error()
	}
	for _, pc := range rep.Tables {
		_, selected := src.Columns[pc.Table]
		switch {
		case pc.List:
			fmt.Fprintf(out, "table %s: publication column list (%s)\n", pc.Table, strings.Join(pc.Columns, ", "))
		case selected:
			fmt.Fprintf(out, "table %s: publication publishes every column (no column list)\n", pc.Table)
		}
		if len(pc.Leaked) > 0 {
			fmt.Fprintf(out, "  warning: the publication publishes %s, which source.columns leaves out: walhook removes it from every message, "+
				"but it leaves PostgreSQL; %s\n", strings.Join(pc.Leaked, ", "), fix)
		}
		if len(pc.Missing) > 0 {
			fmt.Fprintf(out, "  warning: source.columns includes %s, which the publication does not publish, so it never arrives; %s\n",
				strings.Join(pc.Missing, ", "), fix)
		}
		if pc.Blocking != "" {
			fmt.Fprintf(out, "  warning: %s; add the replica identity columns to the list with ALTER PUBLICATION %s SET TABLE ..., or drop the list\n",
				pc.Blocking, pgx.Identifier{src.Publication}.Sanitize())
		}
	}
	return nil
}

// sinksGetUpdates reports whether some sink receives updates, whose
// changes need the old row.
func sinksGetUpdates(cfg *config.Config) bool {
	for _, sc := range cfg.Sinks {
		if len(sc.Actions) == 0 || slices.Contains(sc.Actions, "update") {
			return true
		}
	}
	return false
}

func str(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

// redactingWriter masks secrets in what is written through it.
type redactingWriter struct {
	w io.Writer
	r interface{ String(string) string }
}

func (w redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(w.w, w.r.String(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
