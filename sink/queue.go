package sink

import (
	"slices"

	"github.com/walhook/walhook/change"
)

// laneQueue is what waits in a lane, in the order the lane takes it: live
// changes before backfill reads. A backfill hands a sink its chunks'
// reads in bursts of up to a chunk (2,000 rows); in one FIFO a change
// committed just after would wait behind every read queued in its lane.
// Here it goes first, with one exception that keeps each ordering group
// in order: when a change arrives while reads of its own group wait, those
// reads move ahead of it, in their order. So within a group the lane still
// takes everything in the order it was submitted, and a live change of a
// row is never overtaken by an older read of the row, nor does it overtake
// one (the pipeline submits in position order; a row's read and its
// changes share the row's group, and a change that moves a row to another
// group is a barrier).
//
// Invariant: within each group, everything in live was submitted before
// everything in reads, and each queue is in submission order.
type laneQueue struct {
	// inOrder keeps everything in submission order, reads too: under
	// batch_by: transaction the pipeline orders transactions (a chunk of
	// reads is one) before it hands them to a lane, and a lane's queue
	// holds their messages and end marks in that order.
	inOrder bool
	live    fifo
	reads   fifo
	// readGroups counts the reads waiting per group, so a change whose
	// group has none (the common case) need not look through them.
	readGroups map[uint64]int
}

func (q *laneQueue) push(s submission) {
	if q.inOrder || s.m == nil {
		q.live.push(s)
		return
	}
	if s.m.Action == change.Read {
		if q.readGroups == nil {
			q.readGroups = map[uint64]int{}
		}
		q.readGroups[s.group]++
		q.reads.push(s)
		return
	}
	if q.readGroups[s.group] > 0 {
		q.promote(s.group)
	}
	q.live.push(s)
}

// promote moves the waiting reads of group g to the end of live, in
// their order.
func (q *laneQueue) promote(g uint64) {
	kept := q.reads.head
	for i := q.reads.head; i < len(q.reads.items); i++ {
		s := q.reads.items[i]
		if s.group == g {
			q.live.push(s)
			continue
		}
		q.reads.items[kept] = s
		kept++
	}
	clear(q.reads.items[kept:])
	q.reads.items = q.reads.items[:kept]
	delete(q.readGroups, g)
	if q.reads.len() == 0 {
		q.reads.items, q.reads.head = q.reads.items[:0], 0
	}
}

func (q *laneQueue) len() int { return q.live.len() + q.reads.len() }

// front is the submission the lane takes next; q is not empty.
func (q *laneQueue) front() *submission {
	if q.live.len() > 0 {
		return q.live.front()
	}
	return q.reads.front()
}

// readsNext reports whether the submission the lane takes next is a
// backfill's read that no change of its group waits for.
func (q *laneQueue) readsNext() bool { return q.live.len() == 0 && q.reads.len() > 0 }

// at is the i-th submission in the order the lane takes them; i is less
// than q.len().
func (q *laneQueue) at(i int) *submission {
	if n := q.live.len(); i < n {
		return &q.live.items[q.live.head+i]
	}
	return &q.reads.items[q.reads.head+i-q.live.len()]
}

// drop takes the first n submissions.
func (q *laneQueue) drop(n int) {
	for range n {
		q.pop()
	}
}

// pop takes the front submission.
func (q *laneQueue) pop() submission {
	if q.live.len() > 0 {
		return q.live.pop()
	}
	s := q.reads.pop()
	if n := q.readGroups[s.group]; n > 1 {
		q.readGroups[s.group] = n - 1
	} else {
		delete(q.readGroups, s.group)
	}
	return s
}

// inPositionOrder sorts a batch taken from the queue by position, as a
// batch is everywhere else (dead letters, max_lag's oldest message): the
// live changes taken before reads have later positions. Within a group
// position order is submission order, so the group's order holds.
func inPositionOrder(batch []submission) {
	less := func(a, b submission) int {
		switch {
		case a.m.Pos.Less(b.m.Pos):
			return -1
		case b.m.Pos.Less(a.m.Pos):
			return 1
		}
		return 0
	}
	if !slices.IsSortedFunc(batch, less) {
		slices.SortFunc(batch, less)
	}
}

// fifo is a queue of submissions.
type fifo struct {
	items []submission
	head  int // items before head were taken
}

func (f *fifo) push(s submission) { f.items = append(f.items, s) }

func (f *fifo) len() int { return len(f.items) - f.head }

func (f *fifo) front() *submission { return &f.items[f.head] }

func (f *fifo) pop() submission {
	s := f.items[f.head]
	f.items[f.head] = submission{} // let the message go once it is delivered
	f.head++
	switch {
	case f.head == len(f.items):
		f.items, f.head = f.items[:0], 0
		if cap(f.items) > 4096 {
			f.items = nil // let a burst's storage go
		}
	case f.head >= 1024 && 2*f.head >= len(f.items):
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items, f.head = f.items[:n], 0
	}
	return s
}
