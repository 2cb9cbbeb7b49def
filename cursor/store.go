package cursor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Store is the embedded state file: one bbolt database, written with fsync
// on every save, locked by the process that has it open.
type Store struct {
	db *bolt.DB
}

var (
	bucketCursors = []byte("cursors")
	bucketMeta    = []byte("meta")
	keySlot       = []byte("slot")
)

// ErrLocked is returned by Open when another process holds the state file.
var ErrLocked = errors.New("state file is locked by another walhook process")

// Open opens or creates the state file at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCursors, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Cursor is what is persisted for one sink.
type Cursor struct {
	Acked change.Position // every message at or below it was delivered
}

// Load returns the cursor saved for every sink.
func (s *Store) Load() (map[string]Cursor, error) {
	out := map[string]Cursor{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCursors).ForEach(func(k, v []byte) error {
			c, err := decodeCursor(v)
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

// Save writes the cursors in one fsynced transaction.
func (s *Store) Save(cursors map[string]Cursor) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCursors)
		for name, c := range cursors {
			if err := b.Put([]byte(name), encodeCursor(c)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save cursors: %w", err)
	}
	return nil
}

// Slot returns the replication slot this state was used with, or "" if it
// was never used.
func (s *Store) Slot() (string, error) {
	var slot string
	err := s.db.View(func(tx *bolt.Tx) error {
		slot = string(tx.Bucket(bucketMeta).Get(keySlot))
		return nil
	})
	return slot, err
}

// SetSlot records that this state belongs to the named slot.
func (s *Store) SetSlot(slot string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySlot, []byte(slot))
	})
}

// A cursor record is a version byte (1) and the position: commit LSN (8
// bytes) and index (4), big-endian. Files written before the version byte
// hold 20 bytes, the position and a flush LSN that is no longer read.
const (
	cursorVersion   = 1
	cursorLen       = 1 + 8 + 4
	legacyCursorLen = 8 + 4 + 8
)

func encodeCursor(c Cursor) []byte {
	b := make([]byte, cursorLen)
	b[0] = cursorVersion
	binary.BigEndian.PutUint64(b[1:], uint64(c.Acked.CommitLSN))
	binary.BigEndian.PutUint32(b[9:], c.Acked.Idx)
	return b
}

func decodeCursor(b []byte) (Cursor, error) {
	switch {
	case len(b) == legacyCursorLen:
	case len(b) == cursorLen && b[0] == cursorVersion:
		b = b[1:]
	default:
		return Cursor{}, fmt.Errorf("%d bytes, want a version %d record of %d: the state file is corrupt or from a newer walhook", len(b), cursorVersion, cursorLen)
	}
	return Cursor{Acked: change.Position{
		CommitLSN: pglogrepl.LSN(binary.BigEndian.Uint64(b[0:])),
		Idx:       binary.BigEndian.Uint32(b[8:]),
	}}, nil
}
