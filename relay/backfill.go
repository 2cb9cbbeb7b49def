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
// its high watermark hands the rows that survive to the chunk's sink, in
// the sink's inbox, in place: after everything before the watermark and
// before everything after it, so they take the sink's path (filter,
// columns, lanes by key, window, backlog) in order with the stream.

// chunks are the backfill chunks the relay knows of.
type chunks struct {
	mu      sync.Mutex
	waiting map[string]*expected // by chunk ID, until the high watermark
	open    []*expected          // past the low watermark; the dispatcher's own
}

type expected struct {
	id, sink  string
	w         *backfill.Window
	passed    chan backfill.Passed
	forgotten atomic.Bool // by Forget; the dispatcher drops it from open
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
			e.w.Open()
			r.chunks.open = append(r.chunks.open, e)
		}
		return
	}
	r.chunks.open = slices.DeleteFunc(r.chunks.open, func(x *expected) bool { return x == e })
	reads, retry := e.w.Close(hw)
	if retry {
		e.passed <- backfill.Passed{Retry: true}
		return
	}
	r.mu.Lock()
	i := slices.IndexFunc(r.dispatchList, func(rn *runner) bool { return rn.Name == e.sink })
	var rn *runner
	if i >= 0 {
		rn = r.dispatchList[i]
	}
	r.mu.Unlock()
	if rn == nil {
		e.passed <- backfill.Passed{Err: fmt.Errorf("%w %q: removed while it was backfilled", ErrUnknownSink, e.sink)}
		return
	}
	p := backfill.Passed{Last: hw.Pos, Sent: len(reads)}
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

// observe shows a streamed change to the open chunks.
func (r *Relay) observe(m *change.Message) {
	pruned := false
	for _, e := range r.chunks.open {
		if e.forgotten.Load() {
			pruned = true
			continue
		}
		e.w.Observe(m)
	}
	if pruned {
		r.chunks.open = slices.DeleteFunc(r.chunks.open, func(e *expected) bool { return e.forgotten.Load() })
	}
}
