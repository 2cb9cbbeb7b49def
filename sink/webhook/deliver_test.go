package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/sink"
)

func TestBatchSizeHeadersAndBody(t *testing.T) {
	rc := newReceiver(t, ok)
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 3
	cfg.BatchWait = 200 * time.Millisecond
	cfg.MaxInFlight = 1
	now := time.Unix(1764156000, 0)
	var a acks
	s := newTestSink(t, cfg, testOpts{Version: "1.2.3", Ack: a.add, Now: func() time.Time { return now }})

	var msgs []*change.Message
	for i := range 7 {
		msgs = append(msgs, msg(i, "public.t:1"))
	}
	submit(t, s, msgs...)
	run(t, s)
	waitFor(t, "7 acks", func() bool { return a.count() == 7 })
	wantAcks(t, &a, msgs...)

	hits := rc.list()
	if len(hits) != 3 {
		t.Fatalf("got %d requests, want 3 (batches of 3, 3 and 1)", len(hits))
	}
	seen := map[string]bool{}
	for i, want := range [][]*change.Message{msgs[0:3], msgs[3:6], msgs[6:7]} {
		h := hits[i]
		if wantBody := change.AppendBody(nil, want, "orders"); !bytes.Equal(h.body, wantBody) {
			t.Errorf("request %d: got body\n%s\nwant\n%s", h.n, h.body, wantBody)
		}
		var wantIDs []int
		for _, m := range want {
			wantIDs = append(wantIDs, int(m.Pos.Idx))
		}
		if got := h.ids(t); !slices.Equal(got, wantIDs) {
			t.Errorf("request %d: got ids %v, want %v", h.n, got, wantIDs)
		}
		for name, want := range map[string]string{
			"Content-Type":      "application/json",
			"User-Agent":        "walhook/1.2.3",
			"X-Static":          "yes",
			"Authorization":     "Bearer t0ken",
			"Webhook-Timestamp": "1764156000",
			"Webhook-Attempt":   "1",
			"Webhook-Signature": "",
		} {
			if got := h.header.Get(name); got != want {
				t.Errorf("request %d: header %s: got %q, want %q", h.n, name, got, want)
			}
		}
		id := h.header.Get("Webhook-Id")
		if want, _ := sink.BatchID("orders", want, nil); id != want {
			t.Errorf("request %d: webhook-id: got %q, want %q", h.n, id, want)
		}
		if !strings.HasPrefix(id, "msg_") || len(id) != 36 || seen[id] {
			t.Errorf("request %d: webhook-id %q: want msg_ and 32 hex digits, unique per batch", h.n, id)
		}
		seen[id] = true
	}
	if st := s.Stats(); st.Delivered != 7 || st.Pending != 0 || st.FailedAttempts != 0 || st.InFlight != 0 {
		t.Errorf("got stats %+v, want 7 delivered and nothing else", st)
	}
}

// TestIdleLaneSendsAtOnce: a batch does not wait for company while its
// lane is idle, whatever batch_wait says.
func TestIdleLaneSendsAtOnce(t *testing.T) {
	rc := newReceiver(t, ok)
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 100
	cfg.BatchWait = time.Hour
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add, Route: func(m *change.Message) (uint64, bool) { return 1, m.Barrier }})
	submit(t, s, msg(1, "public.t:1"))
	waitFor(t, "the ack of a lone message with batch_wait 1h", func() bool { return a.count() == 1 })
	submit(t, s, msg(2, "public.t:2"), msg(3, "public.t:3"))
	waitFor(t, "3 acks", func() bool { return a.count() == 3 })
	var ids []int
	for _, h := range rc.list() {
		ids = append(ids, h.ids(t)...)
	}
	if !slices.Equal(ids, []int{1, 2, 3}) {
		t.Errorf("got ids %v, want [1 2 3]", ids)
	}
}

