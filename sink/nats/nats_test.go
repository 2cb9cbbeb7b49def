package nats

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/natstest"
	"github.com/walhook/walhook/internal/tlstest"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker/brokertest"
)

// testConfig is a nats sink to url with short waits.
func testConfig(url string) config.Sink {
	cfg := brokertest.Config("nats")
	cfg.NATS = config.NATS{URL: url, Subject: "walhook.{schema}.{table}"}
	return cfg
}

// newSink builds a sink and closes it when the test ends.
func newSink(t *testing.T, cfg config.Sink) *Sink {
	t.Helper()
	s, err := New(cfg, Options{Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// connected waits until s's connection is up.
func connected(t *testing.T, s *Sink) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("not connected after 10s: %v", s.nc.LastError())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeliverPublishesEachMessage: one message per change, on the mapped
// subject, with the documented headers and body; a batch delivered again
// is deduplicated by Nats-Msg-Id and counts as delivered.
func TestDeliverPublishesEachMessage(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	s := newSink(t, testConfig(srv.URL))
	connected(t, s)
	msgs := brokertest.Inserts("odd.name x", 0, 20)
	for range 2 {
		if err := brokertest.Deliver(t, s, msgs); err != nil {
			t.Fatalf("Deliver: %v", err)
		}
	}
	got := srv.Messages(t, "WALHOOK")
	if len(got) != len(msgs) {
		t.Fatalf("got %d messages in the stream, want %d (each once)", len(got), len(msgs))
	}
	for i, m := range got {
		want := msgs[i]
		if m.Subject != "walhook.public.odd_name_x" {
			t.Errorf("message %d: got subject %q, want walhook.public.odd_name_x", i, m.Subject)
		}
		if body := want.AppendJSON(nil, "orders"); !bytes.Equal(m.Data, body) {
			t.Errorf("message %d: got body %s, want %s", i, m.Data, body)
		}
		wantHeaders := map[string]string{
			"walhook-idempotency-key": want.IdempotencyKey(),
			"walhook-table":           "public.odd.name x",
			"walhook-action":          "insert",
			"walhook-commit-lsn":      "0/1000",
			"walhook-sink":            "orders",
			"Nats-Msg-Id":             want.IdempotencyKey(),
		}
		for k, v := range wantHeaders {
			if g := m.Header[k]; len(g) != 1 || g[0] != v {
				t.Errorf("message %d: header %s: got %q, want [%q]", i, k, g, v)
			}
		}
		if len(m.Header) != len(wantHeaders) {
			t.Errorf("message %d: got headers %v, want exactly %v", i, m.Header, wantHeaders)
		}
	}
}

// TestNoStreamNeedsOperator: without a stream for the subject an attempt
// fails naming the subject and the fix, as an operator's matter; once the
// stream exists the batch goes through.
func TestNoStreamNeedsOperator(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	s := newSink(t, testConfig(srv.URL))
	connected(t, s)
	msgs := brokertest.Inserts("orders", 0, 3)
	err := brokertest.Deliver(t, s, msgs)
	if err == nil || !sink.NeedsOperator(err) || !strings.Contains(err.Error(), `no JetStream stream takes subject "walhook.public.orders"`) {
		t.Fatalf("Deliver without a stream: got %v, want an operator error naming the subject", err)
	}
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	if err := brokertest.Deliver(t, s, msgs); err != nil {
		t.Fatalf("Deliver once the stream exists: %v", err)
	}
	if n := len(srv.Messages(t, "WALHOOK")); n != 3 {
		t.Errorf("got %d messages, want 3", n)
	}
}

// TestTooLargeNamesMaxPayload: a change larger than the server's
// max_payload fails naming max_payload, every time.
func TestTooLargeNamesMaxPayload(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{Config: "max_payload: 4096"})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	s := newSink(t, testConfig(srv.URL))
	connected(t, s)
	msgs := brokertest.Inserts("orders", 0, 2)
	msgs[1].Record = []byte(`{"id":1,"blob":"` + strings.Repeat("x", 8000) + `"}`)
	err := brokertest.Deliver(t, s, msgs)
	if err == nil || !strings.Contains(err.Error(), "max_payload (4096 bytes)") {
		t.Fatalf("Deliver: got %v, want an error naming max_payload", err)
	}
}

// TestServerRestart: while the server is down an attempt fails at once
// as unreachable; after it restarts (same store) the batch goes through,
// and what had reached the stream before is not stored twice.
func TestServerRestart(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	s := newSink(t, testConfig(srv.URL))
	connected(t, s)
	msgs := brokertest.Inserts("orders", 0, 10)
	if err := brokertest.Deliver(t, s, msgs[:5]); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	err := brokertest.Deliver(t, s, msgs)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Deliver with the server down: got %v, want unreachable", err)
	}
	srv.Restart()
	connected(t, s)
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if last = brokertest.Deliver(t, s, msgs); last == nil {
			break
		}
	}
	if last != nil {
		t.Fatalf("Deliver after the restart: %v", last)
	}
	if n := len(srv.Messages(t, "WALHOOK")); n != 10 {
		t.Errorf("got %d messages, want 10 (the first 5 once)", n)
	}
}

