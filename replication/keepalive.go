package replication

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// maxStatusInterval bounds the time between two standby status updates.
	maxStatusInterval = 10 * time.Second
	// minSenderStatusInterval is the shortest interval a small
	// wal_sender_timeout can ask for, so that a timeout of a few
	// milliseconds does not turn status updates into a busy loop.
	minSenderStatusInterval = 100 * time.Millisecond
)

// statusInterval is how often a status update goes out on a connection
// whose walsender ends it after senderTimeout without a message from
// walhook (0: never).
//
// It is at most receiveTimeout/3: the updates of the receive loop ask the
// server for a reply, so a live connection is never silent for longer, and
// a silent one gets three requests before it is declared dead. It is at
// most heartbeat too: the reply is a keepalive carrying the server's
// position, which becomes the flush LSN of the next update when nothing is
// in flight, so the slot follows an idle or filtered-out WAL within about
// two heartbeats.
//
// It is at most senderTimeout/4, whatever the other two say, since a
// blocked sink (or a stop while the sinks drain) leaves these updates as
// the only messages the walsender gets. The walsender asks for a reply at
// half its timeout and gives up at the whole: with a quarter, even an
// update late by a whole interval (a stalled process, a busy core) comes no
// later than that request, and the connection survives until one is three
// intervals late; with a third the late update would come after the
// request, with half at the timeout itself. This only shortens the
// interval, so receive_timeout still gets its three reply requests and is
// detected as before, only checked more often.
func statusInterval(receiveTimeout, heartbeat, senderTimeout time.Duration) time.Duration {
	d := maxStatusInterval
	if t := receiveTimeout / 3; t > 0 && t < d {
		d = t
	}
	if heartbeat > 0 && heartbeat < d {
		d = heartbeat
	}
	if t := max(senderTimeout/4, minSenderStatusInterval); senderTimeout > 0 && t < d {
		d = t
	}
	return d
}

// senderTimeout reads the wal_sender_timeout of the walsender serving conn;
// 0 means it never times out.
func senderTimeout(ctx context.Context, conn *pgconn.PgConn) (time.Duration, error) {
	res, err := conn.Exec(ctx, "SHOW wal_sender_timeout").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return 0, fmt.Errorf("read wal_sender_timeout: SHOW answered %d results, want one row of one value", len(res))
	}
	d, err := parseTimeSetting(string(res[0].Rows[0][0]))
	if err != nil {
		return 0, fmt.Errorf("read wal_sender_timeout: %w", err)
	}
	return d, nil
}

// timeUnits are the units SHOW gives a setting measured in time; a bare
// number counts milliseconds, wal_sender_timeout's own unit.
var timeUnits = map[string]time.Duration{
	"":    time.Millisecond,
	"us":  time.Microsecond,
	"ms":  time.Millisecond,
	"s":   time.Second,
	"min": time.Minute,
	"h":   time.Hour,
	"d":   24 * time.Hour,
}

// parseTimeSetting parses a time setting as SHOW gives it: an integer and a
// unit ("4s", "1min", "1500ms"), or a bare integer ("0"). A value of 0 or
// less is returned as 0 (off).
func parseTimeSetting(s string) (time.Duration, error) {
	num := strings.TrimRight(s, "abcdefghijklmnopqrstuvwxyz")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a time setting (e.g. 60s or 1min)", s)
	}
	if n <= 0 {
		return 0, nil
	}
	unit, ok := timeUnits[s[len(num):]]
	if !ok {
		return 0, fmt.Errorf("%q is not a time setting (e.g. 60s or 1min)", s)
	}
	if n > int64(time.Duration(1<<63-1)/unit) {
		return 0, fmt.Errorf("%q is longer than walhook can count", s)
	}
	return time.Duration(n) * unit, nil
}
