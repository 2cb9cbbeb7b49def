package webhook

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
)

// TestGonePausesUntilResume: a 410 pauses the whole sink: no lane starts an
// attempt while it is paused, Paused says why, and Resume delivers
// everything where it stopped, in order, with nothing lost.
func TestGonePausesUntilResume(t *testing.T) {
	var gone sync.Once
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) int {
		status := http.StatusOK
		if bytes.Contains(body, []byte(`{"id":3}`)) {
			gone.Do(func() { status = http.StatusGone }) // the first time message 3 comes
		}
		if status == http.StatusGone {
			http.Error(w, "this endpoint was removed", status)
			return status
		}
		return ok(w, r, n, nil)
	})
	cfg := testConfig(rc.URL)
	cfg.BatchSize = 2
	cfg.MaxInFlight = 2
	var a acks
	// Key a travels in lane 0, key b in lane 1.
	route := func(m *change.Message) (uint64, bool) { return map[string]uint64{"a": 0, "b": 1}[m.Key], false }
	s := start(t, cfg, testOpts{Ack: a.add, Route: route})

	submit(t, s, msg(1, "a"), msg(2, "a"), msg(3, "a"), msg(4, "a"))
	waitFor(t, "the sink to pause", func() bool { paused, _ := s.Paused(); return paused })
	if _, reason := s.Paused(); reason != sink.PausedGone {
		t.Errorf("Paused: got reason %q, want %q", reason, sink.PausedGone)
	}
	// Lane 0 sent nothing after its 410 and lane 1 had nothing to send, so
	// no request is in flight. More for the paused lane, and some for the
	// other one.
	requests, acked := rc.count(), a.count()
	submit(t, s, msg(5, "b"), msg(6, "b"), msg(7, "a"))
	time.Sleep(10 * cfg.Retry.Max) // a few retry intervals: no attempt may start
	if n := rc.count(); n != requests {
		t.Fatalf("got %d requests while paused, want %d (none after the 410)", n, requests)
	}
	if n := a.count(); n != acked || n > 2 {
		t.Fatalf("got %d acks while paused, want %d, what came before message 3", n, acked)
	}

	s.Resume()
	drain(t, s)
	if paused, reason := s.Paused(); paused {
		t.Errorf("Paused after Resume: got true (%s), want false", reason)
	}
	perKey := map[string][]int{}
	for _, p := range a.list() {
		key := "a"
		if p.Idx == 5 || p.Idx == 6 {
			key = "b"
		}
		perKey[key] = append(perKey[key], int(p.Idx))
	}
	if !slices.Equal(perKey["a"], []int{1, 2, 3, 4, 7}) || !slices.Equal(perKey["b"], []int{5, 6}) {
		t.Errorf("got acks %v, want a: [1 2 3 4 7] and b: [5 6], each in order", perKey)
	}
	hits := rc.list()
	var accepted []int
	goneID, resent := "", false
	for _, h := range hits {
		id := h.header.Get("Webhook-Id")
		switch {
		case h.status == http.StatusGone:
			goneID = id
		case id == goneID && !resent:
			// The batch that got the 410, again after Resume.
			resent = true
			if got := h.header.Get("Webhook-Attempt"); got != "2" {
				t.Errorf("request %d (the batch after Resume): webhook-attempt %q, want 2", h.n, got)
			}
		}
		if h.status == http.StatusOK {
			accepted = append(accepted, h.ids(t)...)
		}
	}
	if goneID == "" || !resent {
		t.Errorf("got the 410 batch %q resent %t, want it sent again after Resume", goneID, resent)
	}
	slices.Sort(accepted)
	if !slices.Equal(accepted, []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("receiver accepted %v, want each of 1..7 once", accepted)
	}
}

// TestRedirectIsAFailure: a 3xx is a failed attempt and its Location is
// never visited; the dead letter keeps the status.
func TestRedirectIsAFailure(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int, _ []byte) int {
				if r.URL.Path == "/elsewhere" {
					return ok(w, r, 0, nil)
				}
				http.Redirect(w, r, "/elsewhere", code)
				return code
			})
			cfg := testConfig(rc.URL)
			cfg.Retry.MaxAttempts = 2
			var (
				mu   sync.Mutex
				dead []sink.DeadLetter
			)
			s := start(t, cfg, testOpts{DeadLetter: func(_ context.Context, d sink.DeadLetter) error {
				mu.Lock()
				dead = append(dead, d)
				mu.Unlock()
				return nil
			}})
			submit(t, s, msg(1, "public.t:1"))
			drain(t, s)
			for _, h := range rc.list() {
				if h.path != "/" {
					t.Errorf("request %d went to %s: the redirect was followed", h.n, h.path)
				}
			}
			if n := rc.count(); n != 2 {
				t.Errorf("got %d requests, want 2 (max_attempts)", n)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(dead) != 1 || dead[0].LastStatus != code || !strings.Contains(dead[0].LastError, strconv.Itoa(code)+" "+http.StatusText(code)) {
				t.Errorf("got dead letters %+v, want one with status %d", dead, code)
			}
		})
	}
}

// deliverOnce makes one attempt at a one-message batch through a sink with
// cfg, outside any pipeline.
func deliverOnce(t *testing.T, cfg config.Sink, opts Options) error {
	t.Helper()
	dest, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { dest.Close() })
	b := &sink.Batch{ID: "msg_1", Attempt: 1, Messages: []*change.Message{msg(1, "public.t:1")}, Sink: "orders"}
	return dest.Deliver(context.Background(), b)
}

