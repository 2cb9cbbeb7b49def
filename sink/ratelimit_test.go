package sink

import (
	"context"
	"testing"
	"time"
)

// TestBucket checks the token bucket against a fake clock: the burst goes
// at once, then takes wait for the tokens they need, one taker after the
// other; a take larger than the burst waits for a full bucket.
func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(50, 10, func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		take    int
		want    time.Duration
	}{
		{0, 10, 0},                     // the burst
		{0, 5, 100 * time.Millisecond}, // 5 tokens at 50/s
		{0, 5, 200 * time.Millisecond}, // behind the first taker
		{200 * time.Millisecond, 1, 20 * time.Millisecond},
		{time.Hour, 10, 0},              // full again, never above burst
		{0, 30, 200 * time.Millisecond}, // counts as 10: waits for a full bucket
		{200 * time.Millisecond, 0, 0},  // paid
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := b.reserve(s.take); got != s.want {
			t.Fatalf("step %d: take %d: got wait %v, want %v", i, s.take, got, s.want)
		}
	}
	b.set(0, 10)
	if got := b.reserve(1000); got != 0 {
		t.Errorf("no rate: got wait %v, want 0", got)
	}
}

// TestBucketTakeEndsWithContext: a waiting take gives up when its context
// ends.
func TestBucketTakeEndsWithContext(t *testing.T) {
	b := newBucket(1, 1, nil)
	if !b.take(context.Background(), 1) {
		t.Fatal("first take: got false, want true")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if b.take(ctx, 1) {
		t.Fatal("take past the context: got true, want false")
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("take waited %v after its context ended", d)
	}
}
