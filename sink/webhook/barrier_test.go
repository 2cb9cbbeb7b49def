package webhook

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestBarrierOrdersAcrossLanes submits messages on many keys, then a
// barrier, then more: the receiver must see every earlier message answered
// before the barrier arrives, and no later one before the barrier is
// answered. Requests are slowed down so that lanes overlap.
func TestBarrierOrdersAcrossLanes(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) int {
		time.Sleep(5 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 2
	a := &acks{}
	s := start(t, cfg, testOpts{Ack: a.add})

	for i := 0; i < 20; i++ {
		submit(t, s, msg(i, "k"+strconv.Itoa(i%7)))
	}
	barrier := msg(20, "table")
	barrier.Barrier = true
	submit(t, s, barrier)
	for i := 21; i < 40; i++ {
		submit(t, s, msg(i, "k"+strconv.Itoa(i%7)))
	}
	drain(t, s)

	seenBarrier := false
	for _, h := range rc.list() {
		for _, id := range h.ids(t) {
			switch {
			case id == 20:
				seenBarrier = true
			case id < 20 && seenBarrier:
				t.Errorf("message %d (before the barrier) delivered after it", id)
			case id > 20 && !seenBarrier:
				t.Errorf("message %d (after the barrier) delivered before it", id)
			}
		}
	}
	if !seenBarrier || a.count() != 40 {
		t.Fatalf("got barrier delivered %t and %d acks, want true and 40", seenBarrier, a.count())
	}
}