// TestBusyLaneFillsBatches: while a backlog flows through a lane (its last
// batch was full), the next batch waits up to batch_wait to fill.
func TestBusyLaneFillsBatches(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		if n == 1 {
			<-release
		}
		return ok(w, r, n, nil)
	})
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 4
	cfg.BatchWait = time.Hour
	var a acks
	s := newTestSink(t, cfg, testOpts{Ack: a.add, Route: func(m *change.Message) (uint64, bool) { return 1, m.Barrier }})
	// A full batch, held by the receiver; then 2 more messages queue.
	submit(t, s, msg(0, "k"), msg(1, "k"), msg(2, "k"), msg(3, "k"))
	run(t, s)
	waitFor(t, "the first request", func() bool { return rc.count() == 1 })
	submit(t, s, msg(4, "k"), msg(5, "k"))
	close(release)
	waitFor(t, "4 acks", func() bool { return a.count() == 4 })
	// The lane is busy: the partial batch of 2 waits for company.
	submit(t, s, msg(6, "k"), msg(7, "k"))
	waitFor(t, "8 acks", func() bool { return a.count() == 8 })
	hits := rc.list()
	if len(hits) != 2 || !slices.Equal(hits[1].ids(t), []int{4, 5, 6, 7}) {
		var got [][]int
		for _, h := range hits {
			got = append(got, h.ids(t))
		}
		t.Fatalf("got batches %v, want [[0 1 2 3] [4 5 6 7]]", got)
	}
}

// TestSignedRequestsVerify: every request is signed with each of the
// sink's secrets, newest first, and verifies under each secret alone, as a
// receiver that holds only the old or only the new one checks it.
func TestSignedRequestsVerify(t *testing.T) {
	newer := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the newer secret, 32 bytes long!"))
	for _, secrets := range [][]string{{testSecret}, {newer, testSecret}} {
		t.Run(strconv.Itoa(len(secrets)), func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int, body []byte) int {
				for _, secret := range secrets {
					if err := Verify(secret, r.Header, body, 0, time.Now()); err != nil {
						http.Error(w, err.Error(), http.StatusUnauthorized)
						return http.StatusUnauthorized
					}
				}
				return http.StatusOK
			})
			cfg := testConfig(rc.URL)
			cfg.Webhook.Secrets = secrets
			cfg.MaxInFlight = 2
			var a acks
			s := start(t, cfg, testOpts{Ack: a.add})
			for i := range 20 {
				submit(t, s, msg(i, "public.t:"+strconv.Itoa(i)))
			}
			drain(t, s)
			for _, h := range rc.list() {
				if h.status != http.StatusOK {
					t.Errorf("request %d: receiver answered %d, want 200", h.n, h.status)
				}
				sigs := strings.Split(h.header.Get("Webhook-Signature"), " ")
				if len(sigs) != len(secrets) {
					t.Fatalf("request %d: got signatures %q, want %d separated by a space", h.n, sigs, len(secrets))
				}
				ts, _ := strconv.ParseInt(h.header.Get("Webhook-Timestamp"), 10, 64)
				for i, secret := range secrets {
					want, err := Sign(secret, h.header.Get("Webhook-Id"), ts, h.body)
					if err != nil {
						t.Fatal(err)
					}
					if sigs[i] != want {
						t.Errorf("request %d: signature %d: got %s, want %s (secrets in their configured order)", h.n, i, sigs[i], want)
					}
				}
			}
			if n := a.count(); n != 20 {
				t.Errorf("got %d acks, want 20", n)
			}
		})
	}
}

// failing answers the first len(statuses) requests with those statuses, and
// 200 afterwards.
func failing(statuses ...int) func(http.ResponseWriter, *http.Request, int, []byte) int {
	return func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		if n > len(statuses) {
			w.WriteHeader(http.StatusOK)
			return http.StatusOK
		}
		code := statuses[n-1]
		if code >= 300 && code < 400 {
			w.Header().Set("Location", "/elsewhere")
		}
		http.Error(w, "boom "+strconv.Itoa(n), code)
		return code
	}
}

