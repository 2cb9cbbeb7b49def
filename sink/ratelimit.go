package sink

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket: it holds at most burst tokens and gains rate
// a second. A take of n tokens reserves them at once, even into debt, and
// waits until the debt is paid, so that the takers of a bucket (a
// pipeline's lanes) go in the order they asked and, over any stretch of
// time T, at most burst + rate·T tokens are taken. A take of more than
// burst tokens counts as burst: it waits for a full bucket and empties it.
// The zero rate never waits.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens a second; 0: no limit
	burst  float64
	tokens float64 // may go negative: reserved ahead
	at     time.Time
	now    func() time.Time
}

// newBucket returns a full bucket; now is its clock (nil: time.Now).
func newBucket(rate float64, burst int, now func() time.Time) *bucket {
	if now == nil {
		now = time.Now
	}
	b := &bucket{now: now}
	b.set(rate, burst)
	b.tokens = b.burst
	return b
}

// set changes the rate and the burst (a reload), keeping what was taken.
func (b *bucket) set(rate float64, burst int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	b.rate, b.burst = rate, float64(max(burst, 1))
	b.tokens = min(b.tokens, b.burst)
}

// refill adds the tokens earned since the last call. b.mu is held.
func (b *bucket) refill() {
	now := b.now()
	if !b.at.IsZero() && b.rate > 0 {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	}
	b.at = now
}

// reserve takes n tokens and returns how long the taker must wait before
// it uses them.
func (b *bucket) reserve(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return 0
	}
	b.refill()
	b.tokens -= min(float64(n), b.burst)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// take takes n tokens, waiting as reserve says; it reports false if ctx
// ended first (the tokens stay taken: the time they stood for passed).
func (b *bucket) take(ctx context.Context, n int) bool {
	wait := b.reserve(n)
	if wait <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
