package pgstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
)

// backlog is one sink's rows in walhook.backlog. Its stats are kept in
// memory, loaded at open (one aggregate over the sink's positions and
// sizes) and changed after each commit.
type backlog struct {
	s    *Store
	sink string

	mu    sync.Mutex
	stats state.BacklogStats
}

// readPage is how many rows a Read without a count limit fetches at a
// time, so that a byte limit does not fetch a whole backlog.
const readPage = 256

func (b *backlog) Append(ctx context.Context, entries []state.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if b.sink == "" {
		return fmt.Errorf("backlog of a sink without a name")
	}
	pos := make([][]byte, len(entries))
	recs := make([][]byte, len(entries))
	sizes := make([]int32, len(entries))
	var bytes int64
	for i, e := range entries {
		if e.Msg == nil {
			return fmt.Errorf("append to the backlog of sink %q: entry %d has no message", b.sink, i)
		}
		pos[i] = state.AppendPosition(nil, e.Msg.Pos)
		recs[i] = state.AppendEntry(nil, e)
		sizes[i] = int32(len(recs[i]))
		bytes += int64(len(recs[i]))
	}
	err := b.s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		var last []byte
		if err := tx.QueryRow(ctx, `SELECT (SELECT pos FROM walhook.backlog WHERE slot = $1 AND sink = $2 ORDER BY pos DESC LIMIT 1)`, b.s.slot, b.sink).Scan(&last); err != nil {
			return nil, err
		}
		var lastPos change.Position
		if last != nil {
			var err error
			if lastPos, err = state.DecodePosition(last); err != nil {
				return nil, refuse(err)
			}
		}
		if err := state.CheckEntries(entries, lastPos); err != nil {
			return nil, refuse(err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO walhook.backlog (slot, sink, pos, size, entry)
			SELECT $1, $2, unnest($3::bytea[]), unnest($4::integer[]), unnest($5::bytea[])`, b.s.slot, b.sink, pos, sizes, recs)
		if err != nil {
			return nil, err
		}
		return func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.stats.Count == 0 {
				b.stats.First = entries[0].Msg.Pos
			}
			b.stats.Count += int64(len(entries))
			b.stats.Bytes += bytes
			b.stats.Last = entries[len(entries)-1].Msg.Pos
		}, nil
	})
	if err != nil {
		return fmt.Errorf("append to the backlog of sink %q: %w", b.sink, err)
	}
	return nil
}

func (b *backlog) Read(ctx context.Context, after change.Position, max int, maxBytes int64) ([]state.Entry, error) {
	var out []state.Entry
	err := b.s.read(ctx, func(ctx context.Context) error {
		var err error
		out, _, err = readFrom(ctx, b.s.pool, b.s.slot, b.sink, after, max, maxBytes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read the backlog of sink %q: %w", b.sink, err)
	}
	return out, nil
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readFrom returns the entries above after within the limits (see
// state.Backlog.Read) and the sum of their record sizes, a page of rows at
// a time.
func readFrom(ctx context.Context, q querier, slot, sink string, after change.Position, max int, maxBytes int64) ([]state.Entry, int64, error) {
	var (
		out  []state.Entry
		size int64
		d    state.Decoder
	)
	from := state.AppendPosition(nil, after)
	for {
		page := readPage
		if max > 0 {
			page = min(max-len(out), readPage)
		}
		rows, err := q.Query(ctx, `SELECT pos, entry FROM walhook.backlog WHERE slot = $1 AND sink = $2 AND pos > $3 ORDER BY pos LIMIT $4`,
			slot, sink, from, page)
		if err != nil {
			return nil, 0, err
		}
		n := 0
		full := false
		for rows.Next() {
			n++
			if full {
				continue // the rest of the page: read and dropped
			}
			var k, v []byte
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return nil, 0, err
			}
			if maxBytes > 0 && len(out) > 0 && size+int64(len(v)) > maxBytes {
				full = true
				continue
			}
			e, err := d.Entry(v)
			if err != nil {
				rows.Close()
				return nil, 0, fmt.Errorf("entry at %x: %w", k, err)
			}
			if pos, err := state.DecodePosition(k); err != nil || pos != e.Msg.Pos {
				rows.Close()
				return nil, 0, fmt.Errorf("%w: entry at %x holds the message at %s", state.ErrCorrupt, k, e.Msg.Pos)
			}
			out = append(out, e)
			size += int64(len(v))
			from = k
		}
		if err := rows.Err(); err != nil {
			return nil, 0, err
		}
		if full || n < page || (max > 0 && len(out) >= max) {
			return out, size, nil
		}
	}
}

func (b *backlog) Trim(ctx context.Context, upto change.Position) error {
	if b.sink == "" {
		return fmt.Errorf("backlog of a sink without a name")
	}
	if st := b.Stats(); st.Count == 0 || upto.Less(st.First) {
		return nil
	}
	limit := state.AppendPosition(nil, upto)
	err := b.s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		var n, bytes int64
		var first []byte
		err := tx.QueryRow(ctx, `WITH d AS (DELETE FROM walhook.backlog WHERE slot = $1 AND sink = $2 AND pos <= $3 RETURNING size)
			SELECT count(*), coalesce(sum(size), 0) FROM d`, b.s.slot, b.sink, limit).Scan(&n, &bytes)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		if err := tx.QueryRow(ctx, `SELECT (SELECT pos FROM walhook.backlog WHERE slot = $1 AND sink = $2 ORDER BY pos LIMIT 1)`, b.s.slot, b.sink).Scan(&first); err != nil {
			return nil, err
		}
		return b.shrink(n, bytes, first)
	})
	if err != nil {
		return fmt.Errorf("trim the backlog of sink %q to %s: %w", b.sink, upto, err)
	}
	return nil
}

// shrink returns what takes n entries of bytes out of the stats once
// committed; first is the backlog's new first position (nil: empty).
func (b *backlog) shrink(n, bytes int64, first []byte) (func(), error) {
	var firstPos change.Position
	if first != nil {
		var err error
		if firstPos, err = state.DecodePosition(first); err != nil {
			return nil, err
		}
	}
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.stats.Count -= n
		b.stats.Bytes -= bytes
		b.stats.First = firstPos
		if b.stats.Count <= 0 || first == nil {
			b.stats = state.BacklogStats{}
		}
	}, nil
}

func (b *backlog) MoveToDeadLetters(ctx context.Context, max int, maxBytes int64, d state.DeadLetter) (state.DeadLetter, error) {
	if b.sink == "" {
		return state.DeadLetter{}, fmt.Errorf("backlog of a sink without a name")
	}
	if b.Stats().Count == 0 {
		return state.DeadLetter{}, fmt.Errorf("move from the backlog of sink %q to its dead letters: %w", b.sink, state.ErrEmpty)
	}
	now := time.Now()
	dls := b.s.DeadLetters(b.sink).(*deadLetters)
	var moved state.DeadLetter
	err := b.s.update(ctx, func(ctx context.Context, tx pgx.Tx) (func(), error) {
		entries, bytes, err := readFrom(ctx, tx, b.s.slot, b.sink, change.Position{}, max, maxBytes)
		if err != nil {
			return nil, err
		}
		if len(entries) == 0 {
			return nil, refuse(state.ErrEmpty)
		}
		d.Entries = entries
		if moved, err = state.PrepareDeadLetter(d, now); err != nil {
			return nil, refuse(err)
		}
		var first []byte
		last := state.AppendPosition(nil, entries[len(entries)-1].Msg.Pos)
		err = tx.QueryRow(ctx, `WITH d AS (DELETE FROM walhook.backlog WHERE slot = $1 AND sink = $2 AND pos <= $3 RETURNING pos)
			SELECT (SELECT b.pos FROM walhook.backlog b WHERE b.slot = $1 AND b.sink = $2 AND b.pos > $3 ORDER BY b.pos LIMIT 1)`, b.s.slot, b.sink, last).Scan(&first)
		if err != nil {
			return nil, err
		}
		afterBacklog, err := b.shrink(int64(len(entries)), bytes, first)
		if err != nil {
			return nil, err
		}
		id, afterDL, err := dls.put(ctx, tx, &moved)
		if err != nil {
			return nil, err
		}
		moved.ID = id
		return func() { afterBacklog(); afterDL() }, nil
	})
	if err != nil {
		return state.DeadLetter{}, fmt.Errorf("move from the backlog of sink %q to its dead letters: %w", b.sink, err)
	}
	return moved, nil
}

func (b *backlog) Stats() state.BacklogStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}
