package redis

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/redistest"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker/brokertest"
)

func testConfig(url string) config.Sink {
	cfg := brokertest.Config("redis")
	cfg.Redis = config.Redis{URL: url, Stream: "walhook:{schema}.{table}"}
	return cfg
}

func newSink(t *testing.T, cfg config.Sink) *Sink {
	t.Helper()
	s, err := New(cfg, Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestDeliverAppendsEachMessage: one entry per change, on the mapped
// stream, with data and the documented fields, in order.
func TestDeliverAppendsEachMessage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	s := newSink(t, testConfig(srv.URL))
	msgs := brokertest.Inserts("odd.name x", 0, 20)
	if err := brokertest.Deliver(t, s, msgs); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := srv.Stream(t, "walhook:public.odd_name x")
	if len(got) != len(msgs) {
		t.Fatalf("got %d entries, want %d", len(got), len(msgs))
	}
	for i, e := range got {
		want := msgs[i]
		fields := map[string]string{
			"data":                    string(want.AppendJSON(nil, "orders")),
			"walhook-idempotency-key": want.IdempotencyKey(),
			"walhook-table":           "public.odd.name x",
			"walhook-action":          "insert",
			"walhook-commit-lsn":      "0/1000",
			"walhook-sink":            "orders",
		}
		for k, v := range fields {
			if e.Values[k] != v {
				t.Errorf("entry %d: field %s: got %v, want %q", i, k, e.Values[k], v)
			}
		}
		if len(e.Values) != len(fields) {
			t.Errorf("entry %d: got fields %v, want exactly %v", i, e.Values, fields)
		}
	}
}

// TestMaxLen trims the stream to about max_len entries.
func TestMaxLen(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := testConfig(srv.URL)
	cfg.Redis.MaxLen = 10
	s := newSink(t, cfg)
	for i := range 50 {
		if err := brokertest.Deliver(t, s, brokertest.Inserts("orders", i*100, 100)); err != nil {
			t.Fatal(err)
		}
	}
	n := len(srv.Stream(t, "walhook:public.orders"))
	// MAXLEN ~ trims whole macro nodes (100 entries by default).
	if n >= 5000 || n < 10 {
		t.Errorf("got %d entries after 5000 XADDs with max_len 10, want about 10 (at most a node more)", n)
	}
}

// TestRestartLosesNothing: with the server down an attempt fails as
// unreachable; after a kill -9 and a restart (AOF, fsync always) the
// entries acknowledged before are there, and the batch goes through.
func TestRestartLosesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	s := newSink(t, testConfig(srv.URL))
	if err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 0, 5)); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 5, 5))
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Deliver with the server down: got %v, want unreachable", err)
	}
	srv.Restart()
	if err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 5, 5)); err != nil {
		t.Fatalf("Deliver after the restart: %v", err)
	}
	got := srv.Stream(t, "walhook:public.orders")
	if len(got) != 10 {
		t.Fatalf("got %d entries, want 10", len(got))
	}
	for i, e := range got {
		if want := fmt.Sprintf("0/1000:%d", i); e.Values["walhook-idempotency-key"] != want {
			t.Errorf("entry %d: got key %v, want %s", i, e.Values["walhook-idempotency-key"], want)
		}
	}
}

// TestOperatorErrors: a wrong password and a key that is not a stream are
// operator matters, named; the password is in no message.
func TestOperatorErrors(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "s3cret-pw"})
	bad := newSink(t, testConfig(strings.Replace(srv.URL, "s3cret-pw", "wr0ng-pw", 1)))
	err := brokertest.Deliver(t, bad, brokertest.Inserts("orders", 0, 1))
	if !sink.NeedsOperator(err) || !strings.Contains(err.Error(), "refuses walhook's credentials") || strings.Contains(err.Error(), "wr0ng-pw") {
		t.Errorf("wrong password: got %v, want an operator error about the credentials, without the password", err)
	}
	if err := srv.Client(t).Set(context.Background(), "walhook:public.orders", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	good := newSink(t, testConfig(srv.URL))
	err = brokertest.Deliver(t, good, brokertest.Inserts("orders", 0, 3))
	if !sink.NeedsOperator(err) || !strings.Contains(err.Error(), `the key "walhook:public.orders" holds something other than a stream`) {
		t.Errorf("key of another type: got %v, want an operator error naming the key", err)
	}
}

// TestCheck reports each table's stream and what its key holds.
func TestCheck(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	if err := srv.Client(t).Set(context.Background(), "walhook:public.bad", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, testConfig(srv.URL))
	if err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 0, 2)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := testConfig(srv.URL)
	cfg.Actions = []string{"insert"}
	problems := Check(ctx, &out, cfg, []config.Table{{Schema: "public", Name: "orders"}, {Schema: "public", Name: "odd.name x"}, {Schema: "public", Name: "bad"}})
	for _, want := range []string{
		"connected and authenticated",
		"table public.orders maps to stream walhook:public.orders (2 entries)",
		"table public.odd.name x maps to stream walhook:public.odd_name x (not there yet",
		"table public.bad maps to stream walhook:public.bad, but that key holds a string",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
	if len(problems) != 1 {
		t.Errorf("got problems %q, want one", problems)
	}
}

// TestTransactionFields: under batch_by: transaction every entry carries
// walhook-xid, and walhook-tx-last is "true" on the last entry of the
// transaction's last part only; without a transaction neither is set.
func TestTransactionFields(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	s := newSink(t, testConfig(srv.URL))
	msgs := brokertest.Inserts("t", 0, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, part := range [][]*change.Message{msgs[:3], msgs[3:]} {
		tx := &change.Transaction{XID: 7, CommitLSN: 0x1000, CommitTime: msgs[0].CommitTime, Part: i + 1, Last: i == 1}
		if err := s.Deliver(ctx, &sink.Batch{ID: fmt.Sprint(i), Attempt: 1, Messages: part, Sink: "orders", Tx: tx}); err != nil {
			t.Fatalf("Deliver part %d: %v", i+1, err)
		}
	}
	if err := brokertest.Deliver(t, s, brokertest.Inserts("t", 5, 1)); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := srv.Stream(t, "walhook:public.t")
	if len(got) != 6 {
		t.Fatalf("got %d entries, want 6", len(got))
	}
	for i, e := range got[:5] {
		if e.Values["walhook-xid"] != "7" {
			t.Errorf("entry %d: got walhook-xid %v, want 7", i, e.Values["walhook-xid"])
		}
		if g, want := e.Values["walhook-tx-last"], fmt.Sprint(i == 4); g != want {
			t.Errorf("entry %d: got walhook-tx-last %v, want %s", i, g, want)
		}
	}
	if _, ok := got[5].Values["walhook-xid"]; ok {
		t.Errorf("without a transaction: got fields %v, want no walhook-xid", got[5].Values)
	}
	if _, ok := got[5].Values["walhook-tx-last"]; ok {
		t.Errorf("without a transaction: got fields %v, want no walhook-tx-last", got[5].Values)
	}
}
