package kafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/tlstest"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker/brokertest"
)

// The tests run against franz-go's kfake, an in-process Kafka cluster: no
// Kafka server package reaches this machine.

// cluster starts a kfake cluster with the given topics (4 partitions
// each), closed when the test ends.
func cluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// testConfig is a kafka sink to brokers with short waits.
func testConfig(brokers []string) config.Sink {
	cfg := brokertest.Config("kafka")
	cfg.Kafka = config.Kafka{Brokers: brokers, Topic: "walhook.{schema}.{table}"}
	// The in-process cluster shares the race-built test with the whole
	// suite: a loaded run saw brokertest's 5 s run out on a delivery
	// that was to succeed (SASL, a transaction's part). Tests of a
	// timeout's outcome set their own.
	cfg.Timeout = 15 * time.Second
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

var testRel = &change.Relation{Schema: "public", Name: "odd.name x", Table: "public.odd.name x", Identity: 'd',
	Columns: []change.Column{{Name: "region", Identity: true}, {Name: "id", Identity: true}, {Name: "v"}}, Key: []int{0, 1}}

// messages are n inserts of rows i%rows into testRel's table, at
// positions 0/1000:i.
func messages(n, rows int) []*change.Message {
	msgs := make([]*change.Message, n)
	for i := range msgs {
		rec := fmt.Appendf(nil, `{"region":"eu","id":%d,"v":%d}`, i%rows, i)
		idStart := bytes.Index(rec, []byte(`"id":`)) + 5
		idEnd := bytes.IndexByte(rec[idStart:], ',') + idStart
		msgs[i] = &change.Message{
			Action: change.Insert, Schema: "public", Table: "odd.name x", Rel: testRel,
			Record: rec, RecordFields: []change.Field{{Col: 0, Start: 10, End: 14}, {Col: 1, Start: uint32(idStart), End: uint32(idEnd)}},
			Pos:        change.Position{CommitLSN: pglogrepl.LSN(0x1000), Idx: uint32(i)},
			CommitTime: time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC), XID: 7,
		}
	}
	return msgs
}

// consume reads n records of topic from the start.
func consume(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d records of %s, want %d", len(got), topic, n)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got
}

// TestDeliverProducesEachRecord: one record per change, to the mapped
// topic, keyed by the row's group values, with the documented headers and
// body; every row's records land in one partition, in order.
func TestDeliverProducesEachRecord(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(4, "walhook.public.odd_name_x"))
	brokers := c.ListenAddrs()
	s := newSink(t, testConfig(brokers))
	msgs := messages(40, 5)
	if err := brokertest.Deliver(t, s, msgs); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := consume(t, brokers, "walhook.public.odd_name_x", len(msgs))
	if len(got) != len(msgs) {
		t.Fatalf("got %d records, want %d", len(got), len(msgs))
	}
	partitionOf := map[string]int32{}
	lastIdx := map[string]int{}
	byKey := map[string]*change.Message{}
	for _, m := range msgs {
		byKey[m.IdempotencyKey()] = m
	}
	for _, r := range got {
		headers := map[string]string{}
		for _, h := range r.Headers {
			headers[h.Key] = string(h.Value)
		}
		m := byKey[headers["walhook-idempotency-key"]]
		if m == nil {
			t.Fatalf("record with headers %v: no such change", headers)
		}
		want := map[string]string{
			"walhook-idempotency-key": m.IdempotencyKey(),
			"walhook-table":           "public.odd.name x",
			"walhook-action":          "insert",
			"walhook-commit-lsn":      "0/1000",
			"walhook-sink":            "orders",
		}
		for k, v := range want {
			if headers[k] != v {
				t.Errorf("header %s: got %q, want %q", k, headers[k], v)
			}
		}
		if len(r.Headers) != len(want) {
			t.Errorf("got headers %v, want exactly %v", headers, want)
		}
		if body := m.AppendJSON(nil, "orders"); !bytes.Equal(r.Value, body) {
			t.Errorf("got body %s, want %s", r.Value, body)
		}
		wantKey := fmt.Sprintf(`["eu",%d]`, int(m.Pos.Idx)%5)
		if string(r.Key) != wantKey {
			t.Errorf("got key %s, want %s", r.Key, wantKey)
		}
		if p, ok := partitionOf[wantKey]; ok && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d, want one", wantKey, p, r.Partition)
		}
		partitionOf[wantKey] = r.Partition
		if last, ok := lastIdx[wantKey]; ok && int(m.Pos.Idx) < last {
			t.Errorf("key %s: change %d after %d, want position order", wantKey, m.Pos.Idx, last)
		}
		lastIdx[wantKey] = int(m.Pos.Idx)
	}
}

