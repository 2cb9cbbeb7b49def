package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// AddEvent stores e under the events bucket's next sequence number.
func (s *Store) AddEvent(ctx context.Context, e state.Event) (uint64, error) {
	rec := state.AppendEvent(nil, &e)
	var seq uint64
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		b := tx.Bucket(bucketEvents)
		b.FillPercent = 1 // keys only ever go at the end
		var err error
		if seq, err = b.NextSequence(); err != nil {
			return nil, err
		}
		return nil, b.Put(binary.BigEndian.AppendUint64(nil, seq), rec)
	})
	if err != nil {
		return 0, fmt.Errorf("queue event %s: %w", e.ID, err)
	}
	return seq, nil
}

// Events returns the oldest queued events.
func (s *Store) Events(ctx context.Context, max int) ([]state.Event, error) {
	var out []state.Event
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil && (max <= 0 || len(out) < max); k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("event key %x: %w", k, state.ErrCorrupt)
			}
			e, err := state.DecodeEvent(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load events: %w", err)
	}
	return out, nil
}

// DeleteEvent removes a queued event.
func (s *Store) DeleteEvent(ctx context.Context, seq uint64) error {
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		return nil, tx.Bucket(bucketEvents).Delete(binary.BigEndian.AppendUint64(nil, seq))
	})
	if err != nil {
		return fmt.Errorf("delete event %d: %w", seq, err)
	}
	return nil
}