// TestCredentials: a server that wants an nkey takes the sink's nkey_file;
// with a wrong user and password the attempt is an operator's matter
// naming the credentials, and the password is in no message.
func TestCredentials(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := natstest.Start(t, natstest.Options{
		Config:        fmt.Sprintf("authorization { users = [ {nkey: %s}, {user: app, password: s3cret-pw} ] }", pub),
		ClientOptions: []natsgo.Option{natsgo.UserInfo("app", "s3cret-pw")},
	})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)

	cfg := testConfig(srv.URL)
	cfg.NATS.NKeyFile = seedFile
	s := newSink(t, cfg)
	connected(t, s)
	if err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 0, 2)); err != nil {
		t.Fatalf("Deliver with the nkey: %v", err)
	}

	bad := testConfig(strings.Replace(srv.URL, "nats://", "nats://app:wr0ng-pw@", 1))
	b := newSink(t, bad)
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		last = brokertest.Deliver(t, b, brokertest.Inserts("orders", 0, 1))
		if sink.NeedsOperator(last) {
			break
		}
	}
	if !sink.NeedsOperator(last) || !strings.Contains(last.Error(), "refuses walhook's credentials") || strings.Contains(last.Error(), "wr0ng-pw") {
		t.Fatalf("Deliver with a wrong password: got %v, want an operator error about the credentials, without the password", last)
	}
}

// TestCredsFile: a server in operator mode (decentralized JWTs) takes the
// sink's creds_file, a user JWT signed by an account the operator signed
// and the user's nkey seed, which signs the server's nonce; a user of an
// account the operator never signed is an operator's matter naming the
// credentials.
func TestCredsFile(t *testing.T) {
	op := natstest.NewOperator(t)
	srv := natstest.Start(t, natstest.Options{
		Config:        op.Config,
		ClientOptions: []natsgo.Option{natsgo.UserCredentials(op.CredsFile)},
	})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)

	cfg := testConfig(srv.URL)
	cfg.NATS.CredsFile = op.CredsFile
	s := newSink(t, cfg)
	connected(t, s)
	if err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 0, 2)); err != nil {
		t.Fatalf("Deliver with creds_file: %v", err)
	}
	if n := len(srv.Messages(t, "WALHOOK")); n != 2 {
		t.Errorf("got %d messages, want 2", n)
	}

	cfg.NATS.CredsFile = op.StrangerCreds(t)
	b := newSink(t, cfg)
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if last = brokertest.Deliver(t, b, brokertest.Inserts("orders", 0, 1)); sink.NeedsOperator(last) {
			break
		}
	}
	if !sink.NeedsOperator(last) || !strings.Contains(last.Error(), "refuses walhook's credentials") {
		t.Fatalf("Deliver with a stranger's creds_file: got %v, want an operator error about the credentials", last)
	}
}

