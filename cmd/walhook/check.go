package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	var versionNum int
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version'), current_setting('server_version_num')::int").
		Scan(&level, &version, &versionNum); err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	fmt.Fprintf(out, "server: PostgreSQL %s\n", version)
	if versionNum < 150000 {
		fmt.Fprintf(out, "  note: PostgreSQL before 15 has no publication row filters or column lists: every row and column of a published table "+
			"leaves PostgreSQL, and walhook applies source.columns and the sinks' filters itself\n")
	}
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
	printHosts(out, cfg.Source.URL)
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

	role, err := replication.DetectRole(ctx, conn, cfg.Source)
	if err != nil {
		return err
	}
	problems = append(problems, printRole(out, cfg.Source, role)...)

	var allTables bool
	err = conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", cfg.Source.Publication).Scan(&allTables)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && role.Standby:
		fmt.Fprintf(out, "publication %q: missing; it cannot be created on a standby: create it on the primary (CREATE PUBLICATION %s ...)\n", cfg.Source.Publication, pgx.Identifier{cfg.Source.Publication}.Sanitize())
		problems = append(problems, fmt.Sprintf("publication %q is missing on a standby; create it on the primary", cfg.Source.Publication))
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
	if cfg.Source.Failover {
		failover, err := replication.CheckFailover(ctx, conn, cfg.Source)
		if err != nil {
			return err
		}
		if !failover.Supported {
			err := fmt.Errorf("%w, but the server is %s: remove source.failover, or keep the slot on standbys another way", replication.ErrFailoverUnsupported, failover.Version)
			fmt.Fprintf(out, "error: %v\n", err)
			return usageError{err}
		}
		printFailover(out, cfg.Source, failover)
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

// printFailover prints what makes a failover safe with source.failover:
// the slot, the primary's synchronized_standby_slots and each standby
// reachable through source.url's other hosts, naming what is missing.
func printFailover(out io.Writer, src config.Source, rep replication.FailoverReport) {
	switch {
	case !rep.SlotExists:
		fmt.Fprintf(out, "failover: slot %q is missing; walhook run creates it as a failover slot\n", src.Slot)
	case rep.SlotFailover:
		fmt.Fprintf(out, "failover: slot %q is a failover slot (ok)\n", src.Slot)
	default:
		fmt.Fprintf(out, "failover: slot %q is not a failover slot; walhook run makes it one (ALTER_REPLICATION_SLOT)\n", src.Slot)
	}
	if rep.StandbySlots == "" {
		fmt.Fprintln(out, "  warning: the primary's synchronized_standby_slots is empty: walhook may receive, and deliver, changes a standby "+
			"has not received, and after a failover to it walhook stops (exit 1) rather than skip; set it to the standbys' primary_slot_name")
	} else {
		fmt.Fprintf(out, "  primary: synchronized_standby_slots = '%s'\n", rep.StandbySlots)
	}
	for _, sb := range rep.Standbys {
		fmt.Fprintf(out, "  standby %s: sync_replication_slots %s, hot_standby_feedback %s, primary_slot_name '%s'\n",
			sb.Host, onOff(sb.SyncReplicationSlots), onOff(sb.HotStandbyFeedback), sb.PrimarySlotName)
		for _, m := range sb.Missing {
			fmt.Fprintf(out, "    warning: missing for a safe failover: %s\n", m)
		}
	}
	for _, e := range rep.OtherHostErrs {
		fmt.Fprintf(out, "  warning: cannot ask host %s\n", e)
	}
	if len(rep.Standbys) == 0 {
		fmt.Fprintln(out, "  warning: no standby among source.url's hosts: list them (postgres://h1,h2/db?target_session_attrs=read-write) "+
			"so that walhook follows a failover and check can ask them")
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// printHosts says how walhook picks among several hosts in source.url: a
// failover moves the primary, and walhook follows it only with
// target_session_attrs=read-write.
func printHosts(out io.Writer, url string) {
	pc, err := pgconn.ParseConfig(url)
	if err != nil || len(pc.Fallbacks) == 0 {
		return
	}
	hosts := map[string]bool{}
	for _, h := range append([]*pgconn.FallbackConfig{{Host: pc.Host, Port: pc.Port}}, pc.Fallbacks...) {
		hosts[fmt.Sprintf("%s:%d", h.Host, h.Port)] = true
	}
	if len(hosts) < 2 {
		return
	}
	switch attrs := targetSessionAttrs(url); attrs {
	case "read-write", "primary":
		fmt.Fprintf(out, "source.url: %d hosts; walhook connects to the one that takes writes (target_session_attrs=%s) and, after a failover, to the new primary\n", len(hosts), attrs)
	default:
		fmt.Fprintf(out, "source.url: %d hosts, with target_session_attrs=%s: walhook takes the first that answers, "+
			"a standby included, where its slot cannot stream; use target_session_attrs=read-write so that it follows the primary\n", len(hosts), attrs)
	}
}

// targetSessionAttrs returns the target_session_attrs a connection string
// asks for: "any" when it does not say.
func targetSessionAttrs(dsn string) string {
	if u, err := neturl.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if v := u.Query().Get("target_session_attrs"); v != "" {
			return v
		}
		return "any"
	}
	if m := targetSessionAttrsRe.FindStringSubmatch(dsn); m != nil {
		return strings.Trim(m[1], "'")
	}
	return "any"
}

var targetSessionAttrsRe = regexp.MustCompile(`target_session_attrs\s*=\s*('[^']*'|\S+)`)

// printRole prints which mode walhook reads in: from a primary, or from a
// hot standby with or without source.primary_url. It returns the problems.
func printRole(out io.Writer, src config.Source, role replication.Role) []string {
	switch role.Mode() {
	case "primary":
		fmt.Fprintln(out, "mode: primary (source.url takes writes; heartbeats and backfill watermarks go there)")
		if src.PrimaryURL != "" {
			fmt.Fprintln(out, "  warning: source.primary_url is set but source.url is not a standby; it is not used")
		}
	case "standby with primary_url":
		fmt.Fprintln(out, "mode: standby with primary_url (logical decoding on a hot standby, PostgreSQL 16+; heartbeats and backfill watermarks go to source.primary_url)")
	default:
		fmt.Fprintln(out, "mode: standby without primary_url (heartbeats are off and backfills are refused; set source.primary_url to the primary's URL)")
	}
	return nil
}
