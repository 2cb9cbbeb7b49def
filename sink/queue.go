package sink

// laneQueue is what waits in a lane, in the order the lane takes it.
type laneQueue struct {
	items []submission
	head  int // items before head were taken
}

func (q *laneQueue) push(s submission) { q.items = append(q.items, s) }

func (q *laneQueue) len() int { return len(q.items) - q.head }

// front is the submission the lane takes next; q is not empty.
func (q *laneQueue) front() *submission { return &q.items[q.head] }

// pop takes the front submission.
func (q *laneQueue) pop() submission {
	s := q.items[q.head]
	q.items[q.head] = submission{} // let the message go once it is delivered
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > 4096 {
			q.items = nil // let a burst's storage go
		}
	case q.head >= 1024 && 2*q.head >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return s
}
