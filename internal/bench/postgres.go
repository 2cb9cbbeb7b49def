package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
)

const (
	// table is the captured table; publication publishes it alone.
	table       = "public.bench_rows"
	publication = "bench"
	// writers is how many connections the paced writer commits through,
	// so that one slow commit does not hold back the next ones.
	writers = 4
)

// schema is the captured table: a bigint key, text, numeric, jsonb and
// timestamptz, about 150 bytes a row (pg_column_size of the row).
const schema = `CREATE TABLE bench_rows (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	amount numeric(12,2) NOT NULL,
	attrs jsonb NOT NULL,
	created_at timestamptz NOT NULL)`

// insertRange inserts the rows with ids $1 to $2, in one transaction.
const insertRange = `INSERT INTO bench_rows (id, name, amount, attrs, created_at)
SELECT g, 'customer ' || g || ' ' || substr(md5(g::text), 1, 8), (g % 100000) / 100.0 + 0.01,
	jsonb_build_object('sku', 'SKU-' || (g % 5000), 'qty', g % 10, 'tags', jsonb_build_array('red', 'large')),
	now()
FROM generate_series($1::bigint, $2::bigint) g`

// database is the throwaway cluster the benchmark runs against.
type database struct {
	srv  *pgtest.Server
	dsn  string
	conn *pgx.Conn
}

// startDatabase starts a cluster with room for slots replication slots.
// Autovacuum is off, so that no vacuum competes with a measurement for the
// two cores, and max_wal_size is large enough that the backlogs never force
// a checkpoint.
func startDatabase(ctx context.Context, slots int) (*database, error) {
	n := strconv.Itoa(slots + 4)
	srv, err := pgtest.Start(pgtest.Options{ExtraConf: []string{
		"max_replication_slots = " + n,
		"max_wal_senders = " + n,
		"autovacuum = off",
		"max_wal_size = '4GB'",
	}})
	if err != nil {
		return nil, fmt.Errorf("start postgresql: %w", err)
	}
	d := &database{srv: srv, dsn: srv.DSN("postgres")}
	if d.conn, err = pgx.Connect(ctx, d.dsn); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("connect to postgresql: %w", err)
	}
	return d, nil
}

// close stops the cluster and removes it.
func (d *database) close() error {
	d.conn.Close(context.Background())
	return d.srv.Close()
}

func (d *database) exec(ctx context.Context, sql string, args ...any) error {
	if _, err := d.conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%.60s: %w", sql, err)
	}
	return nil
}

// version returns the server's version string, "15.20 (Debian ...)".
func (d *database) version(ctx context.Context) (string, error) {
	var v string
	err := d.conn.QueryRow(ctx, `SHOW server_version`).Scan(&v)
	return v, err
}

// createSchema creates the table and its publication.
func (d *database) createSchema(ctx context.Context) error {
	if err := d.exec(ctx, schema); err != nil {
		return err
	}
	return d.exec(ctx, `CREATE PUBLICATION `+publication+` FOR TABLE `+table+` WITH (publish_via_partition_root = true)`)
}

// createSlot creates a pgoutput slot, which holds every change committed
// after it.
func (d *database) createSlot(ctx context.Context, name string) error {
	return d.exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, name)
}

// dropSlot drops a slot once nothing streams from it any more (a stopped
// walsender takes a moment to let go).
func (d *database) dropSlot(ctx context.Context, name string) error {
	return poll(ctx, 30*time.Second, "slot "+name+" to be released and dropped", func() (bool, error) {
		var exists, active bool
		err := d.conn.QueryRow(ctx, `SELECT count(*) > 0, coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&exists, &active)
		if err != nil || !exists {
			return !exists, err
		}
		if active {
			return false, nil
		}
		return false, d.exec(ctx, `SELECT pg_drop_replication_slot($1)`, name)
	})
}

// waitSlotActive waits until something streams from the slot.
func (d *database) waitSlotActive(ctx context.Context, name string, timeout time.Duration) error {
	return poll(ctx, timeout, "slot "+name+" to be streamed from", func() (bool, error) {
		var active bool
		err := d.conn.QueryRow(ctx, `SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active)
		return active, err
	})
}

