// Package boltstore is the embedded state store: one bbolt file, locked
// while it is open, written with fsync before any write returns.
//
// Buckets:
//
//	meta           "slot" → the slot name; "layout" → 1 byte, this file's layout;
//	               "origin" → origin record (state.AppendOrigin), absent until
//	               a walhook that records it ran
//	cursors        sink → cursor record (state.AppendCursor)
//	backlogs       sink → bucket: position (state.AppendPosition) → entry record
//	backlog_stats  sink → version 1, entry count and record bytes (uvarints)
//	dead_letters   sink → bucket: sequence (8 bytes, big-endian) → dead-letter record
//	backfills      backfill ID → backfill record (state.AppendBackfill)
//	events         sequence (8 bytes, big-endian) → event record (state.AppendEvent)
//	pauses         sink → pause record (state.AppendPause), while it is paused
//
// A file written by cursor.Store (meta and cursors only) opens as it is and
// keeps its cursors; the other buckets are created.
package boltstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	bucketMeta         = []byte("meta")
	bucketCursors      = []byte("cursors")
	bucketBacklogs     = []byte("backlogs")
	bucketBacklogStats = []byte("backlog_stats")
	bucketDeadLetters  = []byte("dead_letters")
	bucketBackfills    = []byte("backfills")
	bucketEvents       = []byte("events")
	bucketPauses       = []byte("pauses")

	keySlot   = []byte("slot")
	keyOrigin = []byte("origin")
	keyLayout = []byte("layout")
)

// layout is the version of the bucket layout above. A file with a higher
// one comes from a newer walhook and is refused.
const layout = 1

// lockTimeout is how long Open waits for another process's lock.
const lockTimeout = 2 * time.Second

// Store is the bbolt state file. It implements state.Store.
type Store struct {
	db   *bolt.DB
	path string

	group *state.GroupCommit[op]

	mu       sync.Mutex // guards what follows
	closed   bool
	backlogs map[string]*backlog
	dls      map[string]*deadLetters

	// solo commits every write in its own transaction, as if there were
	// no group commit; for comparison in benchmarks.
	solo bool
	// commits and writes count transactions and the writes in them.
	commits, writes atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

var _ state.Store = (*Store)(nil)

// Open opens or creates the state file at path. If another process has it
// open, Open gives up after 2 s with an error wrapping state.ErrLocked.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: %w", path, state.ErrLocked)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s := &Store{db: db, path: path, backlogs: map[string]*backlog{}, dls: map[string]*deadLetters{}}
	s.group = state.NewGroupCommit(s.commit)
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return s, nil
}

// init creates the buckets and loads what is kept in memory: each
// backlog's stats and each sink's number of dead letters.
func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketCursors, bucketBacklogs, bucketBacklogStats, bucketDeadLetters, bucketBackfills, bucketEvents, bucketPauses} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyLayout); {
		case v == nil:
			if err := meta.Put(keyLayout, []byte{layout}); err != nil {
				return err
			}
		case len(v) != 1 || v[0] > layout:
			return fmt.Errorf("the state file has layout %x, this walhook knows layout %d: it was written by a newer walhook", v, layout)
		}
		err := tx.Bucket(bucketBacklogs).ForEachBucket(func(k []byte) error {
			b := s.backlog(string(k))
			st, err := loadStats(tx, k)
			if err != nil {
				return fmt.Errorf("backlog of sink %q: %w", k, err)
			}
			b.stats = st
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketDeadLetters).ForEachBucket(func(k []byte) error {
			n := 0
			c := tx.Bucket(bucketDeadLetters).Bucket(k).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
			s.deadLetters(string(k)).count = n
			return nil
		})
	})
}

// Close closes the file and releases its lock, after any write in
// progress. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }

