package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/config"
)

// failoverVersion is the first server_version_num with failover slots.
const failoverVersion = 170000

// ErrFailoverUnsupported means source.failover asks for failover slots
// from a server before PostgreSQL 17: a configuration error.
var ErrFailoverUnsupported = errors.New("source.failover needs PostgreSQL 17 or later")

// checkFailoverVersion refuses source.failover on a server without
// failover slots.
func checkFailoverVersion(ctx context.Context, conn *pgx.Conn) error {
	v, err := serverVersion(ctx, conn)
	if err != nil {
		return err
	}
	if v < failoverVersion {
		return fmt.Errorf("%w (failover slots came with PostgreSQL 17), but the server is %s: remove source.failover, "+
			"or keep the slot on standbys another way (Patroni's permanent slots, pg_failover_slots)", ErrFailoverUnsupported, versionName(v))
	}
	return nil
}

// versionName writes a server_version_num as PostgreSQL 16.4.
func versionName(v int) string {
	return fmt.Sprintf("PostgreSQL %d.%d", v/10000, v%10000)
}

// createSlotSQL creates a pgoutput slot, a failover slot when asked, and
// returns the LSN it starts at.
func createSlotSQL(failover bool) string {
	if failover {
		return "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
	}
	return "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
}

// ensureFailover makes an existing slot a failover slot if it is not one
// (ALTER_REPLICATION_SLOT, on a replication connection).
func ensureFailover(ctx context.Context, conn *pgx.Conn, src config.Source, log *slog.Logger) error {
	var failover bool
	if err := conn.QueryRow(ctx, "SELECT failover FROM pg_replication_slots WHERE slot_name = $1", src.Slot).Scan(&failover); err != nil {
		return fmt.Errorf("read replication slot %q: %w", src.Slot, err)
	}
	if failover {
		return nil
	}
	cfg, err := pgconn.ParseConfig(src.URL)
	if err != nil {
		return fmt.Errorf("source.url: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "walhook"
	rc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return connectError(err)
	}
	defer rc.Close(context.Background())
	// Slot names are [a-z0-9_] (config checks), so the name needs no quoting.
	if _, err := rc.Exec(ctx, "ALTER_REPLICATION_SLOT "+src.Slot+" ( FAILOVER true )").ReadAll(); err != nil {
		return fmt.Errorf("make replication slot %q a failover slot: %w", src.Slot, translate(src, err))
	}
	log.Info("made the replication slot a failover slot", "slot", src.Slot)
	return nil
}

// FailoverReport is what check says of a failover setup: the slot, the
// primary's synchronized_standby_slots, and each other host of source.url.
type FailoverReport struct {
	Supported     bool   // the server has failover slots
	Version       string // PostgreSQL 16.4, when not Supported
	SlotExists    bool
	SlotFailover  bool
	StandbySlots  string // the primary's synchronized_standby_slots
	Standbys      []StandbyReport
	OtherHostErrs []string // hosts of source.url that could not be asked
}

// StandbyReport is one standby's settings for slot synchronisation.
type StandbyReport struct {
	Host                 string // host:port
	SyncReplicationSlots bool
	HotStandbyFeedback   bool
	PrimarySlotName      string
	// Missing names what the standby lacks for a safe failover, each as
	// the setting that fixes it.
	Missing []string
}

// CheckFailover reports the failover setup of src: conn is to the
// primary; the other hosts of src.URL are asked one by one.
func CheckFailover(ctx context.Context, conn *pgx.Conn, src config.Source) (FailoverReport, error) {
	var rep FailoverReport
	v, err := serverVersion(ctx, conn)
	if err != nil {
		return rep, err
	}
	if rep.Supported = v >= failoverVersion; !rep.Supported {
		rep.Version = versionName(v)
		return rep, nil
	}
	err = conn.QueryRow(ctx, "SELECT failover FROM pg_replication_slots WHERE slot_name = $1", src.Slot).Scan(&rep.SlotFailover)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return rep, fmt.Errorf("read replication slot %q: %w", src.Slot, err)
	default:
		rep.SlotExists = true
	}
	if err := conn.QueryRow(ctx, "SELECT current_setting('synchronized_standby_slots')").Scan(&rep.StandbySlots); err != nil {
		return rep, fmt.Errorf("read synchronized_standby_slots: %w", err)
	}
	cfg, err := pgconn.ParseConfig(src.URL)
	if err != nil {
		return rep, fmt.Errorf("source.url: %w", err)
	}
	primary := conn.PgConn().Conn().RemoteAddr().String()
	hosts := []*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: cfg.TLSConfig}}
	hosts = append(hosts, cfg.Fallbacks...)
	for _, h := range hosts {
		addr := fmt.Sprintf("%s:%d", h.Host, h.Port)
		if addr == primary || strings.HasPrefix(h.Host, "/") {
			continue
		}
		one := cfg.Copy()
		one.Host, one.Port, one.TLSConfig, one.Fallbacks = h.Host, h.Port, h.TLSConfig, nil
		one.ValidateConnect = nil // any role: this asks standbys
		sb, err := askStandby(ctx, one, addr, rep.StandbySlots)
		if err != nil {
			rep.OtherHostErrs = append(rep.OtherHostErrs, fmt.Sprintf("%s: %v", addr, err))
			continue
		}
		if sb != nil {
			rep.Standbys = append(rep.Standbys, *sb)
		}
	}
	return rep, nil
}

// askStandby reads a host's slot synchronisation settings; nil if it is
// not a standby.
func askStandby(ctx context.Context, cfg *pgconn.Config, addr, standbySlots string) (*StandbyReport, error) {
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, `SELECT pg_is_in_recovery()::text, current_setting('sync_replication_slots'),
		current_setting('hot_standby_feedback'), current_setting('primary_slot_name')`).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 4 {
		return nil, errors.New("unexpected answer to the settings query")
	}
	row := res[0].Rows[0]
	if string(row[0]) != "true" {
		return nil, nil
	}
	sb := &StandbyReport{
		Host:                 addr,
		SyncReplicationSlots: string(row[1]) == "on",
		HotStandbyFeedback:   string(row[2]) == "on",
		PrimarySlotName:      string(row[3]),
	}
	if !sb.SyncReplicationSlots {
		sb.Missing = append(sb.Missing, "sync_replication_slots = on (on the standby)")
	}
	if !sb.HotStandbyFeedback {
		sb.Missing = append(sb.Missing, "hot_standby_feedback = on (on the standby)")
	}
	if sb.PrimarySlotName == "" {
		sb.Missing = append(sb.Missing, "primary_slot_name = '<a physical slot on the primary>' (on the standby)")
	} else if !listed(standbySlots, sb.PrimarySlotName) {
		sb.Missing = append(sb.Missing, fmt.Sprintf("synchronized_standby_slots listing %q (on the primary), so that walhook never receives a change this standby lacks", sb.PrimarySlotName))
	}
	return sb, nil
}

// listed reports whether a comma-separated setting lists name.
func listed(setting, name string) bool {
	for part := range strings.SplitSeq(setting, ",") {
		if strings.Trim(strings.TrimSpace(part), `"`) == name {
			return true
		}
	}
	return false
}
