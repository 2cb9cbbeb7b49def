package state

import (
	"context"
	"sync"
)

// GroupCommit makes a store's writes durable in groups. A store commits
// one transaction at a time and each commit waits for the disk (bbolt's
// fsync, PostgreSQL's WAL flush): writers on several goroutines (every
// sink appends to its own backlog, the relay saves cursors) would each wait
// for the others' commits in turn. So writes are queued, and one writer,
// the leader, commits everything queued in one transaction; whatever is
// queued meanwhile goes into the next. A lone writer commits at once.
//
// The leader is the writer that found nobody committing. After its commit
// it hands the lead to the oldest queued writer, if any, and returns: no
// writer commits for others for longer than one transaction, and no
// goroutine runs in the background.
//
// Op is the store's own record of one write; commit runs a group of them in
// one transaction and leaves each op's outcome in the op. It gets the
// context of the writer that leads the group.
type GroupCommit[Op any] struct {
	commit func(ctx context.Context, ops []*Op)

	mu      sync.Mutex
	leading bool // a writer is committing
	queue   []*queued[Op]
}

type queued[Op any] struct {
	op   *Op
	lead bool          // set before done is closed: this writer commits next
	done chan struct{} // closed once op is committed, or to hand over the lead
}

// NewGroupCommit returns a group commit that commits with commit.
func NewGroupCommit[Op any](commit func(ctx context.Context, ops []*Op)) *GroupCommit[Op] {
	return &GroupCommit[Op]{commit: commit}
}

// Do queues op and returns once a commit took it, with its outcome in op.
// If this writer leads the group, ctx is what the commit runs with.
func (g *GroupCommit[Op]) Do(ctx context.Context, op *Op) {
	q := &queued[Op]{op: op, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, q)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()

	if !lead {
		<-q.done
		if !q.lead {
			return
		}
	}
	// q is queued, and nobody else takes the queue while leading holds.
	g.mu.Lock()
	group := g.queue
	g.queue = nil
	g.mu.Unlock()

	ops := make([]*Op, len(group))
	for i, x := range group {
		ops[i] = x.op
	}
	g.commit(ctx, ops)

	g.mu.Lock()
	if len(g.queue) > 0 {
		next := g.queue[0]
		next.lead = true
		close(next.done)
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	for _, x := range group {
		if x != q {
			close(x.done)
		}
	}
}

// Queued is how many writes wait for the next commit.
func (g *GroupCommit[Op]) Queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}
