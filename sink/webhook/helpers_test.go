package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
)

const testLSN = 0x16B3748

var testCommitTime = time.Date(2026, 11, 26, 11, 20, 0, 123456000, time.UTC)

// msg is the i-th test message: record {"id":i} at position testLSN:i.
func msg(i int, key string) *change.Message {
	return &change.Message{
		Action:     change.Insert,
		Schema:     "public",
		Table:      "t",
		Record:     []byte(`{"id":` + strconv.Itoa(i) + `}`),
		Key:        key,
		Pos:        change.Position{CommitLSN: testLSN, Idx: uint32(i)},
		CommitTime: testCommitTime,
		XID:        771,
	}
}

// hit is one request a receiver got.
type hit struct {
	n      int // 1-based, in arrival order
	at     time.Time
	path   string
	header http.Header
	body   []byte
	status int // what the receiver answered; 0 if it wrote nothing
}

// ids returns the record ids in the hit's body, in order.
func (h hit) ids(t *testing.T) []int {
	t.Helper()
	var b struct {
		Data []struct {
			Record struct {
				ID int `json:"id"`
			} `json:"record"`
			Metadata struct {
				Sink           string `json:"sink"`
				IdempotencyKey string `json:"idempotency_key"`
			} `json:"metadata"`
		} `json:"data"`
	}
	if err := json.Unmarshal(h.body, &b); err != nil {
		t.Fatalf("request %d: body is not valid JSON: %v\n%s", h.n, err, h.body)
	}
	ids := make([]int, len(b.Data))
	for i, d := range b.Data {
		ids[i] = d.Record.ID
		if d.Metadata.Sink != "orders" {
			t.Errorf("request %d: metadata.sink = %q, want %q", h.n, d.Metadata.Sink, "orders")
		}
	}
	return ids
}

// receiver is a real HTTP server on loopback that records every request and
// lets answer respond; answer returns the status it wrote.
type receiver struct {
	*httptest.Server
	conns atomic.Int64 // TCP connections accepted
	mu    sync.Mutex
	hits  []hit
}

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int, body []byte) int) *receiver {
	t.Helper()
	return startReceiver(t, answer, nil)
}

// startReceiver is newReceiver, over TLS with these settings when tlsConfig
// is not nil.
func startReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int, body []byte) int, tlsConfig *tls.Config) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return // the client abandoned the request: a hard stop
		}
		rc.mu.Lock()
		n := len(rc.hits) + 1
		rc.hits = append(rc.hits, hit{n: n, at: at, path: r.URL.Path, header: r.Header.Clone(), body: body})
		rc.mu.Unlock()
		status := answer(w, r, n, body)
		rc.mu.Lock()
		rc.hits[n-1].status = status
		rc.mu.Unlock()
	}))
	rc.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			rc.conns.Add(1)
		}
	}
	if tlsConfig != nil {
		rc.TLS = tlsConfig
		rc.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what tests expect
		rc.StartTLS()
	} else {
		rc.Start()
	}
	t.Cleanup(rc.Close)
	return rc
}

// ok answers every request with 200.
func ok(w http.ResponseWriter, _ *http.Request, _ int, _ []byte) int {
	w.WriteHeader(http.StatusOK)
	return http.StatusOK
}

func (rc *receiver) list() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]hit, len(rc.hits))
	copy(out, rc.hits)
	return out
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.hits)
}

// acks records the positions a sink acknowledged.
type acks struct {
	mu  sync.Mutex
	pos []change.Position
}

func (a *acks) add(ps []change.Position) {
	a.mu.Lock()
	a.pos = append(a.pos, ps...)
	a.mu.Unlock()
}

func (a *acks) list() []change.Position {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]change.Position, len(a.pos))
	copy(out, a.pos)
	return out
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pos)
}