func TestRetriesUntil2xx(t *testing.T) {
	for _, statuses := range [][]int{
		{500, 500},
		{400},
		{429, 503}, // without Retry-After: the backoff applies
		{502, 408, 404, 409},
		{302, 307},
		{301, 303, 308},
	} {
		t.Run(fmt.Sprint(statuses), func(t *testing.T) {
			rc := newReceiver(t, failing(statuses...))
			cfg := testConfig(rc.URL)
			cfg.BatchWait = 50 * time.Millisecond
			var a acks
			s := newTestSink(t, cfg, testOpts{Ack: a.add, Now: time.Now})
			msgs := []*change.Message{msg(1, "public.t:1"), msg(2, "public.t:1"), msg(3, "public.t:1")}
			submit(t, s, msgs...)
			run(t, s)
			waitFor(t, "3 acks", func() bool { return a.count() == 3 })
			wantAcks(t, &a, msgs...)

			hits := rc.list()
			if len(hits) != len(statuses)+1 {
				t.Fatalf("got %d requests, want %d", len(hits), len(statuses)+1)
			}
			id := hits[0].header.Get("Webhook-Id")
			for _, h := range hits {
				if h.path != "/" {
					t.Errorf("request %d went to %s: a redirect was followed", h.n, h.path)
				}
				if got, want := h.header.Get("Webhook-Attempt"), strconv.Itoa(h.n); got != want {
					t.Errorf("request %d: webhook-attempt %q, want %q", h.n, got, want)
				}
				if got := h.header.Get("Webhook-Id"); got != id {
					t.Errorf("request %d: webhook-id %q, want %q as on the first attempt", h.n, got, id)
				}
				if _, err := strconv.ParseInt(h.header.Get("Webhook-Timestamp"), 10, 64); err != nil {
					t.Errorf("request %d: webhook-timestamp: %v", h.n, err)
				}
				if !bytes.Equal(h.body, hits[0].body) {
					t.Errorf("request %d: body differs from the first attempt's", h.n)
				}
				if got := h.ids(t); !slices.Equal(got, []int{1, 2, 3}) {
					t.Errorf("request %d: got ids %v, want [1 2 3]", h.n, got)
				}
			}
			st := s.Stats()
			if st.FailedAttempts != uint64(len(statuses)) || st.Delivered != 3 {
				t.Errorf("got stats %+v, want %d failed attempts and 3 delivered", st, len(statuses))
			}
		})
	}
}

// TestRetryAfterIsHonoured: a 429 or 503 with Retry-After, in seconds or as
// an HTTP-date, delays the next attempt by that much rather than the
// backoff's 10ms.
func TestRetryAfterIsHonoured(t *testing.T) {
	now := time.Date(2026, 11, 26, 11, 20, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		status int
		value  string
	}{
		{"429 seconds", http.StatusTooManyRequests, "1"},
		{"503 date", http.StatusServiceUnavailable, now.Add(time.Second).Format(http.TimeFormat)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
				if n == 1 {
					w.Header().Set("Retry-After", tc.value)
					w.WriteHeader(tc.status)
					return tc.status
				}
				return http.StatusOK
			})
			cfg := testConfig(rc.URL)
			cfg.Retry.Max = 5 * time.Second
			var a acks
			// The sink's clock stands still, so the date is exactly 1s ahead.
			s := start(t, cfg, testOpts{Ack: a.add, Now: func() time.Time { return now }})
			submit(t, s, msg(1, "public.t:1"))
			waitFor(t, "1 ack", func() bool { return a.count() == 1 })
			hits := rc.list()
			if len(hits) != 2 {
				t.Fatalf("got %d requests, want 2", len(hits))
			}
			if gap := hits[1].at.Sub(hits[0].at); gap < time.Second {
				t.Errorf("second attempt came %s after the first, want at least 1s (Retry-After: %s)", gap, tc.value)
			}
		})
	}
}

func TestRetryAfterIsCappedAtRetryMax(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		if n == 1 {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	cfg := testConfig(rc.URL)
	cfg.Retry.Max = 20 * time.Millisecond
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})
	submit(t, s, msg(1, "public.t:1"))
	waitFor(t, "1 ack", func() bool { return a.count() == 1 })
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 11, 26, 11, 20, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"1", time.Second},
		{" 120 ", 2 * time.Minute},
		{"-1", 0},
		{"1.5", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Format(http.TimeFormat), 0},
		{now.Add(2 * time.Hour).Format(time.RFC850), 2 * time.Hour},
		{now.Add(time.Minute).Format(time.ANSIC), time.Minute},
		{"Thu, 26 Nov 2026 11:21:00 +0100", 0}, // not the GMT form HTTP dates use
		{"99999999999999999999", math.MaxUint32 * time.Second},
		{"1e3", 0},
		{"0x10", 0},
	} {
		if got := retryAfter(tc.v, now); got != tc.want {
			t.Errorf("retryAfter(%q): got %s, want %s", tc.v, got, tc.want)
		}
	}
}

