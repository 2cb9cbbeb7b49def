package sink

import (
	"context"
	"time"

	"github.com/walhook/walhook/change"
)

// The express is a lane's second sender. A lane sends one batch at a time,
// which keeps each ordering group in order; but while that batch holds a
// backfill's reads alone, a change queued behind it need not wait for it,
// unless the change's group has a read in it. The express sends such
// changes beside the batch of reads, at once: a change waits for the
// receiver's answer to its own request, not for a hundred reads'.
//
// Order per group holds: the express takes changes from the head of the
// lane's live queue only, in order, and stops at the first it may not take
// (a read, a barrier, a change of a group in the batch of reads in
// flight), so everything submitted before a change it takes is either
// acknowledged, in the express's batch before it, or of other groups; and
// the lane forms its next batch only once the express's batch is
// acknowledged (expressEnd). Under batch_by: transaction there is no
// express: a transaction's parts go in their order through the lane.

// expressOpen lets the express send beside the batch the lane is about to
// deliver, if that batch holds reads alone.
func (l *lane) expressOpen() {
	if l.express == nil {
		return
	}
	for _, s := range l.batch {
		if s.m.Action != change.Read || s.tx != nil || s.replay != nil {
			return
		}
	}
	clear(l.flyingSet)
	for _, s := range l.batch {
		l.flyingSet[s.group] = struct{}{}
	}
	l.mu.Lock()
	l.flying = l.flyingSet
	l.mu.Unlock()
	poke(l.exNotify)
}

// expressEnd closes what expressOpen opened and waits until the express's
// batch, if it has one, is acknowledged: the lane's next batch may hold
// later changes of its groups. It reports false if ctx ended first.
func (l *lane) expressEnd(ctx context.Context) bool {
	if l.express == nil {
		return true
	}
	l.mu.Lock()
	l.flying = nil
	busy := l.exBusy
	l.mu.Unlock()
	for busy {
		select {
		case <-l.exDone:
		case <-ctx.Done():
			return false
		}
		l.mu.Lock()
		busy = l.exBusy
		l.mu.Unlock()
	}
	return true
}

// runExpress is the express x of lane l: it sends what takeExpress gives
// it until ctx ends.
func (x *lane) runExpress(ctx context.Context, l *lane) {
	x.timer = time.NewTimer(time.Hour)
	x.timer.Stop()
	defer x.timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.exNotify:
		}
		for {
			// A paused pipeline forms no batches, here as in the lane:
			// what is queued meanwhile goes together once it resumes.
			if !l.p.waitResumed(ctx) {
				return
			}
			if !x.takeExpress(l) {
				break
			}
			ok := x.deliver(ctx)
			l.mu.Lock()
			l.exBusy = false
			l.mu.Unlock()
			poke(l.exDone)
			if !ok {
				return
			}
		}
	}
}

// takeExpress moves into x's batch the changes at the head of l's live
// queue that may go beside l's batch of reads in flight, up to batch_size
// and batch_bytes, and reports whether it took any.
func (x *lane) takeExpress(l *lane) bool {
	cfg := l.p.settings()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.flying == nil || l.exBusy {
		return false
	}
	x.batch = x.batch[:0]
	bytes := int64(0)
	for l.queue.live.len() > 0 && len(x.batch) < cfg.BatchSize {
		s := l.queue.live.front()
		if s.m == nil || s.m.Action == change.Read || s.barrier || s.tx != nil || s.replay != nil {
			break
		}
		if _, busy := l.flying[s.group]; busy {
			break
		}
		size := int64(s.m.Size())
		if len(x.batch) > 0 && cfg.BatchBytes > 0 && bytes+size > cfg.BatchBytes {
			break
		}
		x.batch = append(x.batch, l.queue.pop())
		bytes += size
	}
	l.exBusy = len(x.batch) > 0
	return l.exBusy
}

// poke wakes whoever waits on c, a channel of capacity one, without
// blocking.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
