// Package pgstore is the PostgreSQL state store (state.url): cursors,
// backlogs and dead letters in the schema walhook, which it creates and
// migrates (migrate.go), every row keyed by the slot, so that walhooks
// relaying different slots share one database.
//
// Tables (migrations/0001_init.sql):
//
//	walhook.slots            slot → the slot SetSlot recorded
//	walhook.origins          slot → origin record (state.AppendOrigin; 0003_origins.sql)
//	walhook.cursors          slot, sink → cursor record (state.AppendCursor)
//	walhook.backlog          slot, sink, pos (state.AppendPosition) → size, entry record
//	walhook.dead_letter_ids  slot, sink → the last dead-letter number given out
//	walhook.dead_letters     slot, sink, id → head_len, dead-letter record
//	walhook.backfills        slot, id → backfill record (state.AppendBackfill)
//	walhook.pauses           slot, sink → pause record (state.AppendPause), while paused
//	walhook.leaders          slot → the active instance (written by package lease)
//
// Writes are group-committed as in the bbolt store (commit.go): one
// transaction at a time carries every write queued meanwhile, so sinks do
// not wait for one another's commits. Every write goes through one
// connection, Options.Writer: the lease's lock connection when walhook runs
// active/passive, so that an instance that lost its lock can write nothing.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/walhook/walhook/state"
)

// Writer runs fn in one transaction on the connection the store's writes
// must use and commits it; an error from fn rolls it back and is returned.
// fn gets the context its statements must run under: the writer's, with
// the writer's deadline (a lease's validity), not the caller's.
type Writer func(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error

// Options configure a store.
type Options struct {
	// Writer carries every write; nil: a connection of the store's pool.
	Writer Writer
}

// Timeouts bound each statement the store sends, so that a database that
// stopped answering (a network partition) turns into an error rather than
// a goroutine waiting for ever.
const (
	readTimeout  = 10 * time.Second
	writeTimeout = 30 * time.Second
)

// Store is the state of one slot in a PostgreSQL database. It implements
// state.Store.
type Store struct {
	pool  *pgxpool.Pool
	slot  string
	write Writer

	group *state.GroupCommit[op]

	mu       sync.Mutex // guards what follows
	closed   bool
	backlogs map[string]*backlog
	dls      map[string]*deadLetters

	commits, writes atomic.Int64

	closeOnce sync.Once
}

var _ state.Store = (*Store)(nil)

// Open connects to the database at url, creates or migrates the schema
// walhook and loads slot's backlog stats and dead-letter counts.
func Open(ctx context.Context, url, slot string, opts Options) (*Store, error) {
	if slot == "" {
		return nil, errors.New("open state: no slot: the PostgreSQL store keeps each slot's state apart")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open state: state.url: %w", err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["application_name"] = "walhook state"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	s := &Store{pool: pool, slot: slot, write: opts.Writer, backlogs: map[string]*backlog{}, dls: map[string]*deadLetters{}}
	s.group = state.NewGroupCommit(s.commit)
	if s.write == nil {
		s.write = s.poolWriter
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open state: migrate schema walhook: %w", err)
	}
	if err := s.load(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open state: %w", err)
	}
	return s, nil
}

// poolWriter is the Writer of a store without one.
func (s *Store) poolWriter(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

// load reads what is kept in memory: every backlog's stats and every
// sink's number of dead letters.
func (s *Store) load(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `SELECT sink, count(*), sum(size),
		(SELECT pos FROM walhook.backlog f WHERE f.slot = $1 AND f.sink = b.sink ORDER BY pos LIMIT 1),
		(SELECT pos FROM walhook.backlog l WHERE l.slot = $1 AND l.sink = b.sink ORDER BY pos DESC LIMIT 1)
		FROM walhook.backlog b WHERE slot = $1 GROUP BY sink`, s.slot)
	if err != nil {
		return fmt.Errorf("load backlog stats: %w", err)
	}
	for rows.Next() {
		var (
			sink        string
			st          state.BacklogStats
			first, last []byte
		)
		if err := rows.Scan(&sink, &st.Count, &st.Bytes, &first, &last); err != nil {
			rows.Close()
			return fmt.Errorf("load backlog stats: %w", err)
		}
		if st.First, err = state.DecodePosition(first); err == nil {
			st.Last, err = state.DecodePosition(last)
		}
		if err != nil {
			rows.Close()
			return fmt.Errorf("backlog of sink %q: %w", sink, err)
		}
		s.backlog(sink).stats = st
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load backlog stats: %w", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT sink, count(*) FROM walhook.dead_letters WHERE slot = $1 GROUP BY sink`, s.slot)
	if err != nil {
		return fmt.Errorf("count dead letters: %w", err)
	}
	for rows.Next() {
		var sink string
		var n int
		if err := rows.Scan(&sink, &n); err != nil {
			rows.Close()
			return fmt.Errorf("count dead letters: %w", err)
		}
		s.deadLetters(sink).count = n
	}
	return rows.Err()
}

// Close closes the pool, after any write in progress. It is safe to call
// more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.pool.Close()
	})
	return nil
}

// SlotKey is the slot whose rows this store reads and writes.
func (s *Store) SlotKey() string { return s.slot }

