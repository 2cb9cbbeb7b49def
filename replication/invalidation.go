package replication

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// invalidation is why PostgreSQL invalidated a slot, named as
// pg_replication_slots.invalidation_reason names it (PostgreSQL 17+).
type invalidation string

const (
	invalWALRemoved  invalidation = "wal_removed"  // past max_slot_wal_keep_size
	invalRowsRemoved invalidation = "rows_removed" // catalog rows it needed were vacuumed
	invalWALLevel    invalidation = "wal_level_insufficient"
	invalIdle        invalidation = "idle_timeout" // PostgreSQL 18: idle_replication_slot_timeout
	// invalConflict is PostgreSQL 16's word for rows_removed or
	// wal_level_insufficient: conflicting with recovery on a standby.
	invalConflict invalidation = "conflicting with recovery"
)

// slotsView is where PostgreSQL shows its slots.
const slotsView = "pg_catalog.pg_replication_slots"

// slotInvalidation returns why the slot shown in view is invalidated, or ""
// when it is not (or does not exist). What the view can say depends on the
// server, and is read from the columns it has, not from its version:
// invalidation_reason (17+) names the cause; conflicting (16) tells a
// conflict with recovery from WAL removal; before, wal_status = 'lost'
// has one cause, removed WAL.
func slotInvalidation(ctx context.Context, conn *pgx.Conn, view, slot string) (invalidation, error) {
	rows, err := conn.Query(ctx, `SELECT attname::text FROM pg_attribute
		WHERE attrelid = $1::regclass AND attname IN ('invalidation_reason', 'conflicting') AND NOT attisdropped`, view)
	if err != nil {
		return "", fmt.Errorf("read the columns of %s: %w", view, err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("read the columns of %s: %w", view, err)
	}
	reason, conflicting := "NULL::text", "NULL::bool"
	for _, c := range cols {
		switch c {
		case "invalidation_reason":
			reason = "invalidation_reason::text"
		case "conflicting":
			conflicting = "conflicting"
		}
	}
	var (
		walStatus, why *string
		conflict       *bool
	)
	err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT wal_status, %s, %s FROM %s WHERE slot_name = $1`, reason, conflicting, view), slot).
		Scan(&walStatus, &why, &conflict)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read replication slot %q: %w", slot, err)
	case why != nil:
		return invalidation(*why), nil
	case conflict != nil && *conflict: // true only for a slot invalidated by the conflict
		return invalConflict, nil
	case walStatus != nil && *walStatus == "lost":
		return invalWALRemoved, nil
	}
	return "", nil
}

// SlotInvalidated says why PostgreSQL invalidated slot and what keeps it
// from happening again, or "" when it is not invalidated (or does not
// exist); for walhook check.
func SlotInvalidated(ctx context.Context, conn *pgx.Conn, slot string) (string, error) {
	cause, err := slotInvalidation(ctx, conn, slotsView, slot)
	if err != nil || cause == "" {
		return "", err
	}
	what, prevent := cause.explain()
	return fmt.Sprintf("invalidated (%s): %s; to keep it from happening again, %s", cause, what, prevent), nil
}

var invalidatedDueToRe = regexp.MustCompile(`invalidated due to "([^"]+)"`)

// serverInvalidation reads the cause from the error PostgreSQL gives for
// an invalidated slot, or "" when it does not say.
func serverInvalidation(pgErr *pgconn.PgError) invalidation {
	text := pgErr.Message + " " + pgErr.Detail
	switch {
	case invalidatedDueToRe.MatchString(text): // 17+
		return invalidation(invalidatedDueToRe.FindStringSubmatch(text)[1])
	case strings.Contains(text, "exceeded the maximum reserved size"): // 14 to 16
		return invalWALRemoved
	case strings.Contains(text, "conflicting with recovery"): // 16
		return invalConflict
	}
	return ""
}

// explain says what a cause means and how to keep it from happening again.
func (c invalidation) explain() (what, prevent string) {
	switch c {
	case invalWALRemoved:
		return "it fell further behind than max_slot_wal_keep_size allows, and WAL it still needed was removed",
			"raise max_slot_wal_keep_size or keep the receivers up"
	case invalRowsRemoved:
		return "catalog rows it still needed to decode were removed (on a standby: vacuumed on the primary, which nothing held back)",
			"on a standby, set hot_standby_feedback = on and primary_slot_name to a physical slot on the primary"
	case invalWALLevel:
		return "wal_level on the primary went below logical, so the WAL lacks what decoding needs",
			"keep wal_level = logical on the primary"
	case invalIdle:
		return "it stayed unused longer than idle_replication_slot_timeout",
			"raise idle_replication_slot_timeout (0 turns it off) or keep walhook running"
	case invalConflict:
		return "it conflicted with recovery on this standby: the primary removed catalog rows it needed (rows_removed) " +
				"or its wal_level went below logical (wal_level_insufficient)",
			"set hot_standby_feedback = on and primary_slot_name to a physical slot on the primary, and keep wal_level = logical there"
	case "":
		return "PostgreSQL did not say why", "look for the cause in PostgreSQL's log"
	}
	return fmt.Sprintf("PostgreSQL gives the reason %q", string(c)), "see PostgreSQL's documentation of pg_replication_slots.invalidation_reason"
}

// slotLostError says that slot was invalidated, why, and how to recover.
func slotLostError(slot string, cause invalidation) error {
	what, prevent := cause.explain()
	label := string(cause)
	if label == "" {
		label = "cause unknown"
	}
	return fmt.Errorf("%w: slot %q was invalidated (%s): %s, so changes were lost. To recover: run walhook slot drop (it drops the slot and makes the state file "+
		"or state.url forget it), start walhook again, and re-sync the receivers (for example with a backfill); "+
		"to keep it from happening again, %s", ErrSlotLost, slot, label, what, prevent)
}
