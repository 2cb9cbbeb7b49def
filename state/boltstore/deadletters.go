package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// deadLetters is one sink's dead letters: a bucket under "dead_letters"
// whose keys are the bucket's sequence numbers (8 bytes, big-endian, so key
// order is creation order) and whose values are dead-letter records. A
// record's header comes first, so List reads only that part of each value.
type deadLetters struct {
	s    *Store
	sink string
	name []byte

	mu    sync.Mutex
	count int // loaded at open, kept up to date after each commit
}

func (d *deadLetters) Add(ctx context.Context, dl state.DeadLetter) (string, error) {
	if d.sink == "" {
		return "", fmt.Errorf("dead letter of a sink without a name")
	}
	dl, err := state.PrepareDeadLetter(dl, time.Now())
	if err != nil {
		return "", fmt.Errorf("add a dead letter to sink %q: %w", d.sink, err)
	}
	rec := state.AppendDeadLetter(nil, &dl)
	var id string
	err = d.s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		var after func()
		var err error
		id, after, err = d.put(tx, rec)
		return after, err
	})
	if err != nil {
		return "", fmt.Errorf("add a dead letter to sink %q: %w", d.sink, err)
	}
	return id, nil
}

// put stores a dead-letter record in tx under the sink's next sequence
// number and returns its ID and what counts it once tx is durable.
func (d *deadLetters) put(tx *bolt.Tx, rec []byte) (string, func(), error) {
	b, err := tx.Bucket(bucketDeadLetters).CreateBucketIfNotExists(d.name)
	if err != nil {
		return "", nil, err
	}
	b.FillPercent = 1 // keys only ever go at the end
	seq, err := b.NextSequence()
	if err != nil {
		return "", nil, err
	}
	if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), rec); err != nil {
		return "", nil, err
	}
	return state.FormatID(seq), func() {
		d.mu.Lock()
		d.count++
		d.mu.Unlock()
	}, nil
}

func (d *deadLetters) List(ctx context.Context) ([]state.DeadLetter, error) {
	var out []state.DeadLetter
	err := d.s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDeadLetters).Bucket(d.name)
		if b == nil {
			return nil
		}
		var dec state.Decoder
		return b.ForEach(func(k, v []byte) error {
			id, err := idOf(k)
			if err != nil {
				return err
			}
			dl, err := dec.DeadLetter(id, v, false)
			if err != nil {
				return fmt.Errorf("dead letter %s: %w", id, err)
			}
			out = append(out, dl)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list the dead letters of sink %q: %w", d.sink, err)
	}
	return out, nil
}

func (d *deadLetters) Get(ctx context.Context, id string) (state.DeadLetter, error) {
	var dl state.DeadLetter
	err := d.s.view(ctx, func(tx *bolt.Tx) error {
		b, key := d.lookup(tx, id)
		if b == nil {
			return state.ErrNotFound
		}
		var dec state.Decoder
		var err error
		dl, err = dec.DeadLetter(id, b.Get(key), true)
		return err
	})
	if err != nil {
		return state.DeadLetter{}, fmt.Errorf("dead letter %q of sink %q: %w", id, d.sink, err)
	}
	return dl, nil
}

func (d *deadLetters) Delete(ctx context.Context, id string) error {
	err := d.s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		b, key := d.lookup(tx, id)
		if b == nil {
			return nil, state.ErrNotFound
		}
		if err := b.Delete(key); err != nil {
			return nil, err
		}
		return func() {
			d.mu.Lock()
			d.count--
			d.mu.Unlock()
		}, nil
	})
	if err != nil {
		return fmt.Errorf("delete dead letter %q of sink %q: %w", id, d.sink, err)
	}
	return nil
}

func (d *deadLetters) Count(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d.s.mu.Lock()
	closed := d.s.closed
	d.s.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("count the dead letters of sink %q: %w", d.sink, state.ErrClosed)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count, nil
}

// lookup returns the bucket and key of the dead letter id, or nil if there
// is none.
func (d *deadLetters) lookup(tx *bolt.Tx, id string) (*bolt.Bucket, []byte) {
	seq, ok := state.ParseID(id)
	if !ok {
		return nil, nil
	}
	b := tx.Bucket(bucketDeadLetters).Bucket(d.name)
	if b == nil {
		return nil, nil
	}
	key := binary.BigEndian.AppendUint64(nil, seq)
	if b.Get(key) == nil {
		return nil, nil
	}
	return b, key
}

func idOf(k []byte) (string, error) {
	if len(k) != 8 {
		return "", fmt.Errorf("%w: dead-letter key %x: want 8 bytes", state.ErrCorrupt, k)
	}
	return state.FormatID(binary.BigEndian.Uint64(k)), nil
}
