package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Candidate competes for the lease of one slot.
type Candidate struct {
	url  string
	slot string
	host string
	pid  int
	log  *slog.Logger

	mu   sync.Mutex // guards conn
	conn *pgx.Conn  // the connection that polls; it becomes the lease's
}

// NewCandidate returns a candidate for slot's lease in the database at
// url (state.url), naming itself by host and process ID.
func NewCandidate(url, slot string, log *slog.Logger) *Candidate {
	host, _ := os.Hostname()
	return &Candidate{url: url, slot: slot, host: host, pid: os.Getpid(), log: log}
}

// Holder is the active instance as it wrote itself into walhook.leaders.
type Holder struct {
	Host  string
	PID   int
	Since time.Time
}

// Acquire polls for the lock every PollInterval until it holds it, then
// returns the lease; it returns ctx's error when ctx ends first. Failing
// polls (the database is unreachable) are logged and retried.
func (c *Candidate) Acquire(ctx context.Context) (*Lease, error) {
	logged := false
	for {
		l, err := c.try(ctx)
		if l != nil {
			return l, nil
		}
		if err != nil && ctx.Err() == nil && !logged {
			c.log.Warn("standby: cannot reach the state database to compete for the lease; retrying", "err", err)
			logged = true
		} else if err == nil {
			logged = false
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(PollInterval):
		}
	}
}

// TryAcquire polls once: the lease if the lock was free, nil if another
// instance holds it.
func (c *Candidate) TryAcquire(ctx context.Context) (*Lease, error) { return c.try(ctx) }

// try polls once: the lease if the lock was free, nil if another holds it.
func (c *Candidate) try(ctx context.Context) (*Lease, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	sent := time.Now()
	var got bool
	var key int64
	err := c.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(k), k FROM (SELECT hashtextextended($1, 0) AS k) s`, KeyText(c.slot)).Scan(&got, &key)
	if err == nil && got {
		_, err = c.conn.Exec(ctx, `INSERT INTO walhook.leaders (slot, host, pid, backend_pid, since) VALUES ($1, $2, $3, pg_backend_pid(), now())
			ON CONFLICT (slot) DO UPDATE SET host = excluded.host, pid = excluded.pid, backend_pid = excluded.backend_pid, since = excluded.since`,
			c.slot, c.host, c.pid)
		if err != nil {
			err = fmt.Errorf("record this instance in walhook.leaders: %w", err)
		}
	}
	if err != nil {
		c.dropConn()
		return nil, err
	}
	if !got {
		return nil, nil
	}
	conn := c.conn
	c.conn = nil
	return newLease(conn, c.slot, key, sent), nil
}

// KeyText is the text whose hashtextextended(text, 0) is slot's lock key.
func KeyText(slot string) string { return "walhook slot " + slot }

// connect opens the polling connection if there is none, with the session
// settings a lock session needs; c.mu is held.
func (c *Candidate) connect(ctx context.Context) error {
	if c.conn != nil && !c.conn.IsClosed() {
		return nil
	}
	cfg, err := pgx.ParseConfig(c.url)
	if err != nil {
		return fmt.Errorf("state.url: %w", err)
	}
	cfg.ConnectTimeout = connectTimeout
	cfg.RuntimeParams["application_name"] = "walhook lease " + c.host + " " + strconv.Itoa(c.pid)
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	if err := sessionSettings(ctx, conn); err != nil {
		conn.Close(context.Background())
		return err
	}
	c.conn = conn
	return nil
}

// sessionSettings makes the server end the session, and so release the
// lock, after SessionTimeout of silence: idle, idle in a transaction, or
// a statement that runs that long; TCP keepalives and tcp_user_timeout
// catch a peer that vanished while data was unacknowledged. A setting the
// server does not know (idle_session_timeout before PostgreSQL 14) is
// skipped.
func sessionSettings(ctx context.Context, conn *pgx.Conn) error {
	ms := strconv.FormatInt(SessionTimeout.Milliseconds(), 10)
	for _, set := range []string{
		"SET idle_session_timeout = " + ms,
		"SET idle_in_transaction_session_timeout = " + ms,
		"SET statement_timeout = " + ms,
		"SET tcp_keepalives_idle = 2",
		"SET tcp_keepalives_interval = 1",
		"SET tcp_keepalives_count = 3",
		"SET tcp_user_timeout = " + ms,
	} {
		if _, err := conn.Exec(ctx, set); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object
				continue
			}
			return fmt.Errorf("%s: %w", set, err)
		}
	}
	return nil
}

// dropConn closes the polling connection; c.mu is held.
func (c *Candidate) dropConn() {
	if c.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.conn.Close(ctx)
	c.conn = nil
}

// Holder returns the instance holding the lock as walhook.leaders names
// it, and false when no live session holds it.
func (c *Candidate) Holder(ctx context.Context) (Holder, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return Holder{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	var h Holder
	err := c.conn.QueryRow(ctx, `SELECT l.host, l.pid, l.since FROM walhook.leaders l WHERE l.slot = $1
		AND EXISTS (SELECT 1 FROM pg_locks k WHERE k.pid = l.backend_pid AND k.locktype = 'advisory' AND k.granted
			AND k.objsubid = 1 AND (k.classid::bigint << 32 | k.objid::bigint) = hashtextextended($2, 0))`, c.slot, KeyText(c.slot)).Scan(&h.Host, &h.PID, &h.Since)
	if errors.Is(err, pgx.ErrNoRows) {
		return Holder{}, false, nil
	}
	if err != nil {
		c.dropConn()
		return Holder{}, false, err
	}
	return h, true, nil
}

// Close closes the polling connection.
func (c *Candidate) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropConn()
}