// TestLongErrorBodyIsTruncated: a failed attempt's error quotes at most 512
// bytes of the response body, valid UTF-8 cut between characters, and says
// it was cut.
func TestLongErrorBodyIsTruncated(t *testing.T) {
	// One ASCII byte, then 2-byte characters: byte 512 falls inside one.
	long := "x" + strings.Repeat("é", 100<<10)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) int {
		http.Error(w, long, http.StatusInternalServerError)
		return http.StatusInternalServerError
	})
	err := deliverOnce(t, testConfig(rc.URL), Options{})
	var serr *StatusError
	if !errors.As(err, &serr) {
		t.Fatalf("got %v, want a *StatusError", err)
	}
	if len(serr.Body) > 512 || len(serr.Body) < 500 || !utf8.ValidString(serr.Body) || !strings.HasPrefix(long, serr.Body) {
		t.Errorf("got body excerpt of %d bytes (valid UTF-8 %t), want the start of the body, at most 512 bytes cut between characters",
			len(serr.Body), utf8.ValidString(serr.Body))
	}
	if !serr.Truncated {
		t.Error("Truncated: got false, want true")
	}
	want := "receiver answered 500 Internal Server Error: " + strconv.Quote(serr.Body) + " (truncated)"
	if got := err.Error(); got != want {
		t.Errorf("got error %.80q..., want %.80q...", got, want)
	}
}

func TestExcerpt(t *testing.T) {
	for _, tc := range []struct {
		in        string
		limit     int
		want      string
		truncated bool
	}{
		{"", 512, "", false},
		{"short", 512, "short", false},
		{"abcdef", 3, "abc", true},
		{"aé", 2, "a", true}, // é is 2 bytes: not cut in half
		{"aé", 3, "aé", false},
		{"a\xffb", 512, "a\uFFFDb", false},
		{strings.Repeat("a\xff", 300), 512, strings.Repeat("a\uFFFD", 128), true},
		{"line\nbreak\x00", 512, "line\nbreak\x00", false},
	} {
		got, truncated := excerpt([]byte(tc.in), tc.limit)
		if got != tc.want || truncated != tc.truncated {
			t.Errorf("excerpt(%q, %d): got %q, %t; want %q, %t", tc.in, tc.limit, got, truncated, tc.want, tc.truncated)
		}
		if len(got) > tc.limit || !utf8.ValidString(got) {
			t.Errorf("excerpt(%q, %d): got %d bytes (valid UTF-8 %t), want at most %d valid", tc.in, tc.limit, len(got), utf8.ValidString(got), tc.limit)
		}
	}
}

// TestRetryAfterHeader: what a receiver's Retry-After makes of the wait,
// through a real response.
func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 11, 26, 11, 20, 0, 0, time.UTC)
	for _, tc := range []struct {
		status int
		value  string
		want   time.Duration
	}{
		{429, "120", 2 * time.Minute},
		{503, "7", 7 * time.Second},
		{503, now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{429, now.Add(-time.Hour).Format(http.TimeFormat), 0}, // past: the backoff applies
		{503, "tomorrow", 0},
		{503, "", 0},
		{500, "120", 0}, // only 429 and 503 carry a wait
		{410, "120", 0},
	} {
		t.Run(strconv.Itoa(tc.status)+" "+tc.value, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) int {
				if tc.value != "" {
					w.Header().Set("Retry-After", tc.value)
				}
				w.WriteHeader(tc.status)
				return tc.status
			})
			err := deliverOnce(t, testConfig(rc.URL), Options{Now: func() time.Time { return now }})
			if got := sink.RetryAfter(err); got != tc.want {
				t.Errorf("got wait %s, want %s (error %v)", got, tc.want, err)
			}
		})
	}
}

// TestKeepAlive: batches after batches over one lane go through one TCP
// connection, failed attempts included; several lanes open at most one
// connection each.
func TestKeepAlive(t *testing.T) {
	t.Run("one lane", func(t *testing.T) {
		rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, _ []byte) int {
			if n%5 == 0 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return http.StatusServiceUnavailable
			}
			return ok(w, r, n, nil)
		})
		cfg := testConfig(rc.URL)
		cfg.MaxInFlight = 1
		var a acks
		s := start(t, cfg, testOpts{Ack: a.add})
		const batches = 30
		for i := range batches {
			submit(t, s, msg(i, "public.t:1"))
			waitFor(t, "an ack", func() bool { return a.count() == i+1 })
		}
		if n := rc.count(); n < batches {
			t.Fatalf("got %d requests, want at least %d", n, batches)
		}
		if n := rc.conns.Load(); n != 1 {
			t.Errorf("got %d connections for %d requests over one lane, want 1", n, rc.count())
		}
	})
	t.Run("four lanes", func(t *testing.T) {
		rc := newReceiver(t, ok)
		cfg := testConfig(rc.URL)
		cfg.MaxInFlight = 4
		cfg.BatchSize = 2
		cfg.Timeout = 20 * time.Second // an attempt that times out gives its connection up: not under test here
		var a acks
		s := start(t, cfg, testOpts{Ack: a.add})
		for i := range 200 {
			submit(t, s, msg(i, "public.t:"+strconv.Itoa(i%20)))
		}
		drain(t, s)
		if n := rc.conns.Load(); n < 1 || n > 4 {
			t.Errorf("got %d connections for %d requests over 4 lanes, want 1 to 4", n, rc.count())
		}
	})
}