// testConfig is a sink on url with short waits.
func testConfig(url string) config.Sink {
	return config.Sink{
		Name:        "orders",
		Type:        "webhook",
		BatchSize:   10,
		BatchWait:   5 * time.Millisecond,
		MaxInFlight: 4,
		Timeout:     2 * time.Second,
		Retry:       config.Retry{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Webhook: config.Webhook{
			URL:     url,
			Headers: map[string]string{"X-Static": "yes", "Authorization": "Bearer t0ken"},
		},
	}
}

// testLogger writes to the test's output, shown with -v or on failure.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testOpts are what a test sets of a pipeline and its webhook
// destination.
type testOpts struct {
	Version    string
	Ack        func([]change.Position)
	Now        func() time.Time
	Route      func(*change.Message) (uint64, bool)
	DeadLetter func(context.Context, sink.DeadLetter) error
	Logger     *slog.Logger
	WALEnd     func() pglogrepl.LSN
	Allowed    func() error
}

// testSink is a pipeline with a webhook destination, fed as the relay
// feeds it: each message routed by its key (or testOpts.Route).
type testSink struct {
	*sink.Pipeline
	dest  *Sink
	route func(*change.Message) (uint64, bool)
}

func (s *testSink) Submit(_ context.Context, m *change.Message) error {
	group, barrier := s.route(m)
	return s.Pipeline.Submit(m, group, barrier)
}

// lane is the index of m's lane.
func (s *testSink) lane(m *change.Message, lanes int) int {
	group, _ := s.route(m)
	return int(group % uint64(lanes))
}

// newTestSink builds a pipeline and its destination without running it.
func newTestSink(t *testing.T, cfg config.Sink, opts testOpts) *testSink {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	dest, err := New(cfg, Options{Version: opts.Version, Logger: opts.Logger, Now: opts.Now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p, err := sink.New(cfg, dest, sink.Options{Logger: opts.Logger, Ack: opts.Ack, DeadLetter: opts.DeadLetter, WALEnd: opts.WALEnd, Allowed: opts.Allowed})
	if err != nil {
		t.Fatalf("sink.New: %v", err)
	}
	route := opts.Route
	if route == nil {
		route = func(m *change.Message) (uint64, bool) { return sink.HashKey(m.Key), m.Barrier }
	}
	t.Cleanup(func() { dest.Close() })
	return &testSink{Pipeline: p, dest: dest, route: route}
}

// start builds a sink and runs it until the test ends.
func start(t *testing.T, cfg config.Sink, opts testOpts) *testSink {
	t.Helper()
	s := newTestSink(t, cfg, opts)
	run(t, s)
	return s
}

// run runs s until the test ends; the cleanup checks that Run returns
// promptly once its context ends. Messages submitted before run wait in
// their lanes, so the first batches are as full as they can be rather than
// whatever an idle lane found when it woke.
func run(t *testing.T, s *testSink) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of its context ending")
		}
	})
}

// submit submits msgs, failing the test on an error. Several messages are
// submitted while the pipeline is paused, so that lanes batch them as if
// they had arrived at once (an idle lane sends what it has without waiting).
func submit(t *testing.T, s *testSink, msgs ...*change.Message) {
	t.Helper()
	if len(msgs) > 1 {
		if paused, _ := s.Paused(); !paused {
			s.Pause("submitting a test's messages")
			defer s.Resume()
		}
	}
	for _, m := range msgs {
		if err := s.Submit(context.Background(), m); err != nil {
			t.Fatalf("Submit %s: %v", m.Pos, err)
		}
	}
}

// drain drains s, failing the test on an error.
func drain(t *testing.T, s *testSink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// wantAcks checks that exactly msgs were acknowledged, in this order.
func wantAcks(t *testing.T, a *acks, msgs ...*change.Message) {
	t.Helper()
	got := a.list()
	if len(got) != len(msgs) {
		t.Fatalf("got %d acks %v, want %d", len(got), got, len(msgs))
	}
	for i, m := range msgs {
		if got[i] != m.Pos {
			t.Errorf("ack %d: got %s, want %s", i, got[i], m.Pos)
		}
	}
}
