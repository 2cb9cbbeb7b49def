// Package lease decides which of several walhooks relaying one slot is
// active: the one holding a PostgreSQL session advisory lock keyed by the
// slot, on a connection of its own (the lock connection).
//
// The key is hashtextextended('walhook slot ' || slot, 0), computed by the
// server, so an operator can find the holder with psql:
//
//	SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
//	  AND (classid::bigint << 32 | objid::bigint) = hashtextextended('walhook slot ' || 'walhook', 0);
//
// A Candidate polls for the lock; the Lease it returns carries every state
// write of the active instance (Lease.Tx, the pgstore.Writer), so that a
// commit proves the lock was held when it happened. The lease renews itself
// with a check query every CheckInterval and counts itself lost (Lost) when
// no query on its connection succeeded for Validity since it was sent, or
// as soon as one fails. The lock session asks the server to end it after
// SessionTimeout of silence, which releases the lock; Validity is shorter
// by a margin, so an active cut off from the database has stopped before
// the server lets another take the lock (docs/design.md, "Leadership").
package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The timing of leadership. A standby polls every PollInterval; an active
// checks its lock every CheckInterval and stops when no check succeeded for
// Validity; the server ends a lock session that stayed silent for
// SessionTimeout (idle_session_timeout, idle_in_transaction_session_timeout
// and statement_timeout of the lock session), releasing the lock. So a
// standby takes over at most SessionTimeout + PollInterval (plus the time
// to start) after the active went silent, and at once after the active's
// process died (its socket closes, the session ends).
const (
	PollInterval   = time.Second
	CheckInterval  = time.Second
	Validity       = 4 * time.Second
	SessionTimeout = 6 * time.Second
	// connectTimeout bounds a connection attempt and pollTimeout a poll.
	connectTimeout = 5 * time.Second
	pollTimeout    = 3 * time.Second
)

// ErrLost: the lease is lost or released; nothing more goes through it.
var ErrLost = errors.New("lease lost: another walhook may be active now")

// Lease is the lock a Candidate acquired, with its connection.
type Lease struct {
	slot string
	key  int64

	mu         sync.Mutex // guards conn and validUntil; held for each query
	conn       *pgx.Conn
	validUntil time.Time

	// born and validFor give validUntil without mu, on the monotonic
	// clock, for Valid: validUntil = born + validFor.
	born     time.Time
	validFor atomic.Int64 // nanoseconds

	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error
	expiry   *time.Timer

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func newLease(conn *pgx.Conn, slot string, key int64, sent time.Time) *Lease {
	l := &Lease{slot: slot, key: key, conn: conn, validUntil: sent.Add(Validity), born: sent,
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	l.validFor.Store(int64(Validity))
	l.expiry = time.AfterFunc(time.Until(l.validUntil), func() {
		l.lose(fmt.Errorf("no answer from the lock connection for %v", Validity))
	})
	go l.watch()
	return l
}

// Lost is closed when the lease is lost; Err then says why.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err returns why the lease was lost, nil while it holds.
func (l *Lease) Err() error {
	select {
	case <-l.lost:
		return l.lostErr
	default:
		return nil
	}
}

// Valid returns nil while the lease holds: not lost, not released, and
// its validity not run out by the clock. It differs from Err after the
// process was frozen (SIGSTOP, a paused VM) and resumed: the validity may
// have run out while the timer that counts the lease lost has not fired
// yet. Delivery asks it before every attempt. It takes no lock, so a query
// stuck on the lock connection does not hold it up.
func (l *Lease) Valid() error {
	if err := l.Err(); err != nil {
		return err
	}
	select {
	case <-l.stop:
		return fmt.Errorf("%w: released", ErrLost)
	default:
	}
	if time.Since(l.born) >= time.Duration(l.validFor.Load()) {
		return fmt.Errorf("%w: no answer from the lock connection for %v", ErrLost, Validity)
	}
	return nil
}

func (l *Lease) lose(err error) {
	l.lostOnce.Do(func() {
		l.lostErr = fmt.Errorf("%w: %v", ErrLost, err)
		l.expiry.Stop()
		close(l.lost)
	})
}

// Release gives the lock up (its session ends) and waits for the lease's
// goroutine. It does not count as a loss. Safe to call more than once.
func (l *Lease) Release() {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
}

// watch checks the lock every CheckInterval until the lease is lost or
// released, then closes the connection.
func (l *Lease) watch() {
	defer close(l.done)
	t := time.NewTicker(CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			l.closeConn()
			return
		case <-l.lost:
			l.closeConn()
			return
		case <-t.C:
			if err := l.check(); err != nil {
				l.lose(err)
			}
		}
	}
}

func (l *Lease) closeConn() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expiry.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.conn.Close(ctx)
}

// check asks the server whether the lock session still holds the lock.
func (l *Lease) check() error {
	return l.do(context.Background(), func(ctx context.Context, conn *pgx.Conn) error {
		var held bool
		if err := conn.QueryRow(ctx, heldSQL, l.key).Scan(&held); err != nil {
			return fmt.Errorf("check the lock: %w", err)
		}
		if !held {
			return errors.New("the lock session no longer holds the lock")
		}
		return nil
	})
}

// heldSQL: does this session hold the advisory lock $1?
const heldSQL = `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
	AND pid = pg_backend_pid() AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = $1)`

// do runs fn on the lock connection with the lease's deadline; a success
// renews the lease from when fn started, a broken connection loses it.
func (l *Lease) do(ctx context.Context, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.Err(); err != nil {
		return err
	}
	select {
	case <-l.stop:
		return fmt.Errorf("%w: released", ErrLost)
	default:
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), l.validUntil)
	defer cancel()
	sent := time.Now()
	err := fn(ctx, l.conn)
	if l.conn.IsClosed() {
		if err == nil {
			err = errors.New("the lock connection closed")
		}
		l.lose(err)
		return fmt.Errorf("%w: %v", ErrLost, err)
	}
	if err == nil && l.Err() == nil {
		l.validUntil = sent.Add(Validity)
		l.validFor.Store(int64(l.validUntil.Sub(l.born)))
		l.expiry.Reset(time.Until(l.validUntil))
	}
	return err
}

// Tx runs fn in a transaction on the lock connection and commits it: a
// commit there proves the lock was held. It is a pgstore.Writer. ctx's
// cancellation is ignored once the transaction starts (a started write is
// finished); the lease's validity bounds it instead, and fn's statements
// must run under the ctx it is given, which carries that deadline.
func (l *Lease) Tx(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return l.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return fn(ctx, tx) })
	})
}
