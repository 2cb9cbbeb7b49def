package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/state"
)

// AddEvent stores e at the end of the slot's event queue.
func (s *Store) AddEvent(ctx context.Context, e state.Event) (uint64, error) {
	rec := state.AppendEvent(nil, &e)
	var seq int64
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		return nil, tx.QueryRow(ctx, `INSERT INTO walhook.events (slot, record) VALUES ($1, $2) RETURNING seq`, s.slot, rec).Scan(&seq)
	})
	if err != nil {
		return 0, fmt.Errorf("queue event %s: %w", e.ID, err)
	}
	return uint64(seq), nil
}

// Events returns the oldest queued events of the slot.
func (s *Store) Events(ctx context.Context, max int) ([]state.Event, error) {
	var out []state.Event
	err := s.read(ctx, func(ctx context.Context) error {
		out = nil
		limit := any(nil) // LIMIT NULL: no limit
		if max > 0 {
			limit = max
		}
		rows, err := s.pool.Query(ctx, `SELECT seq, record FROM walhook.events WHERE slot = $1 ORDER BY seq LIMIT $2`, s.slot, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var seq int64
			var rec []byte
			if err := rows.Scan(&seq, &rec); err != nil {
				return err
			}
			e, err := state.DecodeEvent(uint64(seq), rec)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("load events: %w", err)
	}
	return out, nil
}

// DeleteEvent removes a queued event.
func (s *Store) DeleteEvent(ctx context.Context, seq uint64) error {
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		_, err := tx.Exec(ctx, `DELETE FROM walhook.events WHERE slot = $1 AND seq = $2`, s.slot, int64(seq))
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("delete event %d: %w", seq, err)
	}
	return nil
}
