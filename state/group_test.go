package state

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type testOp struct {
	n         int
	committed int // how many commits took it
	group     int // the commit that took it
}

// TestGroupCommitGroups: a lone write commits alone; writes queued while a
// commit runs go together into the next one; commits never overlap and
// every write is committed exactly once, also under many writers.
func TestGroupCommitGroups(t *testing.T) {
	var (
		running atomic.Int32
		commits atomic.Int32
		hold    = make(chan struct{})
		held    = make(chan struct{})
	)
	ctx := context.Background()
	g := NewGroupCommit(func(_ context.Context, ops []*testOp) {
		if running.Add(1) != 1 {
			t.Error("two commits at once")
		}
		defer running.Add(-1)
		c := int(commits.Add(1))
		for _, o := range ops {
			o.committed++
			o.group = c
		}
		if c == 2 {
			close(held)
			<-hold
		}
	})

	lone := &testOp{n: 0}
	g.Do(ctx, lone)
	if lone.committed != 1 || lone.group != 1 {
		t.Fatalf("a lone write: committed %d times in commit %d, want once in commit 1", lone.committed, lone.group)
	}

	// The second commit holds until five more writes are queued: they go
	// into the third, together.
	var wg sync.WaitGroup
	first := &testOp{n: 1}
	wg.Go(func() { g.Do(ctx, first) })
	<-held
	queued := make([]*testOp, 5)
	for i := range queued {
		queued[i] = &testOp{n: 2 + i}
		wg.Go(func() { g.Do(ctx, queued[i]) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.Queued() < len(queued) {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued after 10 s, want %d", g.Queued(), len(queued))
		}
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	for _, o := range queued {
		if o.committed != 1 || o.group != 3 {
			t.Errorf("write %d: committed %d times in commit %d, want once in commit 3", o.n, o.committed, o.group)
		}
	}

	// Many writers: each write once, no commit overlapping another.
	many := make([]*testOp, 2000)
	for i := range many {
		many[i] = &testOp{n: i}
		wg.Go(func() { g.Do(ctx, many[i]) })
	}
	wg.Wait()
	for _, o := range many {
		if o.committed != 1 {
			t.Fatalf("write %d committed %d times, want once", o.n, o.committed)
		}
	}
	t.Logf("%d writes in %d commits", len(many)+7, commits.Load())
}
