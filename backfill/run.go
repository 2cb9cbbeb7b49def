package backfill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/pgvalue"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/state"
)

// minRows is the smallest chunk, and the first one's size.
const minRows = 100

// maxPending is how many chunks may wait for their delivery while the next
// one is read.
const maxPending = 4

// chunksAhead is how many chunks may travel through the stream at once
// (their high watermark written, not yet passed): the next chunk is read
// while the one before travels.
const chunksAhead = 2

// inFlight bounds a sink's reads that are handed on and not yet delivered
// by the sink's window (window.messages), so that reads never fill the
// window and the sink's live changes always find room in it: a live change
// that finds the window full waits for reads to be delivered, and holds
// the stream back behind it. A chunk holds at most a fifth of the window,
// and the chunks waiting for delivery at most two chunks' rows, so with
// the chunks travelling (chunksAhead) at most four fifths of the window
// are reads: enough to keep the sink busy while a chunk travels through a
// slow stream, and a fifth (2,000 of the default 10,000) stays for the
// changes in flight. Without a message bound (window.messages 0), maxPending
// chunks of MaxRows.
func inFlight(sink config.Sink, ok bool, o Options) (pendingRows, chunkRows int) {
	w := sink.Window.Messages
	if !ok || w <= 0 {
		return maxPending * o.MaxRows, o.MaxRows
	}
	chunkRows = max(min(o.MaxRows, w/5), minRows/10)
	return 2 * chunkRows, chunkRows
}

// sent is a chunk handed to the sink, waiting to be delivered before its
// progress is saved.
type sent struct {
	table int
	last  change.Position
	n     int    // read messages handed on
	key   []byte // the keyset position after the chunk
	rows  int64  // rows the chunk read
	done  bool   // the table ends with it
}

// execute runs a backfill until every table is done, ctx ends or an error
// stops it.
func (m *Manager) execute(ctx context.Context, r *run) error {
	m.mu.Lock()
	b := r.b
	b.Tables = slices.Clone(b.Tables) // the executor's own; save hands r a copy
	m.mu.Unlock()
	if err := m.stream.Streaming(ctx); err != nil {
		return err
	}
	if len(b.Tables) == 0 { // StartOnCreate's: every table the sink receives
		tables, err := m.plan(ctx, b.Sink, nil, b.Where)
		if err != nil {
			return err
		}
		b.Tables = tables
		if err := m.save(ctx, r, b); err != nil {
			return err
		}
	}
	read, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer read.Close(context.Background())
	var role replication.Role
	if role, err = replication.DetectRole(ctx, read, m.opts.Source); err != nil {
		return err
	}
	marks, err := replication.ConnectWriter(ctx, role, session)
	if err != nil {
		return fmt.Errorf("backfill: connect to write watermarks: %w", err)
	}
	defer marks.Close(context.Background())
	types := pgvalue.NewTypes(pgvalue.QueryCatalog(read))
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	e := &executor{m: m, r: r, b: b, read: read, marks: marks, standby: role.Standby, prefix: b.ID + "/" + hex.EncodeToString(nonce)}
	for i := range b.Tables {
		if e.b.Tables[i].Done {
			continue
		}
		t, err := config.ParseTable(e.b.Tables[i].Table)
		if err != nil {
			return fmt.Errorf("table %q: %w", e.b.Tables[i].Table, err)
		}
		tb, err := Describe(ctx, read, types, t, m.opts.Source.Publication)
		if err != nil {
			return err
		}
		if err := e.table(ctx, i, tb); err != nil {
			return err
		}
	}
	return e.settle(ctx, 0, 0)
}

// executor is one backfill's run through its tables.
type executor struct {
	m           *Manager
	r           *run
	b           state.Backfill
	read, marks *pgx.Conn
	standby     bool   // read is a hot standby; marks its primary
	prefix      string // of chunk IDs: the backfill and this run
	seq         int
	pending     []sent
}

// table reads table i chunk by chunk.
func (e *executor) table(ctx context.Context, i int, tb *Table) error {
	key := e.b.Tables[i].Key
	for n := len(e.pending); n > 0; n-- { // resume after what waits
		if p := e.pending[n-1]; p.table == i {
			key = p.key
			break
		}
	}
	opts := e.m.opts
	sc, ok := config.Sink{}, false
	if opts.Sink != nil {
		sc, ok = opts.Sink(e.b.Sink)
	}
	pendingRows, chunkRows := inFlight(sc, ok, opts)
	opts.MaxRows = chunkRows // the chunks' bound, for nextLimit
	limit := min(minRows, opts.MaxRows)
	retries := 0 // in a row, of the oldest chunk in flight
	var flight []*flying
	ended := false // the last chunk is in flight, or the table ends at key
	forget := func() {
		for _, f := range flight {
			e.m.stream.Forget(f.id)
		}
		flight = nil
	}
	defer forget()
	for {
		// Read the next chunk while the one before travels through the
		// stream, so the sink need not wait for a chunk's round trip.
		if !ended && len(flight) < chunksAhead {
			f, err := e.issue(ctx, tb, key, limit, opts.MaxBytes)
			if err != nil {
				return err
			}
			if f == nil {
				ended = true
			} else {
				flight = append(flight, f)
				key, ended = f.c.key, f.c.last
				limit = nextLimit(limit, f.took, len(f.c.msgs), f.c.bytes, opts)
			}
			if !ended && len(flight) < chunksAhead {
				continue
			}
		}
		if len(flight) == 0 { // every chunk passed, and the table ends at key
			e.pending = append(e.pending, sent{table: i, key: key, done: true})
			return e.settle(ctx, maxPending, pendingRows)
		}
		f := flight[0]
		var p Passed
		select {
		case p = <-f.passed:
		case <-ctx.Done():
			return ctx.Err()
		}
		flight = flight[1:]
		if p.Err != nil {
			return p.Err
		}
		if p.Retry {
			// Read the void chunk again, between new watermarks, and
			// everything after it: a chunk read after it may have passed
			// already (its reads are right on their own, and are
			// delivered again with the same keys), but progress is saved
			// in order.
			forget()
			key, limit, ended = f.after, f.limit, false
			retries++
			if err := retryPause(ctx, retries); err != nil {
				return err
			}
			continue
		}
		retries = 0
		c := f.c
		e.pending = append(e.pending, sent{table: i, last: p.Last, n: p.Sent, key: c.key, rows: int64(len(c.msgs)), done: c.last})
		if err := e.settle(ctx, maxPending, pendingRows); err != nil {
			return err
		}
		if c.last {
			return nil
		}
	}
}

