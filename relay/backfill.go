package relay

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walhook/walhook/backfill"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/replication"
)

// The relay is the stream side of a backfill (backfill.Stream): chunks are
// registered before their low watermark is written; the dispatcher opens a
// chunk's window at its low watermark, shows it every change after, and at
// its high watermark hands the chunk's rows to the chunk's sink, in the
// sink's inbox, in place: after everything before the watermark and
// before everything after it, so they take the sink's path (filter,
// columns, lanes by key, window, backlog) in order with the stream.
//
// Whether a row's read is left out because the sink has a newer state of
// the row is decided by the sink's runner, when it takes the read: from
// the low watermark on, the runner keeps the chunk's table's changes it
// hands on (after its filter, with the filter it applied), and settles
// each read against the changes of its row (backfill.Settle). So a sink
// whose filter or actions leave a change out keeps the read, and a filter
// replaced by a reload counts exactly as far as the runner applied it.

// chunks are the backfill chunks the relay knows of.
type chunks struct {
	mu      sync.Mutex
	waiting map[string]*expected // by chunk ID, until the high watermark
	open    []*expected          // past the low watermark; the dispatcher's own
	// commits are the transactions the stream delivered lately, to tell a
	// chunk whose snapshot missed one; the dispatcher's own.
	commits backfill.Commits
	// forget is the xmin of a chunk's snapshot below which commits may
	// forget, once every chunk in wait (registered before that chunk's
	// high watermark, so maybe read in an older snapshot) is done with.
	forget *forgetting
}

type forgetting struct {
	xmin uint32
	wait map[*expected]bool
}

// done records that chunk e needs commits no more, and forgets what the
// last snapshot allows once no older one can be checked. Called with mu
// held.
func (c *chunks) done(e *expected) {
	if c.forget != nil {
		delete(c.forget.wait, e)
		if len(c.forget.wait) == 0 {
			c.commits.Forget(c.forget.xmin)
			c.forget = nil
		}
	}
	snap := e.w.Snapshot()
	if c.forget != nil || !snap.Valid {
		return
	}
	f := &forgetting{xmin: snap.Xmin, wait: map[*expected]bool{}}
	for _, x := range c.waiting {
		f.wait[x] = true
	}
	for _, x := range c.open {
		if !x.forgotten.Load() { // Forget took it out of the wait already
			f.wait[x] = true
		}
	}
	delete(f.wait, e)
	if len(f.wait) == 0 {
		c.commits.Forget(f.xmin)
		return
	}
	c.forget = f
}

type expected struct {
	id, sink  string
	w         *backfill.Window
	passed    chan backfill.Passed
	forgotten atomic.Bool // by Forget; the dispatcher drops it from open
	// From the low watermark on: the sink's runner, and the chunk as that
	// runner keeps it.
	rn    *runner
	taken *sinkChunk
}

// sinkChunks are a sink's chunks from their low watermark until its runner
// took their last read: the dispatcher adds and closes them, the runner
// records what it hands on and settles the reads.
type sinkChunks struct {
	n    atomic.Int32 // len(list), read without the lock on every change
	mu   sync.Mutex
	list []*sinkChunk
}

// sinkChunk is one chunk as a sink's runner sees it.
type sinkChunk struct {
	table string          // "schema.table"
	low   change.Position // the low watermark
	// last is the position of the chunk's last read, set at the high
	// watermark (closed), before the reads reach the runner.
	last    change.Position
	closed  bool
	changes map[string][]*change.Message // by key: the changes the runner handed on after low
}

func (s *sinkChunks) add(c *sinkChunk) {
	s.mu.Lock()
	s.list = append(s.list, c)
	s.n.Store(int32(len(s.list)))
	s.mu.Unlock()
}

func (s *sinkChunks) remove(c *sinkChunk) {
	s.mu.Lock()
	s.list = slices.DeleteFunc(s.list, func(x *sinkChunk) bool { return x == c })
	s.n.Store(int32(len(s.list)))
	s.mu.Unlock()
}

func (s *sinkChunks) close(c *sinkChunk, last change.Position) {
	s.mu.Lock()
	c.last, c.closed = last, true
	s.mu.Unlock()
}

// took records a change the runner hands on, for its chunks of the
// change's table that are between their watermarks.
func (r *runner) took(m *change.Message) {
	if r.chunks.n.Load() == 0 || m.Action == change.Read || m.Action == change.Emitted {
		return
	}
	s := &r.chunks
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.list {
		if c.low.Less(m.Pos) && (!c.closed || m.Pos.Less(c.last)) && c.table == tableOf(m) {
			c.changes[m.Key] = append(c.changes[m.Key], m)
		}
	}
}

// settleRead decides what the sink gets for a backfill's read: the read,
// a read merged with the newer values the sink took (unchanged TOAST), or
// nil when the sink has the row's newer state already.
func (r *runner) settleRead(m *change.Message) *change.Message {
	if r.chunks.n.Load() == 0 {
		return m
	}
	s := &r.chunks
	s.mu.Lock()
	i := slices.IndexFunc(s.list, func(c *sinkChunk) bool { return c.closed && c.last.CommitLSN == m.Pos.CommitLSN })
	if i < 0 {
		s.mu.Unlock()
		return m
	}
	c := s.list[i]
	changes := c.changes[m.Key]
	if c.last == m.Pos { // the chunk's last read: the runner is done with it
		s.list = slices.Delete(s.list, i, i+1)
		s.n.Store(int32(len(s.list)))
	}
	s.mu.Unlock()
	return backfill.Settle(m, changes)
}

// tableOf is m's "schema.table".
func tableOf(m *change.Message) string {
	if m.Rel != nil {
		return m.Rel.Table
	}
	return m.QualifiedTable()
}