// flushedPast reports whether the slot's confirmed_flush_lsn is at or past lsn.
func (d *database) flushedPast(ctx context.Context, slot, lsn string) (bool, error) {
	var ok bool
	err := d.conn.QueryRow(ctx, `SELECT coalesce(bool_and(confirmed_flush_lsn >= $2::pg_lsn), false) FROM pg_replication_slots WHERE slot_name = $1`, slot, lsn).Scan(&ok)
	return ok, err
}

// backlog describes rows written while nothing consumed them.
type backlog struct {
	FirstID, Rows int64
	TxnRows       int64
	RowBytes      float64 // average pg_column_size of a row
	WALBytes      int64   // WAL written for them
	EndLSN        string  // the WAL position after the last commit
	Seconds       float64 // time taken to write them
}

// writeBacklog inserts rows rows with ids from firstID on, txnRows to a
// transaction, and returns where the WAL ended.
func (d *database) writeBacklog(ctx context.Context, firstID, rows, txnRows int64) (backlog, error) {
	b := backlog{FirstID: firstID, Rows: rows, TxnRows: txnRows}
	var startLSN string
	if err := d.conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&startLSN); err != nil {
		return b, fmt.Errorf("read wal position: %w", err)
	}
	start := time.Now()
	last := firstID + rows - 1
	for lo := firstID; lo <= last; lo += txnRows {
		if err := d.exec(ctx, insertRange, lo, min(lo+txnRows-1, last)); err != nil {
			return b, fmt.Errorf("write backlog: %w", err)
		}
	}
	b.Seconds = time.Since(start).Seconds()
	err := d.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`, startLSN).Scan(&b.EndLSN, &b.WALBytes)
	if err != nil {
		return b, fmt.Errorf("read wal position: %w", err)
	}
	err = d.conn.QueryRow(ctx, `SELECT avg(pg_column_size(r.*))::float8 FROM bench_rows r WHERE id BETWEEN $1 AND $2`, firstID, last).Scan(&b.RowBytes)
	if err != nil {
		return b, fmt.Errorf("measure rows: %w", err)
	}
	return b, nil
}

// writePaced commits up to n single-row transactions, ids from firstID on,
// at rate rows a second: the i-th is due at start + i/rate, whichever of
// the writers' connections is free takes it, and none is sent early. It
// stops early once stop is closed (nil: never). It returns how many it
// committed and the rate achieved, first to last commit. Above 4,000 a
// second it writes through a connection per 1,000 rows a second, so that
// the round trips of a few connections do not cap the rate.
func writePaced(ctx context.Context, dsn string, firstID, n int64, rate int, stop <-chan struct{}) (int64, float64, error) {
	conns := make([]*pgx.Conn, max(writers, rate/1000))
	for i := range conns {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return 0, 0, fmt.Errorf("connect writer: %w", err)
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	interval := time.Second / time.Duration(rate)
	var (
		next    atomic.Int64
		written atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		werr    error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for _, c := range conns {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-t.C:
					case <-stop:
						t.Stop()
						return
					}
				}
				select {
				case <-stop:
					return
				default:
				}
				id := firstID + i
				if _, err := c.Exec(ctx, insertRange, id, id); err != nil {
					errOnce.Do(func() { werr = fmt.Errorf("write row %d: %w", id, err); cancel() })
					return
				}
				written.Add(1)
			}
		})
	}
	wg.Wait()
	if werr != nil {
		return 0, 0, werr
	}
	elapsed := time.Since(start)
	return written.Load(), float64(written.Load()) / elapsed.Seconds(), nil
}

// poll calls cond every 20 ms until it reports true, fails, or timeout
// passes.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: %w after %v", what, errTimeout, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var errTimeout = errors.New("timed out")
