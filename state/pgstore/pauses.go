package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/state"
)

// Pauses returns every paused sink's pause.
func (s *Store) Pauses(ctx context.Context) (map[string]state.Pause, error) {
	return readBySink(ctx, s, `SELECT sink, record FROM walhook.pauses WHERE slot = $1`, "pause", state.DecodePause)
}

// SavePause records the sink's pause.
func (s *Store) SavePause(ctx context.Context, sink string, p state.Pause) error {
	if sink == "" {
		return fmt.Errorf("save pause: a sink without a name")
	}
	rec := state.AppendPause(nil, p)
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		_, err := tx.Exec(ctx, `INSERT INTO walhook.pauses (slot, sink, record) VALUES ($1, $2, $3)
			ON CONFLICT (slot, sink) DO UPDATE SET record = excluded.record, updated = now()`, s.slot, sink, rec)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("save the pause of sink %q: %w", sink, err)
	}
	return nil
}

// DeletePause removes the sink's pause.
func (s *Store) DeletePause(ctx context.Context, sink string) error {
	err := s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		_, err := tx.Exec(ctx, `DELETE FROM walhook.pauses WHERE slot = $1 AND sink = $2`, s.slot, sink)
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("delete the pause of sink %q: %w", sink, err)
	}
	return nil
}
