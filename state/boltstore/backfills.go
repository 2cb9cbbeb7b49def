package boltstore

import (
	"context"
	"fmt"

	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// Backfills returns every backfill, oldest first.
func (s *Store) Backfills(ctx context.Context) ([]state.Backfill, error) {
	var out []state.Backfill
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBackfills).ForEach(func(k, v []byte) error {
			bf, err := state.DecodeBackfill(v)
			if err != nil {
				return fmt.Errorf("backfill %q: %w", k, err)
			}
			out = append(out, bf)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load backfills: %w", err)
	}
	state.SortBackfills(out)
	return out, nil
}

// SaveBackfill writes b in one fsynced transaction, replacing the backfill
// with its ID.
func (s *Store) SaveBackfill(ctx context.Context, b state.Backfill) error {
	if b.ID == "" {
		return fmt.Errorf("save backfill: a backfill without an ID")
	}
	rec := state.AppendBackfill(nil, &b)
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		return nil, tx.Bucket(bucketBackfills).Put([]byte(b.ID), rec)
	})
	if err != nil {
		return fmt.Errorf("save backfill %s: %w", b.ID, err)
	}
	return nil
}

// DeleteBackfill removes a backfill.
func (s *Store) DeleteBackfill(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		b := tx.Bucket(bucketBackfills)
		if b.Get([]byte(id)) == nil {
			return nil, fmt.Errorf("backfill %q: %w", id, state.ErrNotFound)
		}
		return nil, b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete backfill: %w", err)
	}
	return nil
}
