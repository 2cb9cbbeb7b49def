// Package cursor tracks, per sink, how far delivery has been acknowledged,
// persists it, and derives the LSN that is safe to report to PostgreSQL as
// flushed.
package cursor

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
)

// Tracker follows one sink's messages from dispatch to acknowledgement.
// Acks may arrive out of order (lanes deliver in parallel); a position counts
// as acknowledged for the cursor only once every message dispatched before it
// is acknowledged too: the contiguous prefix.
//
// Besides messages the tracker takes marks: LSNs that become safe to flush
// once everything dispatched before them is acknowledged (a transaction's end
// LSN, or the server's WAL position in a keepalive received between
// transactions).
//
// The messages between the cursor and the newest dispatched one are the
// sink's window: what a restart would deliver again. Wait bounds it, in
// messages and in the bytes of those not yet acknowledged, so that a lane
// stuck on a batch cannot let acknowledged positions pile up behind it
// without limit.
type Tracker struct {
	mu      sync.Mutex
	pending []entry // dispatched, not yet in the acknowledged prefix, in order
	head    int     // pending[head:] is live; the slice is compacted as it drains
	acked   change.Position
	safe    pglogrepl.LSN
	bytes   int64         // sizes of the pending entries not yet acknowledged
	room    chan struct{} // poked when an Ack makes room in the window
	// whole keeps the cursor at transaction boundaries (see
	// WholeTransactions); held is the newest position that left the
	// window while its transaction may still go on.
	whole     bool
	held      change.Position
	delivered change.Position // the newest position of the acknowledged prefix, whole or not
}

type entry struct {
	pos   change.Position
	acked bool
	size  uint32
	at    int64         // the message's commit time, Unix nanoseconds; 0 if unknown
	mark  pglogrepl.LSN // highest mark received after this message, before the next
}

// NewTracker returns a tracker whose cursor starts at acked and whose flush
// LSN starts at safe.
func NewTracker(acked change.Position, safe pglogrepl.LSN) *Tracker {
	return &Tracker{acked: acked, safe: safe, room: make(chan struct{}, 1)}
}

// WholeTransactions makes the cursor move only to the last message of a
// transaction: a transaction acknowledged in part is delivered again from
// its first message after a restart (batch_by: transaction). The window
// is not held back: an acknowledged message leaves it as before. A
// transaction is known to have ended once a mark or a message of another
// transaction follows its last message.
func (t *Tracker) WholeTransactions() {
	t.mu.Lock()
	t.whole = true
	t.mu.Unlock()
}

// Add records that the message at pos, of size bytes, was dispatched.
// Positions must be added in increasing order.
func (t *Tracker) Add(pos change.Position, size int) { t.add(pos, size, 0) }

// AddMessage is Add for m, remembering its commit time for Oldest.
func (t *Tracker) AddMessage(m *change.Message) {
	t.add(m.Pos, m.Size(), m.CommitTime.UnixNano())
}

func (t *Tracker) add(pos change.Position, size int, at int64) {
	t.mu.Lock()
	if t.whole && t.head == len(t.pending) && t.acked.Less(t.held) && t.held.CommitLSN != pos.CommitLSN {
		t.acked = t.held // the held transaction ended
	}
	t.pending = append(t.pending, entry{pos: pos, size: uint32(min(size, 1<<31)), at: at})
	t.bytes += int64(size)
	t.mu.Unlock()
}

// Oldest is the commit time of the oldest message not yet acknowledged, or
// the zero time when every message is.
func (t *Tracker) Oldest() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.pending[t.head:] {
		if !e.acked {
			if e.at == 0 {
				return time.Time{}
			}
			return time.Unix(0, e.at)
		}
	}
	return time.Time{}
}

// Changed is poked whenever an Ack makes room in the window or moves the
// cursor; one receiver at a time should wait on it.
func (t *Tracker) Changed() <-chan struct{} { return t.room }

