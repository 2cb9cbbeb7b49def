package webhook

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
)

// Many keys over several lanes, a receiver that fails often and answers
// slowly now and then: every message is acknowledged exactly once, each lane
// acknowledges in order, and the receiver accepts each key's messages in
// submission order.
func TestOrderPerKeyAcrossLanes(t *testing.T) {
	const n, keys = 600, 25
	rnd := rand.New(rand.NewPCG(1, 2))
	msgs := make([]*change.Message, n)
	for i := range msgs {
		msgs[i] = msg(i, "public.t:"+strconv.Itoa(rnd.IntN(keys)))
	}

	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, hitN int, _ []byte) int {
		switch {
		case hitN%4 == 0:
			w.WriteHeader(http.StatusInternalServerError)
			return http.StatusInternalServerError
		case hitN%7 == 0:
			time.Sleep(2 * time.Millisecond)
		}
		return http.StatusOK
	})
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 5
	cfg.BatchWait = time.Millisecond
	cfg.Retry.Initial = time.Millisecond
	cfg.Retry.Max = 5 * time.Millisecond
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})

	submit(t, s, msgs...)
	drain(t, s)

	accepted := map[string][]int{} // key -> ids, in the order the receiver accepted them
	for _, h := range rc.list() {
		if h.status != http.StatusOK {
			continue
		}
		for _, id := range h.ids(t) {
			accepted[msgs[id].Key] = append(accepted[msgs[id].Key], id)
		}
	}
	// hits are in arrival order, and a lane sends its next batch only
	// after the receiver accepted the previous one.
	want := map[string][]int{}
	for i, m := range msgs {
		want[m.Key] = append(want[m.Key], i)
	}
	for key, ids := range want {
		got := accepted[key]
		if len(got) != len(ids) {
			t.Errorf("key %s: receiver accepted %d messages, want %d", key, len(got), len(ids))
			continue
		}
		for i := range ids {
			if got[i] != ids[i] {
				t.Errorf("key %s: receiver accepted %v, want %v", key, got, ids)
				break
			}
		}
	}

	acked := a.list()
	if len(acked) != n {
		t.Fatalf("got %d acks, want %d", len(acked), n)
	}
	once := map[change.Position]bool{}
	last := map[int]change.Position{}
	lanes := map[int]bool{}
	for _, p := range acked {
		if once[p] {
			t.Errorf("%s acknowledged twice", p)
		}
		once[p] = true
		lane := s.lane(msgs[p.Idx], cfg.MaxInFlight)
		lanes[lane] = true
		if prev, ok := last[lane]; ok && !prev.Less(p) {
			t.Errorf("lane %d acknowledged %s after %s", lane, p, prev)
		}
		last[lane] = p
	}
	if len(lanes) != cfg.MaxInFlight {
		t.Errorf("messages used %d lanes, want all %d", len(lanes), cfg.MaxInFlight)
	}
	if st := s.Stats(); st.FailedAttempts == 0 || st.Delivered != n || st.Pending != 0 {
		t.Errorf("got stats %+v, want some failed attempts, %d delivered, none queued", st, n)
	}
}

func TestDrainFlushesPartialBatches(t *testing.T) {
	rc := newReceiver(t, ok)
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 100
	cfg.BatchWait = time.Hour
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})
	for i := range 10 {
		submit(t, s, msg(i, "public.t:"+strconv.Itoa(i)))
	}
	drain(t, s)
	if n := a.count(); n != 10 {
		t.Errorf("got %d acks, want 10", n)
	}
	total := 0
	for _, h := range rc.list() {
		total += len(h.ids(t))
	}
	if total != 10 {
		t.Errorf("receiver got %d messages, want 10", total)
	}
	if err := s.Submit(context.Background(), msg(10, "public.t:10")); !errors.Is(err, sink.ErrDraining) {
		t.Errorf("Submit after Drain: got %v, want sink.ErrDraining", err)
	}
	drain(t, s) // again: nothing left, at once
}

