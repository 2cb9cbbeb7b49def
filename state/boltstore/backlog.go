package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// backlog is one sink's backlog: a bucket under "backlogs" whose keys are
// positions, big-endian, so that bbolt's key order is position order, and
// whose values are entry records. Its count and bytes are kept in
// "backlog_stats" in the same transactions, so that opening a large
// backlog does not read it.
type backlog struct {
	s    *Store
	sink string
	name []byte

	mu    sync.Mutex
	stats state.BacklogStats
}

// statsVersion is the version of the backlog_stats records.
const statsVersion = 1

// bufs holds encoding buffers for appends; bbolt keeps a reference to every
// value until its transaction ends, so a buffer is reused only after that.
var bufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBuf: a larger buffer (one huge append) is left to the collector.
const maxPooledBuf = 4 << 20

func (b *backlog) Append(ctx context.Context, entries []state.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := b.check(); err != nil {
		return err
	}
	for i, e := range entries {
		if e.Msg == nil {
			return fmt.Errorf("append to the backlog of sink %q: entry %d has no message", b.sink, i)
		}
	}
	buf := bufs.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxPooledBuf {
			bufs.Put(buf)
		}
	}()
	// Every entry's key and record, one after the other.
	rec := (*buf)[:0]
	ends := make([]int, len(entries))
	for i, e := range entries {
		rec = state.AppendPosition(rec, e.Msg.Pos)
		rec = state.AppendEntry(rec, e)
		ends[i] = len(rec)
	}
	*buf = rec

	err := b.s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		bk, err := b.bucket(tx, true)
		if err != nil {
			return nil, err
		}
		last, _ := bk.Cursor().Last()
		var lastPos change.Position
		if last != nil {
			lastPos, err = state.DecodePosition(last)
			if err != nil {
				return nil, err
			}
		}
		if err := state.CheckEntries(entries, lastPos); err != nil {
			return nil, err
		}
		st, err := loadStats(tx, b.name)
		if err != nil {
			return nil, err
		}
		start := 0
		for i, end := range ends {
			key, val := rec[start:start+state.PositionLen], rec[start+state.PositionLen:end]
			if err := bk.Put(key, val); err != nil {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
			st.Count++
			st.Bytes += int64(len(val))
			start = end
		}
		if st.First.IsZero() {
			st.First = entries[0].Msg.Pos
		}
		st.Last = entries[len(entries)-1].Msg.Pos
		return b.saveStats(tx, st)
	})
	if err != nil {
		return fmt.Errorf("append to the backlog of sink %q: %w", b.sink, err)
	}
	return nil
}

func (b *backlog) Read(ctx context.Context, after change.Position, max int, maxBytes int64) ([]state.Entry, error) {
	var out []state.Entry
	err := b.s.view(ctx, func(tx *bolt.Tx) error {
		bk, err := b.bucket(tx, false)
		if bk == nil || err != nil {
			return err
		}
		out, _, err = readFrom(bk.Cursor(), after, max, maxBytes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read the backlog of sink %q: %w", b.sink, err)
	}
	return out, nil
}

// readFrom decodes the entries above after, within the limits (see
// state.Backlog.Read), and returns their keys too.
func readFrom(c *bolt.Cursor, after change.Position, max int, maxBytes int64) ([]state.Entry, [][]byte, error) {
	var (
		out  []state.Entry
		keys [][]byte
		size int64
		d    state.Decoder
	)
	from := state.AppendPosition(nil, after)
	k, v := c.Seek(from)
	if k != nil && string(k) == string(from) {
		k, v = c.Next()
	}
	for ; k != nil; k, v = c.Next() {
		if max > 0 && len(out) >= max {
			break
		}
		if maxBytes > 0 && len(out) > 0 && size+int64(len(v)) > maxBytes {
			break
		}
		e, err := d.Entry(v)
		if err != nil {
			return nil, nil, fmt.Errorf("entry at key %x: %w", k, err)
		}
		if pos, err := state.DecodePosition(k); err != nil || pos != e.Msg.Pos {
			return nil, nil, fmt.Errorf("%w: entry at key %x holds the message at %s", state.ErrCorrupt, k, e.Msg.Pos)
		}
		out = append(out, e)
		keys = append(keys, k)
		size += int64(len(v))
	}
	return out, keys, nil
}

func (b *backlog) Trim(ctx context.Context, upto change.Position) error {
	if err := b.check(); err != nil {
		return err
	}
	if st := b.Stats(); st.Count == 0 || upto.Less(st.First) {
		return nil // nothing to delete: spare the fsync
	}
	limit := state.AppendPosition(nil, upto)
	err := b.s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		bk, err := b.bucket(tx, false)
		if bk == nil || err != nil {
			return nil, err
		}
		st, err := loadStats(tx, b.name)
		if err != nil {
			return nil, err
		}
		// Collect, then delete: a bbolt cursor skips keys when it moves
		// on after a Delete.
		var keys [][]byte
		c := bk.Cursor()
		for k, v := c.First(); k != nil && bytes.Compare(k, limit) <= 0; k, v = c.Next() {
			keys = append(keys, k)
			st.Count--
			st.Bytes -= int64(len(v))
		}
		if len(keys) == 0 {
			return nil, nil
		}
		for _, k := range keys {
			if err := bk.Delete(k); err != nil {
				return nil, err
			}
		}
		if st.First, err = first(bk); err != nil {
			return nil, err
		}
		if st.Count == 0 {
			st = state.BacklogStats{}
		}
		return b.saveStats(tx, st)
	})
	if err != nil {
		return fmt.Errorf("trim the backlog of sink %q to %s: %w", b.sink, upto, err)
	}
	return nil
}

