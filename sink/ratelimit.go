package sink

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket: it holds at most burst tokens and gains rate
// a second. A take of n tokens waits until the bucket holds them, then
// removes them; the bucket never goes below zero, so over any stretch of
// time T at most burst + rate·T tokens are taken, counted at the moments
// they were taken (a stall of the process does not let more through after
// it than the burst). Takers wait their turn, one at a time, in the order
// they came (a channel's senders queue in order), so a large batch is not
// starved by small ones. A take of more than burst tokens counts as burst:
// it waits for a full bucket and empties it. The zero rate never waits.
type bucket struct {
	turn chan struct{} // held by the taker whose turn it is

	mu     sync.Mutex // guards what follows
	rate   float64    // tokens a second; 0: no limit
	burst  float64
	tokens float64
	at     time.Time // when tokens was last brought up to date
	now    func() time.Time
}

// newBucket returns a full bucket; now is its clock (nil: time.Now).
func newBucket(rate float64, burst int, now func() time.Time) *bucket {
	if now == nil {
		now = time.Now
	}
	b := &bucket{turn: make(chan struct{}, 1), now: now}
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

// minWait keeps a taker that is a rounding error short from spinning.
const minWait = 100 * time.Microsecond

// tryTake takes n tokens if the bucket holds them and returns 0, or
// returns how long until it will.
func (b *bucket) tryTake(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return 0
	}
	b.refill()
	need := min(float64(n), b.burst)
	if b.tokens >= need {
		b.tokens -= need
		return 0
	}
	return max(time.Duration((need-b.tokens)/b.rate*float64(time.Second)), minWait)
}

// limited reports whether the bucket has a rate.
func (b *bucket) limited() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate > 0
}

// take takes n tokens once it is the caller's turn and the bucket holds
// them; it reports false if ctx ended first (nothing is taken then).
func (b *bucket) take(ctx context.Context, n int) bool {
	if !b.limited() {
		return ctx.Err() == nil
	}
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-b.turn }()
	for {
		wait := b.tryTake(n)
		if wait == 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}