func TestHangingReceiverIsAFailedAttempt(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		if n == 1 {
			<-r.Context().Done() // never answer; the client gives up
			return 0
		}
		return http.StatusOK
	})
	cfg := testConfig(rc.URL)
	cfg.Timeout = 100 * time.Millisecond
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})
	m := msg(1, "public.t:1")
	submit(t, s, m)
	waitFor(t, "1 ack", func() bool { return a.count() == 1 })
	wantAcks(t, &a, m)
	hits := rc.list()
	if len(hits) < 2 {
		t.Fatalf("got %d requests, want 2", len(hits))
	}
	// The failed attempt lasted its timeout, as the sink measured it (the
	// receiver's stamps cannot show it: on a loaded machine the first
	// request's handler ran 35 ms after it was sent, the second's at once).
	st := s.Stats()
	if took := time.Duration(st.DurationSum * float64(time.Second)); took < cfg.Timeout {
		t.Errorf("the attempts took %v in all, want at least the failed one's timeout (%s)", took, cfg.Timeout)
	}
	// The second attempt is answered at once, but on a loaded machine
	// not always within 100 ms: then it failed too, and a third went.
	if st.Attempts != 1 || st.FailedAttempts < 1 {
		t.Errorf("got %d failed attempts and %d that succeeded, want at least one failed and one that succeeded", st.FailedAttempts, st.Attempts)
	}
}

func TestBrokenConnectionIsRetried(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(map[bool]string{false: "closed", true: "reset"}[reset], func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
				if n > 1 {
					return http.StatusOK
				}
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return 0
				}
				if tcp, ok := conn.(*net.TCPConn); ok && reset {
					_ = tcp.SetLinger(0) // close with RST
				}
				_ = conn.Close()
				return 0
			})
			var a acks
			s := start(t, testConfig(rc.URL), testOpts{Ack: a.add})
			m := msg(1, "public.t:1")
			submit(t, s, m)
			waitFor(t, "1 ack", func() bool { return a.count() == 1 })
			wantAcks(t, &a, m)
			if n := rc.count(); n != 2 {
				t.Errorf("got %d requests, want 2", n)
			}
		})
	}
}

func TestReceiverDownIsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	var a acks
	s := start(t, testConfig("http://"+addr+"/hooks"), testOpts{Ack: a.add})
	m := msg(1, "public.t:1")
	submit(t, s, m)
	waitFor(t, "2 refused attempts", func() bool { return s.Stats().FailedAttempts >= 2 })

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	waitFor(t, "1 ack", func() bool { return a.count() == 1 })
	wantAcks(t, &a, m)
}

func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		http.Error(w, "boom", http.StatusInternalServerError)
		return http.StatusInternalServerError
	})
	cfg := testConfig(rc.URL)
	cfg.Retry.MaxAttempts = 3
	cfg.BatchWait = 50 * time.Millisecond
	var (
		a   acks
		mu  sync.Mutex
		got []*change.Message
	)
	var last sink.DeadLetter
	s := newTestSink(t, cfg, testOpts{Ack: a.add, DeadLetter: func(ctx context.Context, d sink.DeadLetter) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, d.Messages...)
		last = d
		return nil
	}})
	msgs := []*change.Message{msg(1, "public.t:1"), msg(2, "public.t:1"), msg(3, "public.t:1")}
	submit(t, s, msgs...)
	run(t, s)
	drain(t, s)
	wantAcks(t, &a, msgs...)
	if n := rc.count(); n != 3 {
		t.Errorf("got %d requests, want 3 (max_attempts)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, msgs) {
		t.Errorf("dead-letter store got %v, want %v", got, msgs)
	}
	if last.LastStatus != 500 || !strings.Contains(last.LastError, "boom") || last.Attempts != 3 || last.Reason != "max_attempts" ||
		last.FirstAttempt.IsZero() || last.LastAttempt.Before(last.FirstAttempt) {
		t.Errorf("dead-letter store got %+v, want 3 attempts, status 500 and the body", last)
	}
	if st := s.Stats(); st.DeadLettered != 3 || st.Delivered != 0 || st.FailedAttempts != 3 {
		t.Errorf("got stats %+v, want 3 dead-lettered, 3 failed attempts", st)
	}
}

