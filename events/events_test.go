package events

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink/webhook"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/boltstore"
)

const secret = "whsec_c2VjcmV0LWtleS1mb3ItZXZlbnRz"

// request is one request the events receiver got.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a real HTTP server that refuses (503) while down is set.
type receiver struct {
	*httptest.Server
	down atomic.Bool
	mu   sync.Mutex
	got  []request // every request, refused ones too
	ok   []request // the ones answered 200
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		req := request{header: r.Header.Clone(), body: body}
		rc.got = append(rc.got, req)
		if rc.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rc.ok = append(rc.ok, req)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) lists() (got, ok []request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.got...), append([]request(nil), rc.ok...)
}

func openStore(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runEmitter runs e until the returned stop is called.
func runEmitter(t *testing.T, e *Emitter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
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
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEventsSignedRetriedAndDurable: an event is signed with every
// secret (verified as a receiver does), keeps its webhook-id across
// retries while the endpoint is down, survives a restart in the queue,
// and arrives once the endpoint is back; Emit never waits for the
// endpoint.
func TestEventsSignedRetriedAndDurable(t *testing.T) {
	rc := newReceiver(t)
	rc.down.Store(true)
	path := filepath.Join(t.TempDir(), "state")
	store := openStore(t, path)
	cfg := config.Events{URL: rc.URL, Secrets: []string{"whsec_b2xkZXI=", secret}}
	opts := Options{Version: "test", InitialWait: 20 * time.Millisecond, MaxWait: 80 * time.Millisecond}
	e, err := New(cfg, store, opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runEmitter(t, e)
	start := time.Now()
	e.DeadLetterCreated(context.Background(), "orders", "dl_0000000000001", state.ReasonMaxAttempts, 3)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Emit took %v with the endpoint down", d)
	}
	waitFor(t, "three refused attempts", func() bool { got, _ := rc.lists(); return len(got) >= 3 })
	if e.Pending() != 1 {
		t.Errorf("pending: got %d, want 1", e.Pending())
	}
	// A restart while the endpoint is down: the event is still queued.
	stop()
	store.Close()
	store = openStore(t, path)
	defer store.Close()
	e, err = New(cfg, store, opts)
	if err != nil {
		t.Fatal(err)
	}
	runEmitter(t, e)
	rc.down.Store(false)
	waitFor(t, "the event", func() bool { _, ok := rc.lists(); return len(ok) == 1 })
	waitFor(t, "an empty queue", func() bool { return e.Pending() == 0 })

	got, ok := rc.lists()
	for i, r := range got {
		if id := r.header.Get("Webhook-Id"); id != got[0].header.Get("Webhook-Id") || id == "" {
			t.Errorf("request %d: webhook-id %q, want %q on every attempt", i+1, id, got[0].header.Get("Webhook-Id"))
		}
	}
	r := ok[0]
	if err := webhook.Verify(secret, r.header, r.body, 0, time.Now()); err != nil {
		t.Errorf("signature with the newer secret: %v", err)
	}
	if err := webhook.Verify("whsec_b2xkZXI=", r.header, r.body, 0, time.Now()); err != nil {
		t.Errorf("signature with the older secret: %v", err)
	}
	var ev struct {
		Type      string         `json:"type"`
		Timestamp time.Time      `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	if err := json.Unmarshal(r.body, &ev); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if ev.Type != DeadLetterCreated || ev.Data["sink"] != "orders" || ev.Data["dead_letter_id"] != "dl_0000000000001" ||
		ev.Data["messages"] != 3.0 || ev.Data["reason"] != "max_attempts" || time.Since(ev.Timestamp) > time.Minute {
		t.Errorf("got event %s", r.body)
	}
	if got, want := r.header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("content-type %q, want %q", got, want)
	}
}

// TestEventTypes: only the configured types are queued, and a nil
// Emitter (no events section) does nothing.
func TestEventTypes(t *testing.T) {
	rc := newReceiver(t)
	store := openStore(t, filepath.Join(t.TempDir(), "state"))
	defer store.Close()
	e, err := New(config.Events{URL: rc.URL, Types: []string{SinkResumed, BackfillFailed}}, store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e.SinkPaused(ctx, "a", "operator")
	e.SinkResumed(ctx, "a")
	e.BackfillEnded(ctx, state.Backfill{ID: "bf_1", Sink: "a", State: state.BackfillDone})
	e.BackfillEnded(ctx, state.Backfill{ID: "bf_2", Sink: "a", State: state.BackfillFailed, Error: "boom",
		Tables: []state.BackfillTable{{Table: `"public"."t"`, Rows: 5}}})
	queued, err := store.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 2 {
		t.Fatalf("got %d events queued, want 2 (sink.resumed, backfill.failed)", len(queued))
	}
	want := `{"type":"backfill.failed",`
	if string(queued[1].Body[:len(want)]) != want {
		t.Errorf("second event: %s", queued[1].Body)
	}
	var ev struct{ Data map[string]any }
	_ = json.Unmarshal(queued[1].Body, &ev)
	if ev.Data["backfill_id"] != "bf_2" || ev.Data["error"] != "boom" || ev.Data["rows"] != 5.0 || ev.Data["sink"] != "a" {
		t.Errorf("backfill.failed data: %v", ev.Data)
	}
	var none *Emitter
	none.SinkPaused(ctx, "a", "gone")
	if none.Pending() != 0 || FromContext(ctx) != nil || FromContext(NewContext(ctx, e)) != e {
		t.Error("nil emitter or context")
	}
	if e2, err := New(config.Events{}, store, Options{}); e2 != nil || err != nil {
		t.Errorf("New without a URL: got %v, %v; want nil, nil", e2, err)
	}
}

// TestCheck: a reachable endpoint passes, an unreachable one is a warning,
// a bad secret an error; nothing shows the URL's password.
func TestCheck(t *testing.T) {
	rc := newReceiver(t)
	ctx := context.Background()
	u := strings.Replace(rc.URL, "http://", "http://user:hunter2@", 1)
	summary, warning, err := Check(ctx, config.Events{URL: u, Secrets: []string{secret}})
	if err != nil || warning != "" || !strings.Contains(summary, strings.TrimPrefix(rc.URL, "http://")) || strings.Contains(summary, "hunter2") {
		t.Errorf("reachable: got %q, %q, %v", summary, warning, err)
	}
	if got, _ := rc.lists(); len(got) != 0 {
		t.Errorf("check sent %d requests, want none", len(got))
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	if _, warning, err := Check(ctx, config.Events{URL: closed.URL}); err != nil || !strings.Contains(warning, "does not answer") {
		t.Errorf("unreachable: got warning %q, error %v; want a warning", warning, err)
	}
	if _, _, err := Check(ctx, config.Events{URL: rc.URL, Secrets: []string{"whsec_hunter2!"}}); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad secret: got %v, want an error that does not show it", err)
	}
	if summary, _, err := Check(ctx, config.Events{}); err != nil || !strings.Contains(summary, "off") {
		t.Errorf("no events: got %q, %v", summary, err)
	}
}

// TestWatch: a store wrapped by Watch emits dead_letter.created for a dead
// letter added and for a full backlog's batch moved to the dead letters,
// with the stored ID, reason and count; Of finds the emitter.
func TestWatch(t *testing.T) {
	raw := openStore(t, filepath.Join(t.TempDir(), "state"))
	defer raw.Close()
	e, err := New(config.Events{URL: "http://127.0.0.1:1/events"}, raw, Options{})
	if err != nil {
		t.Fatal(err)
	}
	store := Watch(raw, e)
	if Of(store) != e || Of(raw) != nil || Watch(raw, nil) != state.Store(raw) {
		t.Fatal("Watch/Of: the emitter is not found, or a nil emitter wraps")
	}
	ctx := context.Background()
	entry := func(i int) state.Entry {
		return state.Entry{Msg: &change.Message{Action: change.Insert, Schema: "public", Table: "t", Record: []byte(`{"id":1}`),
			Pos: change.Position{CommitLSN: 0x100, Idx: uint32(i)}}}
	}
	id, err := store.DeadLetters("a").Add(ctx, state.DeadLetter{Entries: []state.Entry{entry(1), entry(2)}, Attempts: 2, Reason: state.ReasonMaxAttempts})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Backlog("b").Append(ctx, []state.Entry{entry(1), entry(2), entry(3)}); err != nil {
		t.Fatal(err)
	}
	moved, err := store.Backlog("b").MoveToDeadLetters(ctx, 2, 0, state.DeadLetter{Reason: state.ReasonBacklogFull})
	if err != nil {
		t.Fatal(err)
	}
	queued, err := raw.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf(`{"dead_letter_id":%q,"messages":2,"reason":"max_attempts","sink":"a"}`, id),
		fmt.Sprintf(`{"dead_letter_id":%q,"messages":2,"reason":"backlog_full","sink":"b"}`, moved.ID),
	}
	if len(queued) != len(want) {
		t.Fatalf("got %d events, want %d", len(queued), len(want))
	}
	for i, q := range queued {
		var ev struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(q.Body, &ev); err != nil || ev.Type != DeadLetterCreated || string(ev.Data) != want[i] {
			t.Errorf("event %d: got %s, want data %s", i, q.Body, want[i])
		}
	}
}
