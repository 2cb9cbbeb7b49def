package rabbitmq

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/rabbittest"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker/brokertest"
)

func TestMain(m *testing.M) { rabbittest.Main(m) }

// testConfig is a rabbitmq sink to url and exchange with short waits.
func testConfig(url, exchange string) config.Sink {
	cfg := brokertest.Config("rabbitmq")
	cfg.RabbitMQ = config.RabbitMQ{URL: url, Exchange: exchange, RoutingKey: "{schema}.{table}.{action}"}
	return cfg
}

func newSink(t *testing.T, cfg config.Sink) *Sink {
	t.Helper()
	s, err := New(cfg, Options{Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestDeliverPublishesEachMessage: one persistent message per change, with
// the mapped routing key, message_id, content type, the documented string
// headers and body.
func TestDeliverPublishesEachMessage(t *testing.T) {
	srv := rabbittest.Shared(t)
	srv.Declare(t, "ex-each", "topic", "q-each", "#")
	s := newSink(t, testConfig(srv.URL, "ex-each"))
	msgs := brokertest.Inserts("odd.name x", 0, 20)
	if err := brokertest.Deliver(t, s, msgs); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := srv.Get(t, "q-each")
	if len(got) != len(msgs) {
		t.Fatalf("got %d messages, want %d", len(got), len(msgs))
	}
	for i, d := range got {
		want := msgs[i]
		if d.RoutingKey != "public.odd_name_x.insert" {
			t.Errorf("message %d: got routing key %q, want public.odd_name_x.insert", i, d.RoutingKey)
		}
		if d.MessageId != want.IdempotencyKey() || d.ContentType != "application/json" || d.DeliveryMode != 2 {
			t.Errorf("message %d: got message_id %q, content_type %q, delivery_mode %d; want %q, application/json, 2",
				i, d.MessageId, d.ContentType, d.DeliveryMode, want.IdempotencyKey())
		}
		if body := want.AppendJSON(nil, "orders"); !bytes.Equal(d.Body, body) {
			t.Errorf("message %d: got body %s, want %s", i, d.Body, body)
		}
		wantHeaders := map[string]string{
			"walhook-idempotency-key": want.IdempotencyKey(),
			"walhook-table":           "public.odd.name x",
			"walhook-action":          "insert",
			"walhook-commit-lsn":      "0/1000",
			"walhook-sink":            "orders",
		}
		for k, v := range wantHeaders {
			if g, ok := d.Headers[k].(string); !ok || g != v {
				t.Errorf("message %d: header %s: got %#v, want the string %q", i, k, d.Headers[k], v)
			}
		}
		if len(d.Headers) != len(wantHeaders) {
			t.Errorf("message %d: got headers %v, want exactly %v", i, d.Headers, wantHeaders)
		}
	}
}

// TestUnroutableNeedsOperator: a message the exchange routes nowhere comes
// back (mandatory) and fails the attempt naming the routing key, as an
// operator's matter; once a queue is bound the batch goes through.
func TestUnroutableNeedsOperator(t *testing.T) {
	srv := rabbittest.Shared(t)
	// Names of their own: the shared node outlives a run (-count).
	ex, q := fmt.Sprintf("ex-unroutable-%d", time.Now().UnixNano()), fmt.Sprintf("q-unroutable-%d", time.Now().UnixNano())
	srv.Declare(t, ex, "topic", "", "")
	s := newSink(t, testConfig(srv.URL, ex))
	msgs := brokertest.Inserts("orders", 0, 3)
	err := brokertest.Deliver(t, s, msgs)
	if err == nil || !sink.NeedsOperator(err) || !strings.Contains(err.Error(), fmt.Sprintf(`unroutable: exchange %q routes nothing for routing key "public.orders.insert"`, ex)) {
		t.Fatalf("Deliver to an exchange without a queue: got %v, want an operator error naming the routing key", err)
	}
	srv.Declare(t, ex, "topic", q, "public.#")
	if err := brokertest.Deliver(t, s, msgs); err != nil {
		t.Fatalf("Deliver once a queue is bound: %v", err)
	}
	if n := len(srv.Get(t, q)); n != 3 {
		t.Errorf("got %d messages, want 3", n)
	}
}

// TestNoExchangeNeedsOperator: an exchange that does not exist closes the
// channel; the attempt fails naming the exchange, as an operator's
// matter, and the next attempt (on a new channel) goes through once it
// exists.
func TestNoExchangeNeedsOperator(t *testing.T) {
	srv := rabbittest.Shared(t)
	// Names of their own: the shared node outlives a run (-count).
	ex, q := fmt.Sprintf("ex-missing-%d", time.Now().UnixNano()), fmt.Sprintf("q-missing-%d", time.Now().UnixNano())
	s := newSink(t, testConfig(srv.URL, ex))
	msgs := brokertest.Inserts("orders", 0, 3)
	err := brokertest.Deliver(t, s, msgs)
	if err == nil || !sink.NeedsOperator(err) || !strings.Contains(err.Error(), fmt.Sprintf(`exchange %q does not exist`, ex)) {
		t.Fatalf("Deliver to a missing exchange: got %v, want an operator error naming the exchange", err)
	}
	srv.Declare(t, ex, "topic", q, "#")
	if err := brokertest.Deliver(t, s, msgs); err != nil {
		t.Fatalf("Deliver once the exchange exists: %v", err)
	}
	if n := len(srv.Get(t, q)); n != 3 {
		t.Errorf("got %d messages, want 3", n)
	}
}

// TestWrongPassword: refused credentials are an operator's matter naming
// them, and the password is in no message.
func TestWrongPassword(t *testing.T) {
	srv := rabbittest.Shared(t)
	srv.Declare(t, "ex-auth", "topic", "q-auth", "#")
	s := newSink(t, testConfig(strings.Replace(srv.URL, "guest:guest@", "guest:wr0ng-pw@", 1), "ex-auth"))
	err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 0, 1))
	if !sink.NeedsOperator(err) || !strings.Contains(err.Error(), "refuses walhook's credentials") || strings.Contains(err.Error(), "wr0ng-pw") {
		t.Fatalf("Deliver with a wrong password: got %v, want an operator error about the credentials, without the password", err)
	}
}

// TestBrokerRestart: while the broker is down an attempt fails as
// unreachable (retryable); after it restarts the next attempt connects
// again and goes through, and what was confirmed before is kept
// (persistent messages in a durable queue).
func TestBrokerRestart(t *testing.T) {
	srv := rabbittest.Shared(t)
	srv.Declare(t, "ex-restart", "topic", "q-restart", "#")
	s := newSink(t, testConfig(srv.URL, "ex-restart"))
	msgs := brokertest.Inserts("orders", 0, 10)
	if err := brokertest.Deliver(t, s, msgs[:5]); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	err := brokertest.Deliver(t, s, msgs[5:])
	if err == nil || sink.NeedsOperator(err) {
		t.Fatalf("Deliver with the broker down: got %v, want a retryable error", err)
	}
	t.Logf("broker down: %v", err)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// Right after its start a node may not route to a recovered queue
	// yet (a return): the pipeline retries, and so does the test. Under
	// load RabbitMQ 3.10 may not route to it at all: a durable queue that
	// does not start in time at boot is started later without its
	// bindings (rabbitmq-server issue 1873; seen in a loaded full run,
	// NO_ROUTE for 15 s). That is the broker's, and the sink's error says
	// what an operator does then: bind the queue again. The test does so
	// after 10 s; every message must still arrive, the five the broker
	// confirmed before the kill among them.
	restarted := time.Now()
	var last error
	rebound, tries := false, 0
	for deadline := restarted.Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		tries++
		if last = brokertest.Deliver(t, s, msgs[5:]); last == nil {
			break
		}
		if tries == 1 {
			t.Logf("Deliver after the restart: %v", last)
		}
		if !rebound && time.Since(restarted) > 10*time.Second && strings.Contains(last.Error(), "unroutable") {
			t.Logf("no route %v after the restart (%d tries): binding the queue again, as the error asks", time.Since(restarted).Round(time.Millisecond), tries)
			srv.Declare(t, "ex-restart", "topic", "q-restart", "#")
			rebound = true
		}
	}
	if last != nil {
		t.Fatalf("Deliver after the restart, %d tries: %v", tries, last)
	}
	got := srv.Get(t, "q-restart")
	seen := map[string]bool{}
	for _, d := range got {
		seen[d.MessageId] = true
	}
	for _, m := range msgs {
		if !seen[m.IdempotencyKey()] {
			t.Errorf("message %s lost across the restart", m.IdempotencyKey())
		}
	}
}