func TestDeadLetterFailureKeepsRetrying(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		w.WriteHeader(http.StatusBadGateway)
		return http.StatusBadGateway
	})
	cfg := testConfig(rc.URL)
	cfg.Retry.MaxAttempts = 2
	var (
		a     acks
		calls int
	)
	s := start(t, cfg, testOpts{Ack: a.add, DeadLetter: func(context.Context, sink.DeadLetter) error {
		calls++ // one lane: no concurrent calls
		if calls == 1 {
			return errors.New("dead-letter store is full")
		}
		return nil
	}})
	m := msg(1, "public.t:1")
	submit(t, s, m)
	drain(t, s)
	wantAcks(t, &a, m)
	if n := rc.count(); n != 3 {
		t.Errorf("got %d requests, want 3 (2, a failed dead-letter, 1 more)", n)
	}
	if calls != 2 {
		t.Errorf("got %d dead-letter calls, want 2", calls)
	}
}

func TestMaxAttemptsWithoutDeadLetterRetriesForever(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		w.WriteHeader(http.StatusInternalServerError)
		return http.StatusInternalServerError
	})
	cfg := testConfig(rc.URL)
	cfg.Retry.MaxAttempts = 2
	cfg.Retry.Max = 10 * time.Millisecond
	var a acks
	s := start(t, cfg, testOpts{Ack: a.add})
	submit(t, s, msg(1, "public.t:1"))
	waitFor(t, "5 attempts", func() bool { return rc.count() >= 5 })
	if n := a.count(); n != 0 {
		t.Errorf("got %d acks, want 0: nothing was delivered", n)
	}
	if st := s.Stats(); st.Pending != 1 {
		t.Errorf("got %d queued, want 1", st.Pending)
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&StatusError{StatusCode: 500}, true},
		{fmt.Errorf("deliver: %w", &StatusError{StatusCode: 400}), true},
		{fmt.Errorf("%w (timeout 30s)", ErrTimeout), true},
		{errors.New("post: connection reset by peer"), true},
		{context.Canceled, false},
		{fmt.Errorf("post: %w", context.DeadlineExceeded), false},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v): got %t, want %t", tc.err, got, tc.want)
		}
	}
}

// TestDeadLetterAfterMaxLag: with max_lag, a failing batch whose oldest
// message is older than that goes to the dead letters at its next failure;
// a younger one is retried until it is that old; a batch that succeeds is
// delivered however old.
func TestDeadLetterAfterMaxLag(t *testing.T) {
	rc, failing := downReceiver(t)
	cfg := testConfig(rc.URL)
	cfg.MaxLag = 300 * time.Millisecond
	cfg.MaxInFlight = 1
	var (
		a    acks
		mu   sync.Mutex
		dead []sink.DeadLetter
	)
	s := start(t, cfg, testOpts{Ack: a.add, DeadLetter: func(ctx context.Context, d sink.DeadLetter) error {
		mu.Lock()
		defer mu.Unlock()
		dead = append(dead, d)
		return nil
	}})

	// Committed a minute ago: dead-lettered at its first failure.
	old := msg(1, "public.t:1")
	old.CommitTime = time.Now().Add(-time.Minute)
	submit(t, s, old)
	waitFor(t, "the old batch acknowledged", func() bool { return len(a.list()) == 1 })
	wantAcks(t, &a, old)
	mu.Lock()
	if len(dead) != 1 || dead[0].Reason != "max_lag" || dead[0].Attempts != 1 || dead[0].Messages[0] != old || dead[0].LastStatus != 503 {
		t.Fatalf("dead letters %+v, want the old batch after 1 attempt, reason max_lag", dead)
	}
	mu.Unlock()

	// Committed now: retried until it is 300 ms old, then dead-lettered.
	young := msg(2, "public.t:1")
	young.CommitTime = time.Now()
	before := rc.count()
	submit(t, s, young)
	waitFor(t, "the young batch acknowledged", func() bool { return len(a.list()) == 2 })
	wantAcks(t, &a, old, young)
	mu.Lock()
	d := dead[len(dead)-1]
	mu.Unlock()
	if len(dead) != 2 || d.Reason != "max_lag" || d.Attempts < 2 || d.LastAttempt.Sub(young.CommitTime) < cfg.MaxLag {
		t.Fatalf("dead letter %+v, want the young batch after several attempts, its last one past max_lag", d)
	}
	if n := rc.count() - before; n != d.Attempts {
		t.Errorf("the receiver saw %d requests for the young batch, the dead letter says %d attempts", n, d.Attempts)
	}

	// An old batch that gets through is delivered, not dead-lettered.
	failing.Store(false)
	late := msg(3, "public.t:1")
	late.CommitTime = time.Now().Add(-time.Hour)
	submit(t, s, late)
	waitFor(t, "the late batch acknowledged", func() bool { return len(a.list()) == 3 })
	wantAcks(t, &a, old, young, late)
	mu.Lock()
	defer mu.Unlock()
	if len(dead) != 2 {
		t.Errorf("got %d dead letters, want 2: the late batch was delivered", len(dead))
	}
	if st := s.Stats(); st.Delivered != 1 || st.DeadLettered != 2 {
		t.Errorf("stats %+v, want 1 delivered and 2 dead-lettered", st)
	}
}