func (b *backlog) MoveToDeadLetters(ctx context.Context, max int, maxBytes int64, d state.DeadLetter) (state.DeadLetter, error) {
	if err := b.check(); err != nil {
		return state.DeadLetter{}, err
	}
	if b.Stats().Count == 0 {
		return state.DeadLetter{}, fmt.Errorf("move from the backlog of sink %q to its dead letters: %w", b.sink, state.ErrEmpty)
	}
	now := time.Now()
	dls := b.s.DeadLetters(b.sink).(*deadLetters)
	var moved state.DeadLetter
	err := b.s.update(ctx, func(tx *bolt.Tx) (func(), error) {
		bk, err := b.bucket(tx, false)
		if err != nil {
			return nil, err
		}
		if bk == nil {
			return nil, state.ErrEmpty
		}
		entries, keys, err := readFrom(bk.Cursor(), change.Position{}, max, maxBytes)
		if err != nil {
			return nil, err
		}
		if len(entries) == 0 {
			return nil, state.ErrEmpty
		}
		d.Entries = entries
		if moved, err = state.PrepareDeadLetter(d, now); err != nil {
			return nil, err
		}
		st, err := loadStats(tx, b.name)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			v := bk.Get(k)
			st.Count--
			st.Bytes -= int64(len(v))
			// k points into the page the cursor read, which Delete may
			// change: delete a copy.
			if err := bk.Delete(append([]byte(nil), k...)); err != nil {
				return nil, err
			}
		}
		if st.First, err = first(bk); err != nil {
			return nil, err
		}
		if st.Count == 0 {
			st = state.BacklogStats{}
		}
		afterBacklog, err := b.saveStats(tx, st)
		if err != nil {
			return nil, err
		}
		id, afterDL, err := dls.put(tx, state.AppendDeadLetter(nil, &moved))
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

func (b *backlog) check() error {
	if b.sink == "" {
		return fmt.Errorf("backlog of a sink without a name")
	}
	return nil
}

// bucket returns the sink's bucket, nil if it has none and create is false.
func (b *backlog) bucket(tx *bolt.Tx, create bool) (*bolt.Bucket, error) {
	parent := tx.Bucket(bucketBacklogs)
	if !create {
		return parent.Bucket(b.name), nil
	}
	bk, err := parent.CreateBucketIfNotExists(b.name)
	if err != nil {
		return nil, err
	}
	bk.FillPercent = 1 // keys only ever go at the end: fill pages up
	return bk, nil
}

// saveStats writes st to backlog_stats in tx and returns what sets it in
// memory once tx is durable.
func (b *backlog) saveStats(tx *bolt.Tx, st state.BacklogStats) (func(), error) {
	rec := []byte{statsVersion}
	rec = binary.AppendUvarint(rec, uint64(st.Count))
	rec = binary.AppendUvarint(rec, uint64(st.Bytes))
	if err := tx.Bucket(bucketBacklogStats).Put(b.name, rec); err != nil {
		return nil, err
	}
	return func() {
		b.mu.Lock()
		b.stats = st
		b.mu.Unlock()
	}, nil
}

// loadStats reads a backlog's stats in tx: count and bytes from
// backlog_stats (counted from the entries if the record is missing), first
// and last from the bucket's keys.
func loadStats(tx *bolt.Tx, name []byte) (state.BacklogStats, error) {
	var st state.BacklogStats
	bk := tx.Bucket(bucketBacklogs).Bucket(name)
	if bk == nil {
		return st, nil
	}
	var err error
	if st.First, err = first(bk); err != nil {
		return st, err
	}
	if k, _ := bk.Cursor().Last(); k != nil {
		if st.Last, err = state.DecodePosition(k); err != nil {
			return st, err
		}
	}
	rec := tx.Bucket(bucketBacklogStats).Get(name)
	if rec == nil {
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			st.Count++
			st.Bytes += int64(len(v))
		}
		return st, nil
	}
	if len(rec) < 1 || rec[0] != statsVersion {
		return st, fmt.Errorf("%w: backlog stats record %x: want version %d", state.ErrCorrupt, rec, statsVersion)
	}
	count, n := binary.Uvarint(rec[1:])
	var size uint64
	m := 0
	if n > 0 {
		size, m = binary.Uvarint(rec[1+n:])
	}
	if n <= 0 || m <= 0 || 1+n+m != len(rec) {
		return st, fmt.Errorf("%w: backlog stats record %x", state.ErrCorrupt, rec)
	}
	st.Count, st.Bytes = int64(count), int64(size)
	if (st.Count == 0) != st.First.IsZero() {
		return st, fmt.Errorf("%w: backlog stats say %d entries, the bucket disagrees", state.ErrCorrupt, st.Count)
	}
	return st, nil
}

// first returns the position of a bucket's first key, zero if it is empty.
func first(bk *bolt.Bucket) (change.Position, error) {
	k, _ := bk.Cursor().First()
	if k == nil {
		return change.Position{}, nil
	}
	return state.DecodePosition(k)
}