// Expect registers a chunk before its low watermark is written.
func (r *Relay) Expect(id, sink string, w *backfill.Window) (<-chan backfill.Passed, error) {
	if r.runnerNamed(sink) == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownSink, sink)
	}
	e := &expected{id: id, sink: sink, w: w, passed: make(chan backfill.Passed, 1)}
	r.chunks.mu.Lock()
	defer r.chunks.mu.Unlock()
	if r.chunks.waiting == nil {
		r.chunks.waiting = map[string]*expected{}
	}
	r.chunks.waiting[id] = e
	return e.passed, nil
}

// Forget drops a chunk that will have no high watermark.
func (r *Relay) Forget(id string) {
	r.chunks.mu.Lock()
	if e := r.chunks.waiting[id]; e != nil {
		e.forgotten.Store(true)
		delete(r.chunks.waiting, id)
		if r.chunks.forget != nil {
			delete(r.chunks.forget.wait, e)
		}
	}
	r.chunks.mu.Unlock()
}

// Streaming waits until the relay streams.
func (r *Relay) Streaming(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for r.cursorSet() == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Delivered reports whether the sink delivered, or left out by its
// filter, every message it was handed up to pos.
func (r *Relay) Delivered(sink string, pos change.Position) (bool, error) {
	rn := r.runnerNamed(sink)
	if rn == nil {
		return false, fmt.Errorf("%w %q: removed while it was backfilled", ErrUnknownSink, sink)
	}
	if rn.tracker == nil || rn.takenThrough().Less(pos) {
		return false, nil
	}
	return rn.tracker.Settled(pos), nil
}

// watermark handles a backfill watermark in the dispatcher.
func (r *Relay) watermark(ctx context.Context, hw *change.Message) {
	id, high, ok := backfill.ParseWatermark(hw.Content)
	if !ok {
		return
	}
	r.chunks.mu.Lock()
	e := r.chunks.waiting[id]
	if high {
		delete(r.chunks.waiting, id)
	}
	r.chunks.mu.Unlock()
	if e == nil {
		return // a chunk of an earlier run, seen again after a restart
	}
	if !high {
		if !e.w.IsOpen() {
			e.w.Open(hw.Pos)
			r.chunks.open = append(r.chunks.open, e)
			if rn := r.dispatchRunner(e.sink); rn != nil {
				schema, table := e.w.Table()
				e.rn, e.taken = rn, &sinkChunk{table: schema + "." + table, low: hw.Pos, changes: map[string][]*change.Message{}}
				rn.chunks.add(e.taken)
			}
		}
		return
	}
	r.chunks.open = slices.DeleteFunc(r.chunks.open, func(x *expected) bool { return x == e })
	reads, retry, hidden := e.w.Close(hw, &r.chunks.commits)
	r.chunks.mu.Lock()
	r.chunks.done(e)
	r.chunks.mu.Unlock()
	rn := r.dispatchRunner(e.sink)
	if retry || rn == nil || rn != e.rn {
		if e.rn != nil {
			e.rn.chunks.remove(e.taken)
		}
		switch {
		case hidden != 0:
			r.log.Debug("backfill chunk read again: its snapshot missed a transaction the stream delivered before its low watermark",
				"sink", e.sink, "chunk", e.id, "xid", hidden)
			e.passed <- backfill.Passed{Retry: true}
		case retry, rn != nil: // void, or the sink was added again between the watermarks
			e.passed <- backfill.Passed{Retry: true}
		default:
			e.passed <- backfill.Passed{Err: fmt.Errorf("%w %q: removed while it was backfilled", ErrUnknownSink, e.sink)}
		}
		return
	}
	p := backfill.Passed{Last: hw.Pos, Sent: len(reads)}
	if len(reads) > 0 {
		rn.chunks.close(e.taken, reads[len(reads)-1].Pos)
	} else {
		rn.chunks.remove(e.taken)
	}
	for part := range slices.Chunk(reads, inboxBatch) {
		batch := make([]replication.Event, len(part))
		for i, m := range part {
			batch[i] = replication.Event{Kind: replication.EventChange, Msg: r.opts.SourceColumns.Apply(m)}
		}
		p.Last = part[len(part)-1].Pos
		r.mu.Lock()
		r.lastDispatched = p.Last
		r.mu.Unlock()
		select {
		case rn.inbox <- batch:
		case <-rn.exited:
			e.passed <- backfill.Passed{Err: fmt.Errorf("%w %q: removed while it was backfilled", ErrUnknownSink, e.sink)}
			return
		case <-ctx.Done():
			return // stopping: the chunk is read again after the restart
		}
	}
	e.passed <- p
}

// dispatchRunner is the dispatcher's runner of the named sink, or nil.
func (r *Relay) dispatchRunner(sink string) *runner {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.IndexFunc(r.dispatchList, func(rn *runner) bool { return rn.Name == sink })
	if i < 0 {
		return nil
	}
	return r.dispatchList[i]
}

// observe shows a streamed change to the open chunks, and records its
// transaction for the chunks to come.
func (r *Relay) observe(m *change.Message) {
	if m.Action != change.Emitted && m.Action != change.Read {
		r.chunks.commits.Add(m.XID, m.Pos.CommitLSN, tableOf(m))
	}
	pruned := false
	for _, e := range r.chunks.open {
		if e.forgotten.Load() {
			pruned = true
			continue
		}
		e.w.Observe(m)
	}
	if pruned {
		r.chunks.open = slices.DeleteFunc(r.chunks.open, func(e *expected) bool {
			if e.forgotten.Load() && e.rn != nil {
				e.rn.chunks.remove(e.taken)
			}
			return e.forgotten.Load()
		})
	}
}