// flying is a chunk whose high watermark is written: the stream tells
// what became of it on passed.
type flying struct {
	id     string
	passed <-chan Passed
	after  []byte // the keyset position it was read after
	limit  int
	c      chunk
	took   time.Duration // its query's time
}

// issue reads the chunk of up to limit rows after key between its
// watermarks. nil, with no error, is the end of the table: no row was
// read (and the chunk is forgotten).
func (e *executor) issue(ctx context.Context, tb *Table, key []byte, limit, maxBytes int) (*flying, error) {
	e.seq++
	id := fmt.Sprintf("%s/%d", e.prefix, e.seq)
	w := NewWindow(tb.Name.Schema, tb.Name.Name)
	passed, err := e.m.stream.Expect(id, e.b.Sink, w)
	if err != nil {
		return nil, err
	}
	if err := e.mark(ctx, id, false); err != nil {
		e.m.stream.Forget(id)
		return nil, err
	}
	start := time.Now()
	c, err := tb.read(ctx, e.read, e.b.ID, e.b.Where, key, limit, maxBytes)
	took := time.Since(start)
	if err != nil {
		e.m.stream.Forget(id)
		return nil, err
	}
	if len(c.msgs) == 0 {
		e.m.stream.Forget(id)
		return nil, nil
	}
	w.SetRows(c.msgs, c.snap)
	if err := e.mark(ctx, id, true); err != nil {
		e.m.stream.Forget(id)
		return nil, err
	}
	return &flying{id: id, passed: passed, after: key, limit: limit, c: c, took: took}, nil
}

// retryPause waits before the n-th read in a row of one chunk: not before
// the first retry, then 10 ms doubling up to 1 s. A chunk is void again
// and again while a transaction it must see stays invisible (a commit
// waiting for a synchronous standby): no need to read it in a busy loop.
func retryPause(ctx context.Context, n int) error {
	if n < 2 {
		return nil
	}
	d := min(10*time.Millisecond<<min(n-2, 7), time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mark writes a watermark into the WAL.
func (e *executor) mark(ctx context.Context, id string, high bool) error {
	if _, err := e.marks.Exec(ctx, "SELECT pg_logical_emit_message(true, $1, $2)", replication.WatermarkPrefix, watermark(id, high)); err != nil {
		return fmt.Errorf("write a backfill watermark: %w", err)
	}
	if e.standby && !high {
		return e.awaitReplay(ctx)
	}
	return nil
}

// awaitReplay waits until the standby the chunks are read from has
// replayed the primary's WAL up to its end after the low watermark: a
// chunk read before would miss changes the stream passes before the
// window opens, and the window would overwrite them with older rows.
func (e *executor) awaitReplay(ctx context.Context) error {
	var end pglogrepl.LSN
	if err := e.marks.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		return fmt.Errorf("read the primary's WAL position after a watermark: %w", err)
	}
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		var done bool
		if err := e.read.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", end.String()).Scan(&done); err != nil {
			return fmt.Errorf("read the standby's replay position: %w", err)
		}
		if done {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// settle saves the progress of the chunks the sink has delivered, oldest
// first, until at most keep wait, holding at most rows reads between them.
// It looks every 5 ms: with few reads in flight a chunk's delivery must be
// seen soon, or the sink idles between chunks.
func (e *executor) settle(ctx context.Context, keep, rows int) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(e.pending) > 0 {
		p := e.pending[0]
		ok := p.n == 0
		if !ok {
			var err error
			if ok, err = e.m.stream.Delivered(e.b.Sink, p.last); err != nil {
				return err
			}
		}
		if ok {
			t := &e.b.Tables[p.table]
			t.Key, t.Rows, t.Done = p.key, t.Rows+p.rows, p.done
			if err := e.m.save(ctx, e.r, e.b); err != nil {
				return err
			}
			e.pending = e.pending[1:]
			continue
		}
		if len(e.pending) <= keep && pendingReads(e.pending) <= rows {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// pendingReads is how many reads the chunks in pending handed on.
func pendingReads(pending []sent) int {
	n := 0
	for _, p := range pending {
		n += p.n
	}
	return n
}

// nextLimit sizes the next chunk so that its query takes about the target
// time and its records stay under the byte bound: halfway from the last
// size to the one the last query's time per row suggests, at most twice
// the last.
func nextLimit(limit int, took time.Duration, rows, bytes int, o Options) int {
	if rows == 0 {
		return limit
	}
	n := limit
	if took > 0 {
		ideal := float64(rows) * float64(o.TargetQuery) / float64(took)
		n = int((float64(limit) + ideal) / 2)
	}
	n = min(n, 2*limit)
	if bytes > 0 {
		n = min(n, int(int64(o.MaxBytes)*int64(rows)/int64(bytes)))
	}
	return max(minRows/10, min(n, o.MaxRows))
}
