package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/state"
)

// deadLetters is one sink's rows in walhook.dead_letters. IDs come from
// walhook.dead_letter_ids, so a number is never given out twice, also
// after the newest dead letter is deleted.
type deadLetters struct {
	s    *Store
	sink string

	mu    sync.Mutex
	count int
}

func (d *deadLetters) Add(ctx context.Context, dl state.DeadLetter) (string, error) {
	if d.sink == "" {
		return "", fmt.Errorf("dead letter of a sink without a name")
	}
	dl, err := state.PrepareDeadLetter(dl, time.Now())
	if err != nil {
		return "", fmt.Errorf("add a dead letter to sink %q: %w", d.sink, err)
	}
	var id string
	err = d.s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		var after func()
		var err error
		id, after, err = d.put(ctx, tx, &dl)
		return after, err
	})
	if err != nil {
		return "", fmt.Errorf("add a dead letter to sink %q: %w", d.sink, err)
	}
	return id, nil
}

// headLen is the length of the header of dl's record: the record of dl
// without entries, whose count (0, one byte) becomes the real count.
func headLen(dl *state.DeadLetter) int {
	head := *dl
	head.Entries = nil
	n := len(state.AppendDeadLetter(nil, &head)) - 1
	return n + uvarintLen(uint64(len(dl.Entries)))
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// put stores dl in tx under the sink's next number and returns its ID and
// what counts it once tx is committed.
func (d *deadLetters) put(ctx context.Context, tx pgx.Tx, dl *state.DeadLetter) (string, func(), error) {
	var seq int64
	err := tx.QueryRow(ctx, `INSERT INTO walhook.dead_letter_ids (slot, sink, last) VALUES ($1, $2, 1)
		ON CONFLICT (slot, sink) DO UPDATE SET last = walhook.dead_letter_ids.last + 1 RETURNING last`, d.s.slot, d.sink).Scan(&seq)
	if err != nil {
		return "", nil, err
	}
	rec := state.AppendDeadLetter(nil, dl)
	if _, err := tx.Exec(ctx, `INSERT INTO walhook.dead_letters (slot, sink, id, head_len, record) VALUES ($1, $2, $3, $4, $5)`,
		d.s.slot, d.sink, seq, headLen(dl), rec); err != nil {
		return "", nil, err
	}
	return state.FormatID(uint64(seq)), func() {
		d.mu.Lock()
		d.count++
		d.mu.Unlock()
	}, nil
}

func (d *deadLetters) List(ctx context.Context) ([]state.DeadLetter, error) {
	var out []state.DeadLetter
	err := d.s.read(ctx, func(ctx context.Context) error {
		out = nil
		rows, err := d.s.pool.Query(ctx, `SELECT id, substring(record FROM 1 FOR head_len) FROM walhook.dead_letters
			WHERE slot = $1 AND sink = $2 ORDER BY id`, d.s.slot, d.sink)
		if err != nil {
			return err
		}
		defer rows.Close()
		var dec state.Decoder
		for rows.Next() {
			var seq int64
			var head []byte
			if err := rows.Scan(&seq, &head); err != nil {
				return err
			}
			id := state.FormatID(uint64(seq))
			dl, err := dec.DeadLetter(id, head, false)
			if err != nil {
				return fmt.Errorf("dead letter %s: %w", id, err)
			}
			out = append(out, dl)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list the dead letters of sink %q: %w", d.sink, err)
	}
	return out, nil
}

func (d *deadLetters) Get(ctx context.Context, id string) (state.DeadLetter, error) {
	var dl state.DeadLetter
	err := d.s.read(ctx, func(ctx context.Context) error {
		seq, ok := state.ParseID(id)
		if !ok || seq > 1<<63-1 {
			return state.ErrNotFound
		}
		var rec []byte
		err := d.s.pool.QueryRow(ctx, `SELECT record FROM walhook.dead_letters WHERE slot = $1 AND sink = $2 AND id = $3`,
			d.s.slot, d.sink, int64(seq)).Scan(&rec)
		if errors.Is(err, pgx.ErrNoRows) {
			return state.ErrNotFound
		}
		if err != nil {
			return err
		}
		var dec state.Decoder
		dl, err = dec.DeadLetter(id, rec, true)
		return err
	})
	if err != nil {
		return state.DeadLetter{}, fmt.Errorf("dead letter %q of sink %q: %w", id, d.sink, err)
	}
	return dl, nil
}

func (d *deadLetters) Delete(ctx context.Context, id string) error {
	err := d.s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		seq, ok := state.ParseID(id)
		if !ok || seq > 1<<63-1 {
			return nil, refuse(state.ErrNotFound)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM walhook.dead_letters WHERE slot = $1 AND sink = $2 AND id = $3`, d.s.slot, d.sink, int64(seq))
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == 0 {
			return nil, refuse(state.ErrNotFound)
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
	if d.s.isClosed() {
		return 0, fmt.Errorf("count the dead letters of sink %q: %w", d.sink, state.ErrClosed)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count, nil
}