// Wait blocks until the window has room for one more message: fewer than
// maxMessages between the cursor and the newest dispatched message, and
// fewer than maxBytes in the messages not yet acknowledged, or none at all
// (so one message larger than maxBytes goes alone). It returns ctx.Err() if
// ctx ends first. A limit of 0 or less is no limit.
func (t *Tracker) Wait(ctx context.Context, maxMessages int, maxBytes int64) error {
	for {
		t.mu.Lock()
		n, b := len(t.pending)-t.head, t.bytes
		t.mu.Unlock()
		if (maxMessages <= 0 || n < maxMessages) && (maxBytes <= 0 || b < maxBytes || b == 0) {
			return nil
		}
		select {
		case <-t.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Window returns how many messages lie between the cursor and the newest
// dispatched one, and the bytes of those not yet acknowledged.
func (t *Tracker) Window() (messages int, bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) - t.head, t.bytes
}

// Mark records that lsn is safe to flush once everything added so far is
// acknowledged.
func (t *Tracker) Mark(lsn pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head == len(t.pending) {
		if lsn > t.safe {
			t.safe = lsn
		}
		if t.whole && t.acked.Less(t.held) {
			t.acked = t.held // the held transaction ended
		}
		return
	}
	last := &t.pending[len(t.pending)-1]
	if lsn > last.mark {
		last.mark = lsn
	}
}

// Ack records that the message at pos was delivered. It reports false if pos
// was never added or was acknowledged already.
func (t *Tracker) Ack(pos change.Position) bool {
	return t.AckAll([]change.Position{pos}) == 0
}

// AckAll records that the messages at ps were delivered, under one lock:
// what a delivered batch does. It returns how many of ps were never added
// or were acknowledged already (and are ignored). ps in increasing order
// costs one search for the lot.
func (t *Tracker) AckAll(ps []change.Position) (ignored int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.pending[t.head:]
	from, moved := 0, false
	for k, pos := range ps {
		if k > 0 && pos.Less(ps[k-1]) {
			from = 0 // out of order: search everything again
		}
		i := from + sort.Search(len(live)-from, func(i int) bool { return !live[from+i].pos.Less(pos) })
		if i == len(live) || live[i].pos != pos || live[i].acked {
			ignored++
			continue
		}
		live[i].acked = true
		t.bytes -= int64(live[i].size)
		from, moved = i+1, true
	}
	if !moved {
		return ignored
	}
	defer t.poke()
	for t.head < len(t.pending) && t.pending[t.head].acked {
		e := t.pending[t.head]
		t.delivered = e.pos
		switch {
		case !t.whole, e.mark != 0,
			t.head+1 < len(t.pending) && t.pending[t.head+1].pos.CommitLSN != e.pos.CommitLSN:
			t.acked = e.pos
		default:
			t.held = e.pos // its transaction may go on
		}
		if e.mark > t.safe {
			t.safe = e.mark
		}
		t.head++
	}
	if t.head == len(t.pending) {
		t.pending = t.pending[:0]
		t.head = 0
	} else if t.head > 1024 && t.head*2 > len(t.pending) {
		n := copy(t.pending, t.pending[t.head:])
		t.pending = t.pending[:n]
		t.head = 0
	}
	return ignored
}

// Settled reports whether every message added at or below pos is
// acknowledged.
func (t *Tracker) Settled(pos change.Position) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.head == len(t.pending) || pos.Less(t.pending[t.head].pos)
}

// Delivered is the highest position below which every message is
// acknowledged, whether or not its transaction is (see
// WholeTransactions): what may leave memory.
func (t *Tracker) Delivered() change.Position {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.delivered.Less(t.acked) {
		return t.acked
	}
	return t.delivered
}

// State returns the highest position below which everything is
// acknowledged, the LSN that is safe to flush, and how many dispatched
// messages are not yet in the acknowledged prefix.
func (t *Tracker) State() (acked change.Position, safe pglogrepl.LSN, pending int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acked, t.safe, len(t.pending) - t.head
}

func (t *Tracker) poke() {
	select {
	case t.room <- struct{}{}:
	default:
	}
}
