package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
	"github.com/walhook/walhook/sink/webhook"
)

const eventsSecret = "whsec_ZXZlbnRzLXNlY3JldC1mb3ItdGVzdHM="

// eventsReceiver is a real HTTP server taking walhook's events; it
// answers 503 while down is set and keeps what it took.
type eventsReceiver struct {
	*httptest.Server
	down    atomic.Bool
	refused atomic.Int64
	mu      sync.Mutex
	events  []receivedEvent
}

type receivedEvent struct {
	Type      string         `json:"type"`
	Timestamp time.Time      `json:"timestamp"`
	Data      map[string]any `json:"data"`
	verifyErr error
}

func newEventsReceiver(t *testing.T) *eventsReceiver {
	r := &eventsReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if r.down.Load() {
			r.refused.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ev receivedEvent
		if err := json.Unmarshal(body, &ev); err != nil {
			ev.Type = "bad JSON: " + string(body)
		}
		ev.verifyErr = webhook.Verify(eventsSecret, req.Header, body, 0, time.Now())
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *eventsReceiver) ofType(typ string) []receivedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedEvent
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// TestOperationalEvents: with max_attempts 2 and a receiver that refuses
// everything, every dead letter brings a dead_letter.created, signed with
// events.secret, naming the dead letter and its message count. While the
// events endpoint is down, the slot moves on all the same (the other sink
// delivers, the dead letters are made) and the events arrive once it is
// back. An operator's pause and resume bring sink.paused (reason
// operator) and sink.resumed; a backfill brings backfill.completed.
func TestOperationalEvents(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	bad := webhooktest.New(t, "")
	bad.SetFaults(webhooktest.Faults{Reject: func([]webhooktest.Message) int { return 500 }})
	good := webhooktest.New(t, "")
	evr := newEventsReceiver(t)
	evr.down.Store(true)

	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "events_e2e", "  tables: [public.t]\n",
		sinkConf{Name: "bad", URL: bad.URL, Retry: "{initial: 20ms, max: 100ms, max_attempts: 2}", Extra: "    batch_size: 1\n"},
		sinkConf{Name: "good", URL: good.URL})
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "events:\n  url: %q\n  secret: %q\n", evr.URL, eventsSecret)
	f.Close()
	addr := withAdmin(t, cfg)
	if code, out := runWalhook(t, "check", "--config", cfg); code != 0 || !strings.Contains(out, "events: "+evr.URL+",") {
		t.Errorf("check: exit %d, want 0 and the events endpoint named:\n%s", code, out)
	}
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "events_e2e", d)

	for i := 1; i <= 3; i++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1)`, i)
	}
	good.WaitCount(t, 3, 30*time.Second)
	// The slot moves past the dead-lettered rows while no event could be
	// sent: events never hold it.
	target := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "the slot past the dead-lettered rows", func() bool {
		return readSlot(t, conn, "events_e2e").confirmed >= target
	})
	var list []server.DeadLetter
	waitUntil(t, 30*time.Second, "3 dead letters", func() bool {
		code, out := runWalhook(t, "dlq", "list", "--sink", "bad", "--json", "--config", cfg)
		return code == 0 && json.Unmarshal([]byte(out), &list) == nil && len(list) == 3
	})
	waitUntil(t, 30*time.Second, "a refused event", func() bool { return evr.refused.Load() > 0 })
	if n := len(evr.ofType("dead_letter.created")); n != 0 {
		t.Fatalf("got %d events while the endpoint was down", n)
	}
	if m := metrics(t, addr); m["walhook_events_pending"] != 3 {
		t.Errorf("walhook_events_pending while the endpoint is down: got %v, want 3", m["walhook_events_pending"])
	}

	evr.down.Store(false)
	waitUntil(t, 60*time.Second, "3 dead_letter.created events", func() bool { return len(evr.ofType("dead_letter.created")) >= 3 })
	ids := map[string]bool{}
	for _, dl := range list {
		ids[dl.ID] = true
	}
	for _, ev := range evr.ofType("dead_letter.created") {
		if ev.verifyErr != nil {
			t.Errorf("event signature: %v", ev.verifyErr)
		}
		id, _ := ev.Data["dead_letter_id"].(string)
		if !ids[id] || ev.Data["sink"] != "bad" || ev.Data["messages"] != 1.0 || ev.Data["reason"] != "max_attempts" {
			t.Errorf("dead_letter.created data %v; want one of the dead letters %v of sink bad, 1 message, reason max_attempts", ev.Data, ids)
		}
		delete(ids, id)
	}
	waitUntil(t, 10*time.Second, "walhook_events_pending 0", func() bool { return metrics(t, addr)["walhook_events_pending"] == 0 })

	if code, out := runWalhook(t, "pause", "--sink", "good", "--config", cfg); code != 0 {
		t.Fatalf("pause: exit %d:\n%s", code, out)
	}
	if code, out := runWalhook(t, "resume", "--sink", "good", "--config", cfg); code != 0 {
		t.Fatalf("resume: exit %d:\n%s", code, out)
	}
	waitUntil(t, 30*time.Second, "sink.paused and sink.resumed", func() bool {
		return len(evr.ofType("sink.paused")) == 1 && len(evr.ofType("sink.resumed")) == 1
	})
	p, r := evr.ofType("sink.paused")[0], evr.ofType("sink.resumed")[0]
	if p.Data["sink"] != "good" || p.Data["reason"] != "operator" || p.verifyErr != nil || r.Data["sink"] != "good" || r.verifyErr != nil {
		t.Errorf("got sink.paused %v (%v), sink.resumed %v (%v)", p.Data, p.verifyErr, r.Data, r.verifyErr)
	}
	// A backfill of the good sink: backfill.completed with its id, table
	// and rows.
	if code, out := runWalhook(t, "backfill", "--sink", "good", "--wait", "--config", cfg); code != 0 {
		t.Fatalf("backfill: exit %d:\n%s", code, out)
	}
	waitUntil(t, 30*time.Second, "backfill.completed", func() bool { return len(evr.ofType("backfill.completed")) == 1 })
	b := evr.ofType("backfill.completed")[0]
	if id, _ := b.Data["backfill_id"].(string); id == "" || b.Data["sink"] != "good" || b.Data["rows"] != 3.0 ||
		fmt.Sprint(b.Data["tables"]) != `["public"."t"]` || b.verifyErr != nil {
		t.Errorf("backfill.completed: got %v (%v)", b.Data, b.verifyErr)
	}
	if strings.Contains(d.out.String(), eventsSecret) {
		t.Error("the log shows events.secret")
	}
}

// TestEventsAcrossTakeover: with state.url the event queue is the slot's,
// in the state database. An event queued by an active that is killed
// (SIGKILL) while the events endpoint is down is sent by the standby that
// takes over, once the endpoint is back.
func TestEventsAcrossTakeover(t *testing.T) {
	t.Parallel()
	dsn, slot := haSetup(t)
	rcv := newHAReceiver(t)
	evr := newEventsReceiver(t)
	evr.down.Store(true)
	events := fmt.Sprintf("events:\n  url: %q\n  secret: %q\n", evr.URL, eventsSecret)
	a := startHA(t, "a", dsn, dsn, slot, rcv.url, events)
	a.waitRole(t, "active", 90*time.Second)
	b := startHA(t, "b", dsn, dsn, slot, rcv.url, events)
	b.waitRole(t, "standby", 30*time.Second)
	if code, body := a.do(t, "POST", "/api/v1/sinks/s/pause", "{}"); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}
	waitUntil(t, 30*time.Second, "a refused event", func() bool { return evr.refused.Load() > 0 })
	a.d.kill(t)
	b.waitRole(t, "active", 90*time.Second)
	evr.down.Store(false)
	waitUntil(t, 60*time.Second, "sink.paused", func() bool { return len(evr.ofType("sink.paused")) > 0 })
	p := evr.ofType("sink.paused")
	if len(p) != 1 || p[0].Data["sink"] != "s" || p[0].Data["reason"] != "operator" || p[0].verifyErr != nil {
		t.Errorf("got sink.paused events %v (%v), want one about sink s, reason operator, signed", p[0].Data, p[0].verifyErr)
	}
}
