package replication

import (
	"sync"
	"sync/atomic"
)

// Budget bounds, in bytes, the messages the stream has decoded that some
// consumer has not taken yet: what waits between the stream and the sinks.
// The stream waits (sending status updates meanwhile) while the budget is
// spent; a message larger than the whole budget still passes, alone.
// Messages are counted by change.Message.Size.
type Budget struct {
	limit   int64
	decoded atomic.Int64
	freed   chan struct{}

	mu     sync.Mutex
	takers []*Taker
}

// Taker is one consumer of a Budget: it reports what it took.
type Taker struct {
	b     *Budget
	taken atomic.Int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	return &Budget{limit: limit, freed: make(chan struct{}, 1)}
}

// Taker registers a consumer. Every consumer must take every message; a
// budget without consumers is never spent.
func (b *Budget) Taker() *Taker {
	t := &Taker{b: b}
	t.taken.Store(b.decoded.Load())
	b.mu.Lock()
	b.takers = append(b.takers, t)
	b.mu.Unlock()
	return t
}

// Remove unregisters a consumer that stopped: it no longer holds the
// budget.
func (b *Budget) Remove(t *Taker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, x := range b.takers {
		if x == t {
			b.takers = append(b.takers[:i], b.takers[i+1:]...)
			break
		}
	}
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// Took reports that the consumer took a message of n bytes.
func (t *Taker) Took(n int) {
	t.taken.Add(int64(n))
	select {
	case t.b.freed <- struct{}{}:
	default:
	}
}

// InUse is the bytes decoded and not yet taken by every consumer.
func (b *Budget) InUse() int64 {
	decoded := b.decoded.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	low := decoded
	for _, t := range b.takers {
		low = min(low, t.taken.Load())
	}
	return decoded - low
}

// release gives back n bytes reserved for messages that were never handed
// on: the connection they came from ended first.
func (b *Budget) release(n int) {
	if b == nil || n == 0 {
		return
	}
	b.decoded.Add(-int64(n))
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// reserve counts a message of n bytes as decoded if the budget has room,
// or if nothing is in use; it reports whether it did.
func (b *Budget) reserve(n int) bool {
	if b == nil {
		return true
	}
	if in := b.InUse(); in > 0 && in+int64(n) > b.limit {
		return false
	}
	b.decoded.Add(int64(n))
	return true
}
