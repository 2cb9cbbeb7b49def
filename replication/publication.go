package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/config"
)

// ErrPublicationMissing means PostgreSQL could not decode a change because
// the publication walhook streams did not exist: the slot is healthy, and
// what to do is about the publication (see PublicationMissingError).
var ErrPublicationMissing = errors.New("publication missing")

// PublicationMissingError is pgoutput's "publication does not exist"
// (undefined_object), said in walhook's words. It is ErrPublicationMissing.
type PublicationMissingError struct {
	Publication, Slot string
	// LSN is the position of the change PostgreSQL could not decode, as
	// the server named it; "" if it did not.
	LSN string
	// ExistsNow: the publication exists when walhook checks, so it was
	// missing only when the change was written (it was dropped and made
	// again since); see Error.
	ExistsNow bool
	// Create is the statement that creates the publication as walhook
	// would; "" when it could not be worked out.
	Create string
}

func (e *PublicationMissingError) Is(target error) bool { return target == ErrPublicationMissing }

func (e *PublicationMissingError) Error() string {
	pub := pgx.Identifier{e.Publication}.Sanitize()
	at := "a change"
	if e.LSN != "" {
		at = "the change at " + e.LSN
	}
	// Before PostgreSQL 18, pgoutput looks the publication up in the
	// catalog as it was when the change was written, so that change can
	// never be decoded by this slot, even once the publication exists.
	stuck := fmt.Sprintf("changes written while it was missing can never be decoded from slot %q (PostgreSQL before 18 reads the publication "+
		"as it was when each change was written), so walhook cannot go past them. To go on without them: with walhook stopped, run "+
		"SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn()); (it skips everything written until now), start walhook, "+
		"and re-sync the receivers (for example with a backfill)",
		e.Slot, "'"+escapeLiteral(e.Slot)+"'")
	if e.ExistsNow {
		return fmt.Sprintf("%s: publication %q did not exist when %s was written: it was dropped and created again since; %s. "+
			"The slot itself is fine: do not drop it", ErrPublicationMissing, e.Publication, at, stuck)
	}
	create := "start walhook again, which creates it for source.tables with publish_via_partition_root = true"
	if e.Create != "" {
		create += ", or create it yourself: " + e.Create
	} else {
		create += ", or create it yourself: CREATE PUBLICATION " + pub + " FOR TABLE ... WITH (publish_via_partition_root = true)"
	}
	return fmt.Sprintf("%s: publication %q does not exist, so PostgreSQL cannot decode %s from slot %q. The slot is fine: do not drop it. "+
		"Create the publication again: %s. If walhook then stops here again with the publication in place, %s",
		ErrPublicationMissing, e.Publication, at, e.Slot, create, stuck)
}

var (
	publicationRe = regexp.MustCompile(`^publication "(.*)" does not exist`)
	decodingLSNRe = regexp.MustCompile(`associated LSN ([0-9A-Fa-f]+/[0-9A-Fa-f]+)`)
)

// publicationMissing returns the error for pgErr when it is pgoutput's
// "publication does not exist", else nil.
func publicationMissing(src config.Source, pgErr *pgconn.PgError) *PublicationMissingError {
	m := publicationRe.FindStringSubmatch(pgErr.Message)
	if m == nil {
		return nil
	}
	e := &PublicationMissingError{Publication: m[1], Slot: src.Slot}
	if m := decodingLSNRe.FindStringSubmatch(pgErr.Where); m != nil {
		e.LSN = m[1]
	}
	return e
}

// explainPublication completes a PublicationMissingError in err from the
// catalog (whether the publication exists now, and the statement that
// would create it) and returns it, without the context err added: its
// message names the slot and the position. Other errors pass unchanged.
func explainPublication(ctx context.Context, conn *pgx.Conn, src config.Source, err error) error {
	var e *PublicationMissingError
	if !errors.As(err, &e) {
		return err
	}
	if qerr := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", e.Publication).Scan(&e.ExistsNow); qerr != nil {
		return err
	}
	if !e.ExistsNow {
		if stmt, serr := createPublicationSQL(ctx, conn, src, slog.New(slog.DiscardHandler)); serr == nil {
			e.Create = stmt
		}
	}
	return e
}
