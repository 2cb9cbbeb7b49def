package replication

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/config"
)

// ErrSlotActive means another process streams from the slot; walhook waits
// for it to go away, which is how a standby instance behaves.
type ErrSlotActive struct {
	Slot string
	PID  int // 0 if the server did not say
}

func (e *ErrSlotActive) Error() string {
	return fmt.Sprintf("replication slot %q is in use by the process with PID %d", e.Slot, e.PID)
}

var activePIDRe = regexp.MustCompile(`active for PID (\d+)`)

// translate turns driver errors into walhook's: an active slot, a lost
// slot, a missing publication (src names the slot and the publication).
func translate(src config.Source, err error) error {
	slot := src.Slot
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55006": // object_in_use
			e := &ErrSlotActive{Slot: slot}
			if m := activePIDRe.FindStringSubmatch(pgErr.Message); m != nil {
				e.PID, _ = strconv.Atoi(m[1])
			}
			return e
		case "42704": // undefined_object: the publication pgoutput reads, or the slot
			if e := publicationMissing(src, pgErr); e != nil {
				return e
			}
			if !strings.HasPrefix(pgErr.Message, "replication slot ") {
				break // another object: not about the slot
			}
			// The slot was dropped under us.
			return fmt.Errorf("%w: slot %q was dropped while walhook used it (%s); changes made since are in no slot. "+
				"To recover: run walhook slot drop (it makes the state file or state.url forget the slot), start walhook again, "+
				"and re-sync the receivers (for example with a backfill)",
				ErrSlotLost, slot, pgErr.Message)
		case "55000": // object_not_in_prerequisite_state: an invalidated slot, among others
			if strings.Contains(pgErr.Detail, "invalidated") || strings.Contains(pgErr.Message, "invalidated") {
				return fmt.Errorf("%w (%s: %s)", slotLostError(slot, serverInvalidation(pgErr)), pgErr.Message, pgErr.Detail)
			}
		}
	}
	return err
}

// IsConnLost reports whether err means the connection to PostgreSQL broke
// (or went silent) and a reconnect may succeed. A connection refused in
// TLS (an untrusted or wrong certificate, TLS off) is not: that needs a
// change of configuration.
func IsConnLost(err error) bool {
	if err == nil || tlsProblem(err) != "" {
		return false
	}
	if errors.Is(err, errDead) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", // admin_shutdown: a fast stop, or pg_terminate_backend
			"57P02", // crash_shutdown: another backend crashed
			"57P03", // cannot_connect_now: starting up, shutting down, in recovery
			"57P05", // idle_session_timeout
			"53300": // too_many_connections: a slot frees up in time
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection exceptions
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	return pgconn.SafeToRetry(err)
}

var errDead = errors.New("replication connection silent for longer than source.receive_timeout")

// connectError says that connecting failed, and why in so many words when
// it was TLS or a missing privilege.
func connectError(err error) error {
	if p := tlsProblem(err); p != "" {
		return fmt.Errorf("connect to source: %s: %w", p, err)
	}
	if fix := connectPrivilege(err); fix != "" {
		return fmt.Errorf("connect to source: %w; %s", err, fix)
	}
	return fmt.Errorf("connect to source: %w", err)
}
