package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
)

// SlotInfo is what Setup found of the replication slot.
type SlotInfo struct {
	ConfirmedFlush pglogrepl.LSN
	Role           Role
}

// ErrWALLevel means the server is not configured for logical decoding.
var ErrWALLevel = errors.New("wal_level is not logical")

// ErrSlotLost means the slot walhook used is gone or invalidated: changes
// may have been lost, and walhook will not paper over that by creating a new
// slot.
var ErrSlotLost = errors.New("replication slot lost")

// Setup checks the server and makes sure the publication and the slot
// exist. usedBefore says that walhook's state already belongs to this slot:
// then a missing slot is an error, not something to create.
func Setup(ctx context.Context, src config.Source, usedBefore bool, log *slog.Logger) (SlotInfo, error) {
	conn, err := pgx.Connect(ctx, src.URL)
	if err != nil {
		return SlotInfo{}, connectError(err)
	}
	defer conn.Close(context.Background())

	if err := checkWALLevel(ctx, conn); err != nil {
		return SlotInfo{}, err
	}
	if src.Failover {
		if err := checkFailoverVersion(ctx, conn); err != nil {
			return SlotInfo{}, err
		}
	}
	role, err := DetectRole(ctx, conn, src)
	if err != nil {
		return SlotInfo{}, err
	}
	if role.Standby {
		err = requirePublication(ctx, conn, src)
	} else {
		err = ensurePublication(ctx, conn, src, log)
	}
	if err != nil {
		return SlotInfo{}, err
	}
	info, err := ensureSlot(ctx, conn, src.Slot, src.Failover, usedBefore, log)
	info.Role = role
	if err == nil && src.Failover {
		err = ensureFailover(ctx, conn, src, log)
	}
	return info, err
}

func checkWALLevel(ctx context.Context, conn *pgx.Conn) error {
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w (it is %q): run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", ErrWALLevel, level)
	}
	return nil
}

func ensurePublication(ctx context.Context, conn *pgx.Conn, src config.Source, log *slog.Logger) error {
	var allTables bool
	err := conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", src.Publication).Scan(&allTables)
	if errors.Is(err, pgx.ErrNoRows) {
		stmt, err := createPublicationSQL(ctx, conn, src, log)
		if err != nil {
			return fmt.Errorf("create publication %q: %w", src.Publication, err)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create publication %q: %w", src.Publication,
				privilegeError(err, "have an administrator (the tables' owner or a superuser) create it: "+stmt))
		}
		log.Info("created publication", "publication", src.Publication, "all_tables", src.AllTables())
		return nil
	}
	if err != nil {
		return fmt.Errorf("read publication %q: %w", src.Publication, err)
	}
	if len(src.Columns) > 0 {
		if err := warnColumnLists(ctx, conn, src, log); err != nil {
			return err
		}
	}
	if allTables || src.AllTables() {
		if !allTables {
			log.Warn("publication exists and lists only some tables, but source.tables asks for all; walhook leaves it as it is", "publication", src.Publication)
		}
		return nil
	}
	for _, t := range src.Tables {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
			src.Publication, t.Schema, t.Name).Scan(&n)
		if err != nil {
			return fmt.Errorf("read tables of publication %q: %w", src.Publication, err)
		}
		if n == 0 {
			log.Warn("publication exists but lacks a configured table; its changes will not be captured: ALTER PUBLICATION "+pgx.Identifier{src.Publication}.Sanitize()+" ADD TABLE "+t.Quoted(),
				"publication", src.Publication, "table", t.String())
		}
	}
	return nil
}

// createPublicationSQL returns the statement that creates the publication
// of src.
func createPublicationSQL(ctx context.Context, conn *pgx.Conn, src config.Source, log *slog.Logger) (string, error) {
	if src.AllTables() {
		return fmt.Sprintf("CREATE PUBLICATION %s FOR ALL TABLES WITH (publish_via_partition_root = true)", pgx.Identifier{src.Publication}.Sanitize()), nil
	}
	tables, err := newPublicationTables(ctx, conn, src, log)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish_via_partition_root = true)", pgx.Identifier{src.Publication}.Sanitize(), tables), nil
}

// newPublicationTables returns the FOR TABLE list of the publication
// walhook creates: with column lists from source.columns on PostgreSQL
// 15+; before that without, and walhook says that the columns still leave
// PostgreSQL.
func newPublicationTables(ctx context.Context, conn *pgx.Conn, src config.Source, log *slog.Logger) (string, error) {
	if len(src.Columns) > 0 {
		v, err := serverVersion(ctx, conn)
		if err != nil {
			return "", err
		}
		if v < columnListVersion {
			log.Warn(NoColumnListsMessage, "publication", src.Publication)
			return publicationTables(ctx, conn, config.Source{Tables: src.Tables})
		}
	}
	return publicationTables(ctx, conn, src)
}

func ensureSlot(ctx context.Context, conn *pgx.Conn, slot string, failover, usedBefore bool, log *slog.Logger) (SlotInfo, error) {
	var (
		plugin, database *string
		confirmed        *pglogrepl.LSN
		currentDB        string
	)
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&currentDB); err != nil {
		return SlotInfo{}, fmt.Errorf("read current database: %w", err)
	}
	err := conn.QueryRow(ctx, `SELECT plugin, database, confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &database, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		if usedBefore {
			return SlotInfo{}, fmt.Errorf("%w: slot %q does not exist, but walhook's state shows it streamed from it before; "+
				"changes made since it was dropped are not in any slot. To recover: run walhook slot drop, which makes the state file "+
				"(or state.url) forget the slot so that walhook creates a new one, start walhook, then re-sync the receivers (for example with a backfill)", ErrSlotLost, slot)
		}
		var lsn pglogrepl.LSN
		if err := conn.QueryRow(ctx, createSlotSQL(failover), slot).Scan(&lsn); err != nil {
			return SlotInfo{}, fmt.Errorf("create replication slot %q: %w", slot,
				privilegeError(err, "give walhook's role the REPLICATION attribute: ALTER ROLE "+currentRole(ctx, conn)+" WITH REPLICATION"))
		}
		log.Info("created replication slot", "slot", slot, "lsn", lsn.String(), "failover", failover)
		return SlotInfo{ConfirmedFlush: lsn}, nil
	}
	if err != nil {
		return SlotInfo{}, fmt.Errorf("read replication slot %q: %w", slot, err)
	}
	if plugin == nil || *plugin != "pgoutput" {
		return SlotInfo{}, fmt.Errorf("replication slot %q is not a pgoutput logical slot; drop it or configure another source.slot", slot)
	}
	if database == nil || *database != currentDB {
		return SlotInfo{}, fmt.Errorf("replication slot %q belongs to database %q, not %q; configure another source.slot", slot, deref(database), currentDB)
	}
	cause, err := slotInvalidation(ctx, conn, slotsView, slot)
	if err != nil {
		return SlotInfo{}, err
	}
	if cause != "" {
		return SlotInfo{}, slotLostError(slot, cause)
	}
	info := SlotInfo{}
	if confirmed != nil {
		info.ConfirmedFlush = *confirmed
	}
	return info, nil
}

// currentRole returns the connected role as SQL writes it, for a message.
func currentRole(ctx context.Context, conn *pgx.Conn) string {
	var role string
	if err := conn.QueryRow(ctx, "SELECT quote_ident(current_user)").Scan(&role); err != nil {
		return "<role>"
	}
	return role
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