// TestKey: the record key is the JSON array of the group values, by
// group_by when the table has one; null for a truncate.
func TestKey(t *testing.T) {
	m := messages(1, 1)[0]
	k := newKeyer(config.Sink{})
	if got := string(k.key(m)); got != `["eu",0]` {
		t.Errorf("key: got %s, want [\"eu\",0]", got)
	}
	g := newKeyer(config.Sink{GroupBy: map[config.Table][]string{{Schema: "public", Name: "odd.name x"}: {"id"}}})
	if got := string(g.key(m)); got != `[0]` {
		t.Errorf("group_by key: got %s, want [0]", got)
	}
	tr := &change.Message{Action: change.Truncate, Schema: "public", Table: "odd.name x", Rel: testRel}
	if got := k.key(tr); got != nil {
		t.Errorf("truncate key: got %s, want null", got)
	}
}

// TestUnknownTopicNeedsOperator: a topic that does not exist fails the
// attempt naming the topic, as an operator's matter; once it exists the
// batch goes through.
func TestUnknownTopicNeedsOperator(t *testing.T) {
	c := cluster(t)
	brokers := c.ListenAddrs()
	s := newSink(t, testConfig(brokers))
	msgs := messages(3, 3)
	err := brokertest.Deliver(t, s, msgs)
	if err == nil || !sink.NeedsOperator(err) || !strings.Contains(err.Error(), `unknown topic "walhook.public.odd_name_x"`) {
		t.Fatalf("Deliver without the topic: got %v, want an operator error naming the topic", err)
	}
	createTopic(t, brokers, "walhook.public.odd_name_x")
	var last error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if last = brokertest.Deliver(t, s, msgs); last == nil {
			break
		}
	}
	if last != nil {
		t.Fatalf("Deliver once the topic exists: %v", last)
	}
	consume(t, brokers, "walhook.public.odd_name_x", 3)
}

// createTopic creates a topic of 4 partitions.
func createTopic(t *testing.T, brokers []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 4, 1
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// TestTooLargeNamesMaxMessageBytes: a change larger than the cluster
// accepts fails naming max.message.bytes, not as an operator's matter.
func TestTooLargeNamesMaxMessageBytes(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(1, "walhook.public.odd_name_x"))
	s := newSink(t, testConfig(c.ListenAddrs()))
	msgs := messages(2, 2)
	msgs[1].Record = []byte(`{"id":1,"blob":"` + strings.Repeat("x", 2<<20) + `"}`)
	msgs[1].RecordFields = nil
	err := brokertest.Deliver(t, s, msgs)
	if err == nil || sink.NeedsOperator(err) || !strings.Contains(err.Error(), "max.message.bytes") || !strings.Contains(err.Error(), msgs[1].IdempotencyKey()) {
		t.Fatalf("Deliver: got %v, want an error naming max.message.bytes and the change", err)
	}
}

// TestSASL: a cluster that wants PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
// takes the sink's credentials with that mechanism; a wrong password is an
// operator's matter naming the credentials, and the password is in no
// message.
func TestSASL(t *testing.T) {
	for _, mechanism := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mechanism, func(t *testing.T) {
			t.Parallel()
			c := cluster(t, kfake.EnableSASL(), kfake.Superuser(mechanism, "walhook", "s3cret-pw"),
				kfake.SeedTopics(1, "walhook.public.odd_name_x"))
			cfg := testConfig(c.ListenAddrs())
			cfg.Kafka.SASL = config.SASL{Mechanism: mechanism, Username: "walhook", Password: "s3cret-pw"}
			if err := brokertest.Deliver(t, newSink(t, cfg), messages(2, 2)); err != nil {
				t.Fatalf("Deliver with the right password: %v", err)
			}
			cfg.Kafka.SASL.Password = "wr0ng-pw"
			// The refusal shows when the attempt times out. On a loaded
			// machine an attempt can end before the client read the
			// cluster's answer (2 s, 8 s, once even 15 s with
			// SCRAM-SHA-512 under the race detector), and then says the
			// cluster is unreachable: a retryable error, after which the
			// pipeline tries again. Up to three attempts, as it would
			// make: one must name the credentials, none the password.
			cfg.Timeout = 8 * time.Second
			s := newSink(t, cfg)
			var errs []error
			for range 3 {
				err := brokertest.Deliver(t, s, messages(2, 2))
				if err == nil {
					t.Fatal("Deliver with a wrong password succeeded")
				}
				if strings.Contains(err.Error(), "wr0ng-pw") {
					t.Fatalf("Deliver with a wrong password: the error holds the password: %v", err)
				}
				errs = append(errs, err)
				if sink.NeedsOperator(err) && strings.Contains(err.Error(), "refuses walhook's credentials") {
					break
				}
			}
			if last := errs[len(errs)-1]; !sink.NeedsOperator(last) || !strings.Contains(last.Error(), "refuses walhook's credentials") {
				t.Fatalf("Deliver with a wrong password, %d attempts: got %v, want an operator error about the credentials", len(errs), errs)
			}
		})
	}
}

