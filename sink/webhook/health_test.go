package webhook

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/lateness"
	"github.com/walhook/walhook/sink"
)

// TestRetrySchedule: with retry.schedule [100ms, 200ms] a failing batch
// gets three attempts, the waits between them are the schedule's within
// 10%, and then it is a dead letter with 3 attempts.
func TestRetrySchedule(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) int {
		w.WriteHeader(http.StatusInternalServerError)
		return http.StatusInternalServerError
	})
	cfg := testConfig(rc.URL)
	sched := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}
	cfg.Retry = config.Retry{Initial: time.Second, Max: time.Minute, Schedule: sched, MaxAttempts: len(sched) + 1}
	var a acks
	dead := make(chan sink.DeadLetter, 1)
	s := start(t, cfg, testOpts{Ack: a.add, DeadLetter: func(_ context.Context, d sink.DeadLetter) error {
		dead <- d
		return nil
	}})
	late := lateness.Probe(t)
	submit(t, s, msg(1, "k"))
	var d sink.DeadLetter
	select {
	case d = <-dead:
	case <-time.After(5 * time.Second):
		t.Fatalf("no dead letter after 5s; the receiver got %d requests", rc.count())
	}
	drain(t, s)
	hits := rc.list()
	if len(hits) != 3 || d.Attempts != 3 {
		t.Fatalf("got %d requests and a dead letter of %d attempts, want 3 and 3", len(hits), d.Attempts)
	}
	for i, h := range hits {
		if got, want := h.header.Get("Webhook-Attempt"), strconv.Itoa(i+1); got != want {
			t.Errorf("request %d: webhook-attempt %s, want %s", i+1, got, want)
		}
	}
	// The waits' 10% are checked exactly in sink (retryWait); here that
	// the schedule is what the lane waits, not the exponential backoff's
	// 1 s. A wait is at least 90% of the schedule's; above 110% only by
	// the time the attempt itself took (loopback: well under 50ms) and
	// by how late this process ran (the sender's timer and the
	// receiver's stamp are its own).
	slack := 50*time.Millisecond + late()
	for i, want := range sched {
		got := hits[i+1].at.Sub(hits[i].at)
		if got < want*9/10 || got > want*11/10+slack {
			t.Errorf("wait after attempt %d: got %v, want %v ± 10%% (and up to %v later)", i+1, got, want, slack)
		}
	}
	wantAcks(t, &a, msg(1, "k"))
}

// TestRateLimit: with rate_limit 50/s and batch_size 10, a sink handed
// 400 messages at once sends the first burst at once and then, over every
// 1 s window, at most 50 + batch_size messages; every message arrives, and
// each key's messages in order. A sink without a limit beside it is not
// slowed.
func TestRateLimit(t *testing.T) {
	type seen struct {
		at  time.Time
		ids []int
	}
	var mu sync.Mutex
	var got []seen
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) int {
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	free := newReceiver(t, ok)
	cfg := testConfig(rc.URL)
	cfg.RateLimit = config.Rate{Count: 50, Per: time.Second}
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})
	fcfg := testConfig(free.URL)
	var fa acks
	fs := start(t, fcfg, testOpts{Ack: fa.add})

	const n = 200
	msgs := make([]*change.Message, 0, n)
	for i := range n {
		msgs = append(msgs, msg(i+1, fmt.Sprintf("k%d", i%7)))
	}
	late := lateness.Probe(t)
	start := time.Now()
	submit(t, s, msgs...)
	submit(t, fs, msgs...)
	waitFor(t, "the unlimited sink", func() bool { return fa.count() == n })
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the unlimited sink took %v for %d messages", d, n)
	}
	deadline := time.Now().Add(15 * time.Second)
	for a.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("limited sink: %d of %d acknowledged after 15s", a.count(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	// 200 messages at 50/s with a burst of 10: at least (200-10)/50 s.
	if min := 3500 * time.Millisecond; elapsed < min {
		t.Errorf("limited sink took %v for %d messages, want at least %v", elapsed, n, min)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range rc.list() {
		got = append(got, seen{at: h.at, ids: h.ids(t)})
	}
	// Over every 1 s window starting at a request after the first burst
	// (batch_size messages): at most 50 + batch_size, and as many more as
	// the rate gives in the longest time this process ran late (requests
	// sent apart may be stamped together); past a second of lateness the
	// windows mean nothing (the bucket is checked on a fake clock in sink).
	lateBy := late()
	allowed := 50 + cfg.BatchSize + int(50*lateBy.Seconds()+0.5)
	if lateBy > time.Second {
		t.Logf("this process ran up to %v late: only the total time is checked", lateBy)
		allowed = n
	}
	burst, first := 0, 0
	for first < len(got) && burst < cfg.BatchSize {
		burst += len(got[first].ids)
		first++
	}
	for i := first; i < len(got); i++ {
		sum := 0
		for j := i; j < len(got) && got[j].at.Sub(got[i].at) < time.Second; j++ {
			sum += len(got[j].ids)
		}
		if sum > allowed {
			t.Errorf("1 s from request %d: %d messages, want at most %d (%v of lateness)", i+1, sum, allowed, lateBy.Round(time.Millisecond))
		}
	}
	// Nothing lost, per-key order kept.
	last := map[int]int{}
	count := 0
	for _, g := range got {
		for _, id := range g.ids {
			k := (id - 1) % 7
			if id <= last[k] {
				t.Errorf("key k%d: id %d after %d", k, id, last[k])
			}
			last[k] = id
			count++
		}
	}
	if count != n {
		t.Errorf("receiver got %d messages, want %d", count, n)
	}
}
