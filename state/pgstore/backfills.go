package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/state"
)

// Backfills returns every backfill of the slot, oldest first.
func (s *Store) Backfills(ctx context.Context) ([]state.Backfill, error) {
	var out []state.Backfill
	err := s.read(ctx, func(ctx context.Context) error {
		out = nil
		rows, err := s.pool.Query(ctx, `SELECT id, record FROM walhook.backfills WHERE slot = $1`, s.slot)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var rec []byte
			if err := rows.Scan(&id, &rec); err != nil {
				return err
			}
			bf, err := state.DecodeBackfill(rec)
			if err != nil {
				return fmt.Errorf("backfill %q: %w", id, err)
			}
			out = append(out, bf)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("load backfills: %w", err)
	}
	state.SortBackfills(out)
	return out, nil
}

// SaveBackfill writes b, replacing the backfill with its ID.
func (s *Store) SaveBackfill(ctx context.Context, b state.Backfill) error {
	if b.ID == "" {
		return fmt.Errorf("save backfill: a backfill without an ID")
	}
	rec := state.AppendBackfill(nil, &b)
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		_, err := tx.Exec(ctx, `INSERT INTO walhook.backfills (slot, id, record) VALUES ($1, $2, $3)
			ON CONFLICT (slot, id) DO UPDATE SET record = excluded.record, updated = now()`, s.slot, b.ID, rec)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("save backfill %s: %w", b.ID, err)
	}
	return nil
}

// DeleteBackfill removes a backfill.
func (s *Store) DeleteBackfill(ctx context.Context, id string) error {
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		tag, err := tx.Exec(ctx, `DELETE FROM walhook.backfills WHERE slot = $1 AND id = $2`, s.slot, id)
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == 0 {
			return nil, refuse(fmt.Errorf("backfill %q: %w", id, state.ErrNotFound))
		}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("delete backfill: %w", err)
	}
	return nil
}