// TestTLS: a cluster that wants mutual TLS (and SCRAM-SHA-256 over it)
// takes the sink's tls settings; without the cluster's CA the attempt is
// an operator's matter naming tls.ca_file, and check names it too.
func TestTLS(t *testing.T) {
	serverCA, clientCA := tlstest.NewCA(t, "server-ca"), tlstest.NewCA(t, "client-ca")
	serverCert, _, _ := serverCA.Issue(t, "kafka", true)
	_, clientCert, clientKey := clientCA.Issue(t, "walhook", false)
	c := cluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: clientCA.Pool, ClientAuth: tls.RequireAndVerifyClientCert}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "walhook", "s3cret-pw"), kfake.SeedTopics(1, "walhook.public.odd_name_x"))
	cfg := testConfig(c.ListenAddrs())
	cfg.Kafka.SASL = config.SASL{Mechanism: "SCRAM-SHA-256", Username: "walhook", Password: "s3cret-pw"}
	cfg.Kafka.TLS = config.TLS{CAFile: serverCA.File, CertFile: clientCert, KeyFile: clientKey}
	if err := brokertest.Deliver(t, newSink(t, cfg), messages(3, 3)); err != nil {
		t.Fatalf("Deliver over mutual TLS: %v", err)
	}

	// The refusal shows when the attempt times out (2 s was too short on a
	// loaded machine).
	cfg.Timeout = 8 * time.Second
	cfg.Kafka.TLS = config.TLS{CertFile: clientCert, KeyFile: clientKey} // the system's CAs
	err := brokertest.Deliver(t, newSink(t, cfg), messages(1, 1))
	if !sink.NeedsOperator(err) || !strings.Contains(err.Error(), "set tls.ca_file") {
		t.Errorf("Deliver without the cluster's CA: got %v, want an operator error naming tls.ca_file", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p := Check(ctx, io.Discard, cfg, nil); len(p) != 1 || !strings.Contains(p[0], "set tls.ca_file") {
		t.Errorf("check without the cluster's CA: got %q, want one problem naming tls.ca_file", p)
	}
}

// TestClusterDown: with the cluster gone an attempt fails within the
// sink's timeout as retryable, not as an operator's matter.
func TestClusterDown(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(1, "walhook.public.odd_name_x"))
	cfg := testConfig(c.ListenAddrs())
	cfg.Timeout = 2 * time.Second
	s := newSink(t, cfg)
	if err := brokertest.Deliver(t, s, messages(2, 2)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	err := brokertest.Deliver(t, s, messages(2, 2))
	if err == nil || sink.NeedsOperator(err) {
		t.Fatalf("Deliver with the cluster down: got %v, want a retryable error", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Deliver with the cluster down took %s, want about the timeout (2s)", took)
	}
	t.Logf("cluster down: %v", err)
}

// TestCheck: check says the cluster took the credentials and whether each
// table's topic exists, naming the fix for one that does not.
func TestCheck(t *testing.T) {
	c := cluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "walhook", "s3cret-pw"), kfake.SeedTopics(3, "walhook.public.orders"))
	cfg := testConfig(c.ListenAddrs())
	cfg.Kafka.SASL = config.SASL{Mechanism: "PLAIN", Username: "walhook", Password: "s3cret-pw"}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out strings.Builder
	p := Check(ctx, &out, cfg, []config.Table{{Schema: "public", Name: "orders"}, {Schema: "public", Name: "odd.name x"}})
	for _, want := range []string{"connected and authenticated", "table public.orders maps to topic walhook.public.orders (3 partitions)",
		"table public.odd.name x maps to topic walhook.public.odd_name_x, which does not exist: unknown topic; create it"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
	if len(p) != 1 || !strings.Contains(p[0], "walhook.public.odd_name_x") {
		t.Errorf("got problems %q, want one about walhook.public.odd_name_x", p)
	}
	cfg.Kafka.SASL.Password = "wr0ng-pw"
	if p := Check(ctx, &out, cfg, nil); len(p) != 1 || !strings.Contains(p[0], "check sasl") || strings.Contains(p[0], "wr0ng-pw") {
		t.Errorf("check with a wrong password: got %q, want one problem naming sasl, without the password", p)
	}
}