// TestCheck: check says the broker took the credentials, whether the
// exchange exists (creating nothing) and each table's routing key.
func TestCheck(t *testing.T) {
	srv := rabbittest.Shared(t)
	srv.Declare(t, "ex-check", "topic", "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tables := []config.Table{{Schema: "public", Name: "orders"}, {Schema: "public", Name: "odd.name x"}}
	var out strings.Builder
	cfg := testConfig(srv.URL, "ex-check")
	cfg.Actions = []string{"insert"}
	if p := Check(ctx, &out, cfg, tables); len(p) != 0 {
		t.Errorf("check: got problems %q, want none", p)
	}
	for _, want := range []string{"connected and authenticated", `exchange "ex-check" exists`,
		"table public.odd.name x maps to routing key public.odd_name_x.insert", "cannot be checked without publishing"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
	if p := Check(ctx, &out, testConfig(srv.URL, "ex-check-missing"), tables); len(p) != 1 || !strings.Contains(p[0], `exchange "ex-check-missing" does not exist; declare it`) {
		t.Errorf("check of a missing exchange: got %q, want one problem naming it and the fix", p)
	}
	bad := testConfig(strings.Replace(srv.URL, "guest:guest@", "guest:wr0ng-pw@", 1), "ex-check")
	if p := Check(ctx, &out, bad, tables); len(p) != 1 || !strings.Contains(p[0], "refuses walhook's credentials") || strings.Contains(p[0], "wr0ng-pw") {
		t.Errorf("check with a wrong password: got %q, want one problem about the credentials, without the password", p)
	}
}

// TestTransactionHeaders: under batch_by: transaction every message
// carries walhook-xid, and walhook-tx-last is "true" on the last message
// of the transaction's last part only, both strings; without a
// transaction neither is set.
func TestTransactionHeaders(t *testing.T) {
	srv := rabbittest.Shared(t)
	ex, q := fmt.Sprintf("ex-tx-%d", time.Now().UnixNano()), fmt.Sprintf("q-tx-%d", time.Now().UnixNano())
	srv.Declare(t, ex, "topic", q, "#")
	s := newSink(t, testConfig(srv.URL, ex))
	msgs := brokertest.Inserts("t", 0, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i, part := range [][]*change.Message{msgs[:3], msgs[3:]} {
		tx := &change.Transaction{XID: 7, CommitLSN: 0x1000, CommitTime: msgs[0].CommitTime, Part: i + 1, Last: i == 1}
		if err := s.Deliver(ctx, &sink.Batch{ID: fmt.Sprint(i), Attempt: 1, Messages: part, Sink: "orders", Tx: tx}); err != nil {
			t.Fatalf("Deliver part %d: %v", i+1, err)
		}
	}
	if err := brokertest.Deliver(t, s, brokertest.Inserts("t", 0, 1)); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := srv.Get(t, q)
	if len(got) != 6 {
		t.Fatalf("got %d messages, want 6", len(got))
	}
	for i, d := range got[:5] {
		if g, ok := d.Headers["walhook-xid"].(string); !ok || g != "7" {
			t.Errorf("message %d: got walhook-xid %#v, want the string 7", i, d.Headers["walhook-xid"])
		}
		if g, ok := d.Headers["walhook-tx-last"].(string); !ok || g != fmt.Sprint(i == 4) {
			t.Errorf("message %d: got walhook-tx-last %#v, want the string %v", i, d.Headers["walhook-tx-last"], i == 4)
		}
	}
	if h := got[5].Headers; h["walhook-xid"] != nil || h["walhook-tx-last"] != nil {
		t.Errorf("without a transaction: got headers %v, want no walhook-xid or walhook-tx-last", h)
	}
}