func (s *Store) Slot(ctx context.Context) (string, error) {
	var used string
	err := s.read(ctx, func(ctx context.Context) error {
		err := s.pool.QueryRow(ctx, `SELECT used_slot FROM walhook.slots WHERE slot = $1`, s.slot).Scan(&used)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read the slot: %w", err)
	}
	return used, nil
}

func (s *Store) SetSlot(ctx context.Context, slot string) error {
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		_, err := tx.Exec(ctx, `INSERT INTO walhook.slots (slot, used_slot) VALUES ($1, $2)
			ON CONFLICT (slot) DO UPDATE SET used_slot = excluded.used_slot, updated = now()`, s.slot, slot)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("save the slot: %w", err)
	}
	return nil
}

func (s *Store) Origin(ctx context.Context) (state.Origin, error) {
	var o state.Origin
	err := s.read(ctx, func(ctx context.Context) error {
		var rec []byte
		err := s.pool.QueryRow(ctx, `SELECT origin FROM walhook.origins WHERE slot = $1`, s.slot).Scan(&rec)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		o, err = state.DecodeOrigin(rec)
		return err
	})
	if err != nil {
		return state.Origin{}, fmt.Errorf("read the origin: %w", err)
	}
	return o, nil
}

func (s *Store) SetOrigin(ctx context.Context, o state.Origin) error {
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		if o.IsZero() {
			_, err := tx.Exec(ctx, `DELETE FROM walhook.origins WHERE slot = $1`, s.slot)
			return nil, err
		}
		_, err := tx.Exec(ctx, `INSERT INTO walhook.origins (slot, origin) VALUES ($1, $2)
			ON CONFLICT (slot) DO UPDATE SET origin = excluded.origin, updated = now()`, s.slot, state.AppendOrigin(nil, o))
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("save the origin: %w", err)
	}
	return nil
}

func (s *Store) Cursors(ctx context.Context) (map[string]state.Cursor, error) {
	return readBySink(ctx, s, `SELECT sink, cursor FROM walhook.cursors WHERE slot = $1`, "cursor", state.DecodeCursor)
}

// readBySink reads query's (sink, record) rows of the store's slot into a
// map by sink, each record decoded by decode; what names the record in
// errors ("cursor" of sink "a").
func readBySink[T any](ctx context.Context, s *Store, query, what string, decode func([]byte) (T, error)) (map[string]T, error) {
	var out map[string]T
	err := s.read(ctx, func(ctx context.Context) error {
		out = map[string]T{}
		rows, err := s.pool.Query(ctx, query, s.slot)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var sink string
			var rec []byte
			if err := rows.Scan(&sink, &rec); err != nil {
				return err
			}
			v, err := decode(rec)
			if err != nil {
				return fmt.Errorf("%s of sink %q: %w", what, sink, err)
			}
			out[sink] = v
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("load %ss: %w", what, err)
	}
	return out, nil
}

// SaveCursors writes the cursors in one transaction; sinks not in c keep
// theirs.
func (s *Store) SaveCursors(ctx context.Context, c map[string]state.Cursor) error {
	if len(c) == 0 {
		return nil
	}
	sinks := make([]string, 0, len(c))
	recs := make([][]byte, 0, len(c))
	for name, cur := range c {
		if name == "" {
			return fmt.Errorf("save cursors: a sink without a name")
		}
		sinks = append(sinks, name)
		recs = append(recs, state.AppendCursor(nil, cur))
	}
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		_, err := tx.Exec(ctx, `INSERT INTO walhook.cursors (slot, sink, cursor)
			SELECT $1, unnest($2::text[]), unnest($3::bytea[])
			ON CONFLICT (slot, sink) DO UPDATE SET cursor = excluded.cursor, updated = now()`, s.slot, sinks, recs)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("save cursors: %w", err)
	}
	return nil
}

// DeleteCursor removes a sink's cursor.
func (s *Store) DeleteCursor(ctx context.Context, sink string) error {
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		_, err := tx.Exec(ctx, `DELETE FROM walhook.cursors WHERE slot = $1 AND sink = $2`, s.slot, sink)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("delete the cursor of sink %q: %w", sink, err)
	}
	return nil
}

func (s *Store) Backlog(sink string) state.Backlog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backlog(sink)
}

func (s *Store) backlog(sink string) *backlog {
	b, ok := s.backlogs[sink]
	if !ok {
		b = &backlog{s: s, sink: sink}
		s.backlogs[sink] = b
	}
	return b
}

func (s *Store) DeadLetters(sink string) state.DeadLetters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadLetters(sink)
}

func (s *Store) deadLetters(sink string) *deadLetters {
	d, ok := s.dls[sink]
	if !ok {
		d = &deadLetters{s: s, sink: sink}
		s.dls[sink] = d
	}
	return d
}

// read runs fn with a deadline, unless ctx has ended or the store is
// closed.
func (s *Store) read(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return state.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	err := fn(ctx)
	if err != nil && s.isClosed() {
		return state.ErrClosed
	}
	return err
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Stats describes the group commit: transactions and the writes in them.
func (s *Store) Stats() (commits, writes int64) { return s.commits.Load(), s.writes.Load() }
