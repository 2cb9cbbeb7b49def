package webhook

import (
	"context"
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
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
	s := start(t, cfg, Options{Ack: a.add})

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
		lane := s.laneOf(msgs[p.Idx])
		lanes[lane] = true
		if prev, ok := last[lane]; ok && !prev.Less(p) {
			t.Errorf("lane %d acknowledged %s after %s", lane, p, prev)
		}
		last[lane] = p
	}
	if len(lanes) != cfg.MaxInFlight {
		t.Errorf("messages used %d lanes, want all %d", len(lanes), cfg.MaxInFlight)
	}
	if st := s.Stats(); st.FailedAttempts == 0 || st.Delivered != n || st.Queued != 0 {
		t.Errorf("got stats %+v, want some failed attempts, %d delivered, none queued", st, n)
	}
}

func TestSubmitBlocksWhenLaneQueueIsFull(t *testing.T) {
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) int {
		arrived <- struct{}{}
		select {
		case <-release:
			return http.StatusOK
		case <-r.Context().Done():
			return 0
		}
	})
	cfg := testConfig(rc.URL)
	cfg.MaxInFlight = 1
	cfg.BatchSize = 2
	cfg.BatchWait = time.Hour
	var a acks
	s := start(t, cfg, Options{Ack: a.add})

	// The first batch is full at once and its request blocks.
	submit(t, s, msg(0, "k"), msg(1, "k"))
	<-arrived
	// The lane's queue holds 2*batch_size messages...
	submit(t, s, msg(2, "k"), msg(3, "k"), msg(4, "k"), msg(5, "k"))
	// ...and then Submit blocks.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Submit(ctx, msg(6, "k")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit to a full lane: got %v, want context.DeadlineExceeded", err)
	}
	if st := s.Stats(); st.Queued != 6 || st.InFlight != 1 {
		t.Errorf("got stats %+v, want 6 queued and 1 batch in flight", st)
	}

	close(release)
	drain(t, s)
	wantAcks(t, &a, msg(0, "k"), msg(1, "k"), msg(2, "k"), msg(3, "k"), msg(4, "k"), msg(5, "k"))
}

func TestDrainFlushesPartialBatches(t *testing.T) {
	rc := newReceiver(t, ok)
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 100
	cfg.BatchWait = time.Hour
	var a acks
	s := start(t, cfg, Options{Ack: a.add})
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
	if err := s.Submit(context.Background(), msg(10, "public.t:10")); !errors.Is(err, ErrDraining) {
		t.Errorf("Submit after Drain: got %v, want ErrDraining", err)
	}
	drain(t, s) // again: nothing left, at once
}

func TestDrainDeadlineWithFailingReceiver(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) int {
		w.WriteHeader(http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	})
	var a acks
	s := start(t, testConfig(rc.URL), Options{Ack: a.add})
	submit(t, s, msg(1, "public.t:1"), msg(2, "public.t:2"), msg(3, "public.t:3"))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := s.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	if n := a.count(); n != 0 {
		t.Errorf("got %d acks, want 0", n)
	}
	if st := s.Stats(); st.Queued != 3 || st.FailedAttempts == 0 {
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
	s, err := New(cfg, Options{Ack: a.add, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
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
	if err := s.Submit(context.Background(), msg(2, "public.t:1")); !errors.Is(err, ErrStopped) {
		t.Errorf("Submit after Run: got %v, want ErrStopped", err)
	}
	if err := s.Drain(context.Background()); !errors.Is(err, ErrStopped) {
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
		{"no url", func(c *config.Sink) { c.URL = "" }, "url is missing"},
		{"bad url", func(c *config.Sink) { c.URL = "http://user:pa ss@[::1" }, "not a valid URL"},
		{"ftp", func(c *config.Sink) { c.URL = "ftp://example.com/x" }, `scheme "ftp"`},
		{"no host", func(c *config.Sink) { c.URL = "http:///x" }, "no host"},
		{"batch size", func(c *config.Sink) { c.BatchSize = 0 }, "batch_size"},
		{"batch wait", func(c *config.Sink) { c.BatchWait = -time.Second }, "batch_wait"},
		{"lanes", func(c *config.Sink) { c.MaxInFlight = 0 }, "max_in_flight"},
		{"timeout", func(c *config.Sink) { c.Timeout = 0 }, "timeout"},
		{"retry initial", func(c *config.Sink) { c.Retry.Initial = 0 }, "retry.initial"},
		{"retry max", func(c *config.Sink) { c.Retry.Max = time.Millisecond }, "retry.max"},
		{"max attempts", func(c *config.Sink) { c.Retry.MaxAttempts = -1 }, "retry.max_attempts"},
		{"secret", func(c *config.Sink) { c.Secret = "hunter2" }, "secret"},
		{"header name", func(c *config.Sink) { c.Headers = map[string]string{"Bad Name": "x"} }, "header name"},
		{"header value", func(c *config.Sink) { c.Headers = map[string]string{"X-Token": "s3cret\r\nEvil: 1"} }, "line break"},
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

func TestLaneOfIsFNV1a(t *testing.T) {
	s, err := New(testConfig("http://127.0.0.1:1/"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "public.t:1", "public.orders:42", "ünïcode"} {
		h := fnv.New64a()
		h.Write([]byte(key))
		want := int(h.Sum64() % uint64(len(s.lanes)))
		if got := s.laneOf(&change.Message{Key: key}); got != want {
			t.Errorf("laneOf(%q): got %d, want %d", key, got, want)
		}
	}
}

func BenchmarkSubmitAndDeliver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.BatchSize = 100
	s, err := New(cfg, Options{})
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
		if err := s.Submit(ctx, msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Drain(context.Background()); err != nil {
		b.Fatal(err)
	}
	cancel()
	<-done
}
