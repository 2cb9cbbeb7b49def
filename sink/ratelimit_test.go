package sink

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestBucket checks the token bucket against a fake clock: the burst goes
// at once, then a take waits for the tokens it needs and the bucket never
// goes below zero nor above the burst; a take larger than the burst waits
// for a full bucket.
func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(50, 10, func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		take    int
		want    time.Duration // 0: taken
	}{
		{0, 10, 0},                     // the burst
		{0, 5, 100 * time.Millisecond}, // 5 tokens at 50/s
		{60 * time.Millisecond, 5, 40 * time.Millisecond},
		{40 * time.Millisecond, 5, 0},   // paid: the bucket is empty again
		{time.Hour, 10, 0},              // full again, never above the burst
		{0, 30, 200 * time.Millisecond}, // counts as 10: waits for a full bucket
		{200 * time.Millisecond, 30, 0},
		{0, 1, 20 * time.Millisecond},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := b.tryTake(s.take); got != s.want {
			t.Fatalf("step %d: take %d: got wait %v, want %v", i, s.take, got, s.want)
		}
	}
	b.set(0, 10)
	if got := b.tryTake(1000); got != 0 {
		t.Errorf("no rate: got wait %v, want 0", got)
	}
}

// TestBucketTakes: concurrent takers on the real clock get, over the time
// they took, no more than burst + rate·T tokens; a waiting take gives up
// when its context ends.
func TestBucketTakes(t *testing.T) {
	const rate, burst = 200.0, 10
	b := newBucket(rate, burst, nil)
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				if !b.take(context.Background(), 5) {
					t.Error("take: got false, want true")
				}
			}
		})
	}
	wg.Wait()
	// 200 tokens: 10 at once, 190 at 200/s.
	if took, least := time.Since(start), 950*time.Millisecond; took < least {
		t.Errorf("200 tokens took %v, want at least %v", took, least)
	}
	slow := newBucket(1, 1, nil)
	if !slow.take(context.Background(), 1) {
		t.Fatal("the burst: got false, want true")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if slow.take(ctx, 1) {
		t.Fatal("take past the context: got true, want false")
	}
}