// TestDeadLetterAfterMaxLagBytes: with max_lag as a size, a failing batch
// whose oldest message is more than that much WAL behind the server's WAL
// end goes to the dead letters at its next failure; one closer to the end
// is retried until the WAL end has moved far enough past it.
func TestDeadLetterAfterMaxLagBytes(t *testing.T) {
	rc, _ := downReceiver(t)
	cfg := testConfig(rc.URL)
	cfg.MaxLagBytes = 1 << 20
	cfg.MaxInFlight = 1
	var walEnd atomic.Uint64
	var (
		a    acks
		mu   sync.Mutex
		dead []sink.DeadLetter
	)
	s := start(t, cfg, testOpts{Ack: a.add, WALEnd: func() pglogrepl.LSN { return pglogrepl.LSN(walEnd.Load()) },
		DeadLetter: func(ctx context.Context, d sink.DeadLetter) error {
			mu.Lock()
			defer mu.Unlock()
			dead = append(dead, d)
			return nil
		}})

	// 2 MiB of WAL behind the end: dead-lettered at its first failure,
	// however recent its commit.
	old := msg(1, "public.t:1")
	old.CommitTime = time.Now()
	walEnd.Store(uint64(old.Pos.CommitLSN) + 2<<20)
	submit(t, s, old)
	waitFor(t, "the far batch acknowledged", func() bool { return len(a.list()) == 1 })
	mu.Lock()
	if len(dead) != 1 || dead[0].Reason != "max_lag" || dead[0].Attempts != 1 {
		t.Fatalf("dead letters %+v, want the far batch after 1 attempt, reason max_lag", dead)
	}
	mu.Unlock()

	// Close to the end: retried while the end stays, dead-lettered once it
	// moved past max_lag.
	near := msg(2, "public.t:1")
	near.Pos.CommitLSN = pglogrepl.LSN(walEnd.Load()) - 1000
	submit(t, s, near)
	before := rc.count()
	waitFor(t, "three attempts at the near batch", func() bool { return rc.count()-before >= 3 })
	if n := len(a.list()); n != 1 {
		t.Fatalf("the near batch was acknowledged (%d acks) while its WAL lag was under max_lag", n)
	}
	walEnd.Add(2 << 20)
	waitFor(t, "the near batch acknowledged", func() bool { return len(a.list()) == 2 })
	wantAcks(t, &a, old, near)
	mu.Lock()
	defer mu.Unlock()
	if len(dead) != 2 || dead[1].Reason != "max_lag" || dead[1].Attempts < 3 {
		t.Fatalf("dead letters %+v, want the near batch after 3 or more attempts, reason max_lag", dead)
	}
}

// downReceiver answers 503 while failing is set, 200 otherwise; it starts
// failing.
func downReceiver(t *testing.T) (rc *receiver, failing *atomic.Bool) {
	failing = new(atomic.Bool)
	failing.Store(true)
	rc = newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	return rc, failing
}