func TestDrainDeadlineWithFailingReceiver(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) int {
		w.WriteHeader(http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	})
	var a acks
	s := start(t, testConfig(rc.URL), testOpts{Ack: a.add})
	submit(t, s, msg(1, "public.t:1"), msg(2, "public.t:2"), msg(3, "public.t:3"))
	// Failing already, so that the checks below do not depend on how soon a
	// loaded machine gets a request out within the deadline.
	waitFor(t, "a failed attempt", func() bool { return s.Stats().FailedAttempts > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := s.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	if n := a.count(); n != 0 {
		t.Errorf("got %d acks, want 0", n)
	}
	if st := s.Stats(); st.Pending != 3 || st.FailedAttempts == 0 {
		t.Errorf("got stats %+v, want 3 queued and failed attempts", st)
	}
	if rc.count() == 0 {
		t.Error("receiver got no request")
	}
}

// A hard stop abandons a request in flight: Run returns at once, nothing is
// acknowledged, and the sink refuses further work.
func TestRunStopAbandonsInFlight(t *testing.T) {
	arrived := make(chan struct{}, 1)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) int {
		arrived <- struct{}{}
		<-r.Context().Done()
		return 0
	})
	cfg := testConfig(rc.URL)
	cfg.Timeout = time.Hour
	var a acks
	s := newTestSink(t, cfg, testOpts{Ack: a.add})
	// Submit before Run: the message waits in its lane's queue.
	submit(t, s, msg(1, "public.t:1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-arrived
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of its context ending")
	}
	if n := a.count(); n != 0 {
		t.Errorf("got %d acks, want 0", n)
	}
	if err := s.Submit(context.Background(), msg(2, "public.t:1")); !errors.Is(err, sink.ErrStopped) {
		t.Errorf("Submit after Run: got %v, want ErrStopped", err)
	}
	if err := s.Drain(context.Background()); !errors.Is(err, sink.ErrStopped) {
		t.Errorf("Drain after Run: got %v, want ErrStopped", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run: got nil, want an error")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*config.Sink)
		want   string
	}{
		{"no url", func(c *config.Sink) { c.Webhook.URL = "" }, "url is missing"},
		{"bad url", func(c *config.Sink) { c.Webhook.URL = "http://user:pa ss@[::1" }, "not a valid URL"},
		{"ftp", func(c *config.Sink) { c.Webhook.URL = "ftp://example.com/x" }, `scheme "ftp"`},
		{"no host", func(c *config.Sink) { c.Webhook.URL = "http:///x" }, "no host"},
		{"timeout", func(c *config.Sink) { c.Timeout = 0 }, "timeout"},
		{"secret", func(c *config.Sink) { c.Webhook.Secrets = []string{"hunter2"} }, "secret 1 of 1"},
		{"second secret", func(c *config.Sink) { c.Webhook.Secrets = []string{testSecret, "whsec_hunter2!"} }, "secret 2 of 2"},
		{"compression", func(c *config.Sink) { c.Webhook.Compression = "br" }, `compression "br"`},
		{"header name", func(c *config.Sink) { c.Webhook.Headers = map[string]string{"Bad Name": "x"} }, "header name"},
		{"header value", func(c *config.Sink) { c.Webhook.Headers = map[string]string{"X-Token": "s3cret\r\nEvil: 1"} }, "line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:1/hooks")
			tc.change(&cfg)
			_, err := New(cfg, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
			for _, secret := range []string{"pa ss", "hunter2", "s3cret"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret", err)
				}
			}
		})
	}
}

func BenchmarkSubmitAndDeliver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.BatchSize = 100
	dest, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	s, err := sink.New(cfg, dest, sink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	msgs := make([]*change.Message, 1000)
	for i := range msgs {
		msgs[i] = msg(i, "public.t:"+strconv.Itoa(i%50))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m := msgs[i%len(msgs)]
		if err := s.Submit(m, sink.HashKey(m.Key), false); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Drain(context.Background()); err != nil {
		b.Fatal(err)
	}
	cancel()
	<-done
}

// TestReconfigureLive: new delivery settings and a new destination apply
// from the next batch; max_in_flight cannot change live.
func TestReconfigureLive(t *testing.T) {
	a, b := newReceiver(t, ok), newReceiver(t, ok)
	cfg := testConfig(a.URL)
	cfg.BatchSize = 2
	var acked acks
	s := start(t, cfg, testOpts{Ack: acked.add, Route: func(m *change.Message) (uint64, bool) { return 1, false }})
	submit(t, s, msg(0, "k"), msg(1, "k"))
	waitFor(t, "2 acks", func() bool { return acked.count() == 2 })

	next := testConfig(b.URL)
	next.BatchSize = 3
	next.Webhook.Headers = map[string]string{"X-Static": "new"}
	dest, err := New(next, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.Reconfigure(next, dest)
	if err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
	if old != s.dest {
		t.Errorf("Reconfigure returned %v, want the destination it replaced", old)
	}
	submit(t, s, msg(2, "k"), msg(3, "k"), msg(4, "k"))
	waitFor(t, "5 acks", func() bool { return acked.count() == 5 })
	if n := a.count(); n != 1 {
		t.Errorf("the old receiver got %d requests, want 1", n)
	}
	hits := b.list()
	if len(hits) != 1 || !slices.Equal(hits[0].ids(t), []int{2, 3, 4}) || hits[0].header.Get("X-Static") != "new" {
		t.Fatalf("the new receiver got %d requests (first: %v), want one batch [2 3 4] with the new header", len(hits), hits)
	}
	lanes := next
	lanes.MaxInFlight = cfg.MaxInFlight + 1
	if _, err := s.Reconfigure(lanes, dest); err == nil || !strings.Contains(err.Error(), "max_in_flight") {
		t.Errorf("Reconfigure of max_in_flight: got %v, want an error naming it", err)
	}
}
