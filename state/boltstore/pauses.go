package boltstore

import (
	"context"
	"fmt"

	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// Pauses returns every paused sink's pause.
func (s *Store) Pauses(ctx context.Context) (map[string]state.Pause, error) {
	out := map[string]state.Pause{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPauses).ForEach(func(k, v []byte) error {
			p, err := state.DecodePause(v)
			if err != nil {
				return fmt.Errorf("pause of sink %q: %w", k, err)
			}
			out[string(k)] = p
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load pauses: %w", err)
	}
	return out, nil
}

// SavePause records the sink's pause in one fsynced transaction.
func (s *Store) SavePause(ctx context.Context, sink string, p state.Pause) error {
	if sink == "" {
		return fmt.Errorf("save pause: a sink without a name")
	}
	rec := state.AppendPause(nil, p)
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		return nil, tx.Bucket(bucketPauses).Put([]byte(sink), rec)
	})
	if err != nil {
		return fmt.Errorf("save the pause of sink %q: %w", sink, err)
	}
	return nil
}

// DeletePause removes the sink's pause.
func (s *Store) DeletePause(ctx context.Context, sink string) error {
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		return nil, tx.Bucket(bucketPauses).Delete([]byte(sink))
	})
	if err != nil {
		return fmt.Errorf("delete the pause of sink %q: %w", sink, err)
	}
	return nil
}