// Slot returns the replication slot this state belongs to, or "" if it was
// never used.
func (s *Store) Slot(ctx context.Context) (string, error) {
	var slot string
	err := s.view(ctx, func(tx *bolt.Tx) error {
		slot = string(tx.Bucket(bucketMeta).Get(keySlot))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read the slot: %w", err)
	}
	return slot, nil
}

// SetSlot records that this state belongs to the named slot.
func (s *Store) SetSlot(ctx context.Context, slot string) error {
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		return nil, tx.Bucket(bucketMeta).Put(keySlot, []byte(slot))
	})
	if err != nil {
		return fmt.Errorf("save the slot: %w", err)
	}
	return nil
}

// Origin returns the cluster and timeline the state's positions belong
// to, or the zero Origin (also for a file written before walhook recorded
// it).
func (s *Store) Origin(ctx context.Context) (state.Origin, error) {
	var o state.Origin
	err := s.view(ctx, func(tx *bolt.Tx) error {
		rec := tx.Bucket(bucketMeta).Get(keyOrigin)
		if rec == nil {
			return nil
		}
		var err error
		o, err = state.DecodeOrigin(rec)
		return err
	})
	if err != nil {
		return state.Origin{}, fmt.Errorf("read the origin: %w", err)
	}
	return o, nil
}

// SetOrigin records the cluster and timeline; the zero Origin removes them.
func (s *Store) SetOrigin(ctx context.Context, o state.Origin) error {
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		if o.IsZero() {
			return nil, tx.Bucket(bucketMeta).Delete(keyOrigin)
		}
		return nil, tx.Bucket(bucketMeta).Put(keyOrigin, state.AppendOrigin(nil, o))
	})
	if err != nil {
		return fmt.Errorf("save the origin: %w", err)
	}
	return nil
}

// Cursors returns every sink's saved cursor.
func (s *Store) Cursors(ctx context.Context) (map[string]state.Cursor, error) {
	out := map[string]state.Cursor{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCursors).ForEach(func(k, v []byte) error {
			c, err := state.DecodeCursor(v)
			if err != nil {
				return fmt.Errorf("cursor of sink %q: %w", k, err)
			}
			out[string(k)] = c
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load cursors: %w", err)
	}
	return out, nil
}

// SaveCursors writes the cursors in one fsynced transaction; sinks not in
// c keep theirs.
func (s *Store) SaveCursors(ctx context.Context, c map[string]state.Cursor) error {
	if len(c) == 0 {
		return nil
	}
	recs := make(map[string][]byte, len(c))
	for name, cur := range c {
		if name == "" {
			return fmt.Errorf("save cursors: a sink without a name")
		}
		recs[name] = state.AppendCursor(nil, cur)
	}
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		b := tx.Bucket(bucketCursors)
		for name, rec := range recs {
			if err := b.Put([]byte(name), rec); err != nil {
				return nil, fmt.Errorf("sink %q: %w", name, err)
			}
		}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("save cursors: %w", err)
	}
	return nil
}

// Backlog returns the named sink's backlog.
func (s *Store) Backlog(sink string) state.Backlog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backlog(sink)
}

// backlog returns the sink's backlog handle, made on first use; s.mu is
// held (or s is not shared yet).
func (s *Store) backlog(sink string) *backlog {
	b, ok := s.backlogs[sink]
	if !ok {
		b = &backlog{s: s, sink: sink, name: []byte(sink)}
		s.backlogs[sink] = b
	}
	return b
}

// DeadLetters returns the named sink's dead letters.
func (s *Store) DeadLetters(sink string) state.DeadLetters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadLetters(sink)
}

func (s *Store) deadLetters(sink string) *deadLetters {
	d, ok := s.dls[sink]
	if !ok {
		d = &deadLetters{s: s, sink: sink, name: []byte(sink)}
		s.dls[sink] = d
	}
	return d
}

// view runs fn in a read transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return translate(s.db.View(fn))
}

// translate turns bbolt's errors into the state package's.
func translate(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return state.ErrClosed
	}
	return err
}

// DeleteCursor removes a sink's cursor.
func (s *Store) DeleteCursor(ctx context.Context, sink string) error {
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		return nil, tx.Bucket(bucketCursors).Delete([]byte(sink))
	})
	if err != nil {
		return fmt.Errorf("delete the cursor of sink %q: %w", sink, err)
	}
	return nil
}