// TestCheck reports the stream that takes each table's subject, warns of
// a short duplicate window, and names the fix for a table no stream takes.
func TestCheck(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	srv.AddStream(t, "ORDERS", []string{"walhook.public.orders"}, 30*time.Second)
	cfg := testConfig(srv.URL)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	problems := Check(ctx, &out, cfg, []config.Table{{Schema: "public", Name: "orders"}, {Schema: "public", Name: "odd.name x"}})
	text := out.String()
	for _, want := range []string{
		"connected and authenticated",
		"table public.orders maps to subject walhook.public.orders, taken by stream ORDERS (duplicate window 30s)",
		"warning: stream ORDERS keeps message ids for 30s only",
		"table public.odd.name x maps to subject walhook.public.odd_name_x, which no JetStream stream takes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("check output lacks %q:\n%s", want, text)
		}
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "walhook.public.odd_name_x") {
		t.Errorf("got problems %q, want one about walhook.public.odd_name_x", problems)
	}
	srv.Kill()
	if p := Check(ctx, &out, cfg, nil); len(p) != 1 || !strings.Contains(p[0], "cannot connect") {
		t.Errorf("check with the server down: got %q, want cannot connect", p)
	}
}

// TestTLS: a server that wants mutual TLS takes the sink's tls settings;
// without the server's CA the sink never connects, and says so.
func TestTLS(t *testing.T) {
	serverCA, clientCA := tlstest.NewCA(t, "server-ca"), tlstest.NewCA(t, "client-ca")
	_, serverCert, serverKey := serverCA.Issue(t, "nats", true)
	_, clientCert, clientKey := clientCA.Issue(t, "walhook", false)
	srv := natstest.Start(t, natstest.Options{
		Config:        fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }", serverCert, serverKey, clientCA.File),
		ClientOptions: []natsgo.Option{natsgo.RootCAs(serverCA.File), natsgo.ClientCert(clientCert, clientKey)},
	})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	cfg := testConfig(srv.URL)
	cfg.NATS.TLS = config.TLS{CAFile: serverCA.File, CertFile: clientCert, KeyFile: clientKey}
	s := newSink(t, cfg)
	connected(t, s)
	if err := brokertest.Deliver(t, s, brokertest.Inserts("orders", 0, 3)); err != nil {
		t.Fatalf("Deliver over mutual TLS: %v", err)
	}
	if n := len(srv.Messages(t, "WALHOOK")); n != 3 {
		t.Errorf("got %d messages, want 3", n)
	}

	cfg.NATS.TLS = config.TLS{CertFile: clientCert, KeyFile: clientKey} // the system's CAs
	untrusting := newSink(t, cfg)
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if last = brokertest.Deliver(t, untrusting, brokertest.Inserts("orders", 0, 1)); sink.NeedsOperator(last) {
			break
		}
	}
	if !sink.NeedsOperator(last) || !strings.Contains(last.Error(), "set tls.ca_file") {
		t.Errorf("Deliver without the server's CA: got %v, want an operator error naming tls.ca_file", last)
	}
}

// TestTransactionHeaders: under batch_by: transaction every message
// carries walhook-xid, and walhook-tx-last is "true" on the last message
// of the transaction's last part only; without a transaction neither is
// set.
func TestTransactionHeaders(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	s := newSink(t, testConfig(srv.URL))
	connected(t, s)
	msgs := brokertest.Inserts("t", 0, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, part := range [][]*change.Message{msgs[:3], msgs[3:]} {
		tx := &change.Transaction{XID: 7, CommitLSN: 0x1000, CommitTime: msgs[0].CommitTime, Part: i + 1, Last: i == 1}
		if err := s.Deliver(ctx, &sink.Batch{ID: fmt.Sprint(i), Attempt: 1, Messages: part, Sink: "orders", Tx: tx}); err != nil {
			t.Fatalf("Deliver part %d: %v", i+1, err)
		}
	}
	plain := brokertest.Inserts("u", 0, 1)
	plain[0].Pos.CommitLSN = 0x2000
	if err := brokertest.Deliver(t, s, plain); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := srv.Messages(t, "WALHOOK")
	if len(got) != 6 {
		t.Fatalf("got %d messages, want 6", len(got))
	}
	for i, m := range got[:5] {
		if g := m.Header.Get("walhook-xid"); g != "7" {
			t.Errorf("message %d: got walhook-xid %q, want 7", i, g)
		}
		if g, want := m.Header.Get("walhook-tx-last"), fmt.Sprint(i == 4); g != want {
			t.Errorf("message %d: got walhook-tx-last %q, want %s", i, g, want)
		}
	}
	if h := got[5].Header; h.Get("walhook-xid") != "" || h.Get("walhook-tx-last") != "" {
		t.Errorf("without a transaction: got headers %v, want no walhook-xid or walhook-tx-last", h)
	}
}
