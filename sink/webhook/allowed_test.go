package webhook

import (
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/walhook/walhook/change"
)

// TestRefusedAttemptsAreNotSent: while Options.Allowed refuses (an active
// whose lease is no longer valid), a lane sends nothing, neither a batch's
// first attempt nor a retry, and a refusal is not counted as an attempt.
func TestRefusedAttemptsAreNotSent(t *testing.T) {
	var refused atomic.Bool
	var asked atomic.Int64
	refused.Store(true)
	allowed := func() error {
		asked.Add(1)
		if refused.Load() {
			return errors.New("the lease is no longer valid")
		}
		return nil
	}
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int, _ []byte) int {
		if n == 1 {
			refused.Store(true) // the retry is refused too
			http.Error(w, "later", http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(rc.URL)
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add, Allowed: allowed})
	m := msg(1, "public.t:1")
	submit(t, s, m)

	// The first attempt is asked for, refused, and asked for again.
	waitFor(t, "the first attempt asked for 3 times", func() bool { return asked.Load() >= 3 })
	if n := rc.count(); n != 0 {
		t.Fatalf("%d requests sent while attempts were refused, want none", n)
	}
	refused.Store(false)
	waitFor(t, "the first request", func() bool { return rc.count() == 1 })
	// The receiver failed it and refused the retry.
	from := asked.Load()
	waitFor(t, "the retry asked for 3 times", func() bool { return asked.Load() >= from+3 })
	if n := rc.count(); n != 1 {
		t.Fatalf("%d requests sent, want 1: a retry went out while refused", n)
	}
	refused.Store(false)
	waitFor(t, "the ack", func() bool { return a.count() == 1 })
	wantAcks(t, &a, []*change.Message{m}...)
	hits := rc.list()
	if len(hits) != 2 {
		t.Fatalf("got %d requests, want 2", len(hits))
	}
	for i, h := range hits {
		if got, want := h.header.Get("Webhook-Attempt"), strconv.Itoa(i+1); got != want {
			t.Errorf("request %d: webhook-attempt %q, want %q: a refusal counted as an attempt", i+1, got, want)
		}
	}
	if st := s.Stats(); st.FailedAttempts != 1 || st.Delivered != 1 {
		t.Errorf("got stats %+v, want 1 failed attempt and 1 delivered", st)
	}
}
