package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/rabbittest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// Acceptance of the Kafka and RabbitMQ sinks through the real binary and a
// real PostgreSQL. Kafka is franz-go's in-process kfake cluster (no Kafka
// server package reaches this machine); RabbitMQ is a real rabbitmq-server.

// consumedMsg is one Kafka or RabbitMQ message as a consumer sees it.
type consumedMsg struct {
	Dest    string // topic or routing key
	Key     string // Kafka record key ("" for null); Kafka only
	Part    int32  // Kafka partition
	Headers map[string]string
	Body    []byte
}

// body is a broker message's JSON body.
type body struct {
	Action   string          `json:"action"`
	Record   json.RawMessage `json:"record"`
	Metadata struct {
		Schema string `json:"table_schema"`
		Table  string `json:"table_name"`
		Key    string `json:"idempotency_key"`
		Sink   string `json:"sink"`
	} `json:"metadata"`
}

// writeAdminBrokerConfig writes a configuration for dsn capturing the
// brokerTables with one broker sink (sinkYAML: its lines after "- name:
// NAME", indented by four spaces) on 16 lanes and the admin server on; it
// returns the path and the admin address.
func writeAdminBrokerConfig(t *testing.T, dsn, slot, name, sinkYAML string) (string, string) {
	t.Helper()
	path := writeSinksConfig(t, t.TempDir(), dsn, slot, `[public.items, 'public."odd.name x"']`,
		"  - name: "+name+"\n    batch_wait: 5ms\n    max_in_flight: 16\n"+sinkYAML)
	return path, withAdmin(t, path)
}

// brokerTables creates the two captured tables: items with a composite key
// and one whose name holds a dot and a space.
func brokerTables(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	exec1(t, conn, `CREATE TABLE items (region text, id int, v int, PRIMARY KEY (region, id))`)
	exec1(t, conn, `CREATE TABLE "odd.name x" (id int PRIMARY KEY, v int, pad text)`)
}

// brokerWorkload runs a mixed workload of n rounds in its own transactions
// and returns how many changes it made: per round an insert into each
// table, an update of the items row, every 5th round a delete of an
// earlier items row; at the end a truncate of "odd.name x".
func brokerWorkload(t *testing.T, dsn string, from, n int) int {
	t.Helper()
	conn := connect(t, dsn)
	changes := 0
	for i := from; i < from+n; i++ {
		region := []string{"eu", "us"}[i%2]
		exec1(t, conn, `INSERT INTO items VALUES ($1, $2, 0)`, region, i)
		exec1(t, conn, `INSERT INTO "odd.name x" VALUES ($1, 0)`, i)
		exec1(t, conn, `UPDATE items SET v = v + 1 WHERE region = $1 AND id = $2`, region, i)
		changes += 3
		if i%5 == 4 {
			exec1(t, conn, `DELETE FROM items WHERE region = $1 AND id = $2`, []string{"eu", "us"}[(i-2)%2], i-2)
			changes++
		}
	}
	return changes
}

// checkBrokerMessages checks what a consumer got: every change once per
// idempotency key (want of them, a truncate among them), the documented
// headers exactly, the destination name from the template, and per key
// (per row), first deliveries in position order. dest maps schema, table
// and action to the expected topic or routing key.
func checkBrokerMessages(t *testing.T, got []consumedMsg, want int, sink string, dest func(table, action string) string) {
	t.Helper()
	seen := map[string]bool{}
	lastPos := map[string]string{} // per row (table and record key), the last first-delivered position
	truncates := 0
	for _, m := range got {
		var b body
		if err := json.Unmarshal(m.Body, &b); err != nil {
			t.Fatalf("body %s: %v", m.Body, err)
		}
		key := b.Metadata.Key
		if len(m.Headers) != 5 || m.Headers["walhook-idempotency-key"] != key || m.Headers["walhook-action"] != b.Action ||
			m.Headers["walhook-table"] != b.Metadata.Schema+"."+b.Metadata.Table || m.Headers["walhook-sink"] != sink ||
			!strings.HasPrefix(key, m.Headers["walhook-commit-lsn"]+":") {
			t.Fatalf("message %s: headers %v do not match the body %s", key, m.Headers, m.Body)
		}
		if d := dest(b.Metadata.Table, b.Action); m.Dest != d {
			t.Errorf("message %s: got destination %q, want %q", key, m.Dest, d)
		}
		if seen[key] {
			continue // a redelivery: consumers dedupe on the key
		}
		seen[key] = true
		if b.Action == "truncate" {
			truncates++
			continue
		}
		var rec struct {
			Region *string `json:"region"`
			ID     int     `json:"id"`
		}
		if err := json.Unmarshal(b.Record, &rec); err != nil {
			t.Fatalf("record %s: %v", b.Record, err)
		}
		row := fmt.Sprintf("%s/%d", b.Metadata.Table, rec.ID)
		if rec.Region != nil {
			row += "/" + *rec.Region
		}
		if last, ok := lastPos[row]; ok && !keyLess(last, key) {
			t.Errorf("row %s: change %s first delivered after %s, want position order", row, key, last)
		}
		lastPos[row] = key
	}
	if len(seen) != want || truncates != 1 {
		t.Errorf("got %d distinct changes (%d truncates) in %d messages, want %d (1 truncate)", len(seen), truncates, len(got), want)
	}
}

// keyLess compares two idempotency keys "LSN:idx" by position.
func keyLess(a, b string) bool {
	var ah, al, ai, bh, bl, bi uint64
	fmt.Sscanf(strings.ReplaceAll(a, ":", " "), "%X/%X %d", &ah, &al, &ai)
	fmt.Sscanf(strings.ReplaceAll(b, ":", " "), "%X/%X %d", &bh, &bl, &bi)
	if ah<<32|al != bh<<32|bl {
		return ah<<32|al < bh<<32|bl
	}
	return ai < bi
}

// runWorkload runs the mixed workload, 180 rounds, while walhook runs, then
// (bigRow) a 10 MB row and a truncate. It returns the number of changes,
// the truncate included. Kills and broker restarts are TestBrokerFaults'.
func runWorkload(t *testing.T, dsn, cfg, slot string, conn *pgx.Conn, bigRow bool) int {
	t.Helper()
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, slot, d)
	changes := brokerWorkload(t, dsn, 0, 180)
	if bigRow { // a 10 MB row, where the broker's limit allows it
		exec1(t, conn, `INSERT INTO "odd.name x" VALUES (1000000, 0, repeat('x', 10 << 20))`)
		changes++
	}
	exec1(t, conn, `TRUNCATE "odd.name x"`)
	return changes + 1
}

// TestKafkaAcceptance: a mixed workload through walhook to Kafka arrives
// once per idempotency key, with the documented topic, key, headers and
// body, in order per row (TestBrokerFaults kills walhook under load).
func TestKafkaAcceptance(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "walhook.public.items", "walhook.public.odd_name_x"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	brokerTables(t, conn)
	cfg, _ := writeAdminBrokerConfig(t, dsn, "kafka_acc", "k", fmt.Sprintf("    type: kafka\n    brokers: [%q]\n    topic: \"walhook.{schema}.{table}\"\n    retry: {initial: 50ms, max: 500ms}\n    timeout: 5s\n", c.ListenAddrs()[0]))
	want := runWorkload(t, dsn, cfg, "kafka_acc", conn, false) // Kafka's default max.message.bytes is 1 MiB

	var got []consumedMsg
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("walhook.public.items", "walhook.public.odd_name_x"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	keys := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(keys) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			m := consumedMsg{Dest: r.Topic, Key: string(r.Key), Part: r.Partition, Headers: map[string]string{}, Body: r.Value}
			for _, h := range r.Headers {
				m.Headers[h.Key] = string(h.Value)
			}
			keys[m.Headers["walhook-idempotency-key"]] = true
			got = append(got, m)
		})
	}
	checkBrokerMessages(t, got, want, "k", func(table, action string) string {
		return "walhook.public." + strings.NewReplacer(".", "_", " ", "_").Replace(table)
	})
	// The record key is the row's key values; one row stays in one partition.
	partOf := map[string]int32{}
	for _, m := range got {
		var b body
		_ = json.Unmarshal(m.Body, &b)
		var rec map[string]any
		_ = json.Unmarshal(b.Record, &rec)
		var wantKey string
		switch {
		case b.Action == "truncate":
			wantKey = ""
		case b.Metadata.Table == "items":
			wantKey = fmt.Sprintf(`[%q,%v]`, rec["region"], rec["id"])
		default:
			wantKey = fmt.Sprintf(`[%v]`, rec["id"])
		}
		if m.Key != wantKey {
			t.Fatalf("%s %s: got key %s, want %s", b.Action, b.Metadata.Key, m.Key, wantKey)
		}
		if p, ok := partOf[m.Dest+m.Key]; ok && p != m.Part && m.Key != "" {
			t.Errorf("key %s of %s in partitions %d and %d, want one", m.Key, m.Dest, p, m.Part)
		}
		partOf[m.Dest+m.Key] = m.Part
	}
	t.Logf("kafka: %d changes, %d records consumed", want, len(got))
}

// TestKafkaUnknownTopic: a topic that does not exist holds only the Kafka
// sink, which retries and names the reason in status last_error and in an
// error line of the log; with
// max_attempts the batches become dead letters, and once the topic exists
// dlq replay delivers them.
func TestKafkaUnknownTopic(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "walhook.public.odd_name_x"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	brokerTables(t, conn)
	cfg, addr := writeAdminBrokerConfig(t, dsn, "kafka_unknown", "k", fmt.Sprintf("    type: kafka\n    brokers: [%q]\n    topic: \"walhook.{schema}.{table}\"\n    retry: {initial: 50ms, max: 200ms, max_attempts: 3}\n    timeout: 5s\n", c.ListenAddrs()[0]))
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "kafka_unknown", d)
	exec1(t, conn, `INSERT INTO items VALUES ('eu', 1, 0)`)
	var lastErrors []string
	waitUntil(t, 30*time.Second, "the items batch dead-lettered", func() bool {
		st := sinkStatus(t, addr, "k")
		if st.LastError != "" {
			lastErrors = append(lastErrors, st.LastError)
		}
		return st.DeadLetters >= 1
	})
	named := false
	for _, e := range lastErrors {
		named = named || strings.Contains(e, `unknown topic "walhook.public.items"`)
	}
	if !named {
		t.Errorf("status last_error: got %q, want it to name the unknown topic walhook.public.items", lastErrors)
	}
	checkRefusalLogged(t, d.out.String(), `unknown topic \"walhook.public.items\"`)
	// The sink goes on with the tables whose topic exists.
	exec1(t, conn, `INSERT INTO "odd.name x" VALUES (1, 0)`)
	waitUntil(t, 30*time.Second, "the next row delivered", func() bool { return sinkStatus(t, addr, "k").Delivered >= 1 })
	createKafkaTopic(t, c.ListenAddrs(), "walhook.public.items")
	if code, out := runWalhook(t, "dlq", "replay", "--sink", "k", "--config", cfg); code != 0 {
		t.Fatalf("dlq replay: exit %d:\n%s", code, out)
	}
	waitUntil(t, 30*time.Second, "the dead letter replayed", func() bool { return sinkStatus(t, addr, "k").DeadLetters == 0 })
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("walhook.public.items"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if fs := cl.PollFetches(ctx); fs.NumRecords() != 1 {
		t.Errorf("got %d records in walhook.public.items after the replay, want 1", fs.NumRecords())
	}
}

// checkRefusalLogged checks that out, walhook's log, holds an error line
// of a delivery the destination refused, naming what (as the text handler
// quotes it).
func checkRefusalLogged(t *testing.T, out, what string) {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, `level=ERROR msg="delivery failed: the destination refuses until an operator acts"`) && strings.Contains(line, what) {
			return
		}
	}
	t.Errorf("the log has no error line of the refused delivery naming %s:\n%s", what, out)
}

// createKafkaTopic creates a topic of one partition.
func createKafkaTopic(t *testing.T, brokers []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 1, 1
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// TestRabbitMQAcceptance: a mixed workload through walhook to RabbitMQ, a
// 10 MB row among it, arrives once per idempotency key with the documented
// routing key, properties, headers and body, in order per row
// (TestBrokerFaults kills walhook under load and restarts RabbitMQ).
func TestRabbitMQAcceptance(t *testing.T) {
	t.Parallel()
	srv := rabbittest.Lazy(t) // exchange and queue of its own on the package's node
	srv.Declare(t, "walhook-acc", "topic", "all-acc", "#")
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	brokerTables(t, conn)
	cfg, _ := writeAdminBrokerConfig(t, dsn, "rabbit_acc", "r", fmt.Sprintf("    type: rabbitmq\n    url: %q\n    exchange: walhook-acc\n    routing_key: \"{schema}.{table}.{action}\"\n    retry: {initial: 50ms, max: 500ms}\n    timeout: 5s\n", srv.URL))
	want := runWorkload(t, dsn, cfg, "rabbit_acc", conn, true)
	var got []consumedMsg
	keys := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(keys) < want && time.Now().Before(deadline) {
		for _, d := range srv.Get(t, "all-acc") {
			if d.MessageId == "" || d.ContentType != "application/json" || d.DeliveryMode != 2 {
				t.Fatalf("message %s: content_type %q, delivery_mode %d; want a message_id, application/json, 2", d.MessageId, d.ContentType, d.DeliveryMode)
			}
			m := consumedMsg{Dest: d.RoutingKey, Headers: map[string]string{}, Body: d.Body}
			for k, v := range d.Headers {
				s, ok := v.(string)
				if !ok {
					t.Fatalf("header %s: got %T, want a string", k, v)
				}
				m.Headers[k] = s
			}
			if d.MessageId != m.Headers["walhook-idempotency-key"] {
				t.Fatalf("message_id %s, want the idempotency key %s", d.MessageId, m.Headers["walhook-idempotency-key"])
			}
			keys[d.MessageId] = true
			got = append(got, m)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkBrokerMessages(t, got, want, "r", func(table, action string) string {
		return "public." + strings.NewReplacer(".", "_", " ", "_").Replace(table) + "." + action
	})
	t.Logf("rabbitmq: %d changes, %d messages consumed", want, len(got))
}

// TestRabbitMQUnroutable: an exchange that routes nothing holds only the
// RabbitMQ sink, which retries and names the reason in status last_error
// and in an error line of the log;
// with max_attempts the batches become dead letters, and once a queue is
// bound dlq replay delivers them.
func TestRabbitMQUnroutable(t *testing.T) {
	t.Parallel()
	srv := rabbittest.Lazy(t) // exchange and queue of its own on the package's node
	srv.Declare(t, "walhook-unroutable", "topic", "", "")
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	brokerTables(t, conn)
	cfg, addr := writeAdminBrokerConfig(t, dsn, "rabbit_unroutable", "r", fmt.Sprintf("    type: rabbitmq\n    url: %q\n    exchange: walhook-unroutable\n    routing_key: \"{schema}.{table}.{action}\"\n    retry: {initial: 50ms, max: 200ms, max_attempts: 3}\n    timeout: 5s\n", srv.URL))
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "rabbit_unroutable", d)
	exec1(t, conn, `INSERT INTO items VALUES ('eu', 1, 0)`)
	var lastError string
	waitUntil(t, 30*time.Second, "the batch dead-lettered", func() bool {
		st := sinkStatus(t, addr, "r")
		if st.LastError != "" {
			lastError = st.LastError
		}
		return st.DeadLetters >= 1
	})
	if !strings.Contains(lastError, `unroutable: exchange "walhook-unroutable" routes nothing for routing key "public.items.insert"`) {
		t.Errorf("status last_error: got %q, want it to name the unroutable routing key", lastError)
	}
	checkRefusalLogged(t, d.out.String(), `unroutable: exchange \"walhook-unroutable\" routes nothing for routing key \"public.items.insert\"`)
	srv.Declare(t, "walhook-unroutable", "topic", "all-unroutable", "#")
	if code, out := runWalhook(t, "dlq", "replay", "--sink", "r", "--config", cfg); code != 0 {
		t.Fatalf("dlq replay: exit %d:\n%s", code, out)
	}
	waitUntil(t, 30*time.Second, "the dead letter replayed", func() bool { return sinkStatus(t, addr, "r").DeadLetters == 0 })
	if got := srv.Get(t, "all-unroutable"); len(got) != 1 || got[0].RoutingKey != "public.items.insert" {
		t.Errorf("got %d messages after the replay, want the one insert", len(got))
	}
}

// TestRabbitMQWrongPassword: a broker that refuses walhook's password
// holds only its own sink: a webhook sink beside it gets every row, while
// status and the log show the refusal by name (and neither the password);
// once the password is right (a reload), the held rows arrive.
func TestRabbitMQWrongPassword(t *testing.T) {
	t.Parallel()
	srv := rabbittest.Lazy(t) // exchange and queue of its own on the package's node
	srv.Declare(t, "walhook-auth", "topic", "all-auth", "#")
	rcv := webhooktest.New(t, "")
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	brokerTables(t, conn)
	bad := strings.Replace(srv.URL, "guest:guest@", "guest:wr0ng-pw@", 1)
	cfg, addr := writeAdminBrokerConfig(t, dsn, "rabbit_auth", "r", fmt.Sprintf("    type: rabbitmq\n    url: %q\n    exchange: walhook-auth\n    routing_key: \"{schema}.{table}.{action}\"\n    retry: {initial: 50ms, max: 200ms}\n    timeout: 5s\n"+
		"  - name: w\n    url: %q\n    batch_wait: 5ms\n    retry: {initial: 50ms, max: 200ms}\n", bad, rcv.URL))
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "rabbit_auth", d)
	for i := range 20 {
		exec1(t, conn, `INSERT INTO items VALUES ('eu', $1, 0)`, i)
	}
	rcv.WaitFor(t, 30*time.Second, "the webhook sink's 20 rows", func(m []webhooktest.Message) bool { return len(m) >= 20 })
	var lastError string
	waitUntil(t, 30*time.Second, "the refusal in status", func() bool {
		lastError = sinkStatus(t, addr, "r").LastError
		return strings.Contains(lastError, "refuses walhook's credentials")
	})
	if strings.Contains(lastError, "wr0ng-pw") {
		t.Errorf("status last_error shows the password: %q", lastError)
	}
	checkRefusalLogged(t, d.out.String(), "refuses walhook's credentials")
	if strings.Contains(d.out.String(), "wr0ng-pw") {
		t.Errorf("the log shows the password:\n%s", d.out.String())
	}
	if n := len(srv.Get(t, "all-auth")); n != 0 {
		t.Fatalf("got %d messages with a wrong password, want 0", n)
	}
	editConfig(t, cfg, bad, srv.URL)
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	got := 0
	waitUntil(t, 30*time.Second, "the 20 held rows on RabbitMQ", func() bool {
		got += len(srv.Get(t, "all-auth"))
		return got >= 20
	})
}

// TestCheckBrokerSinks: walhook check names, per broker sink, each table's
// topic or routing key, a missing topic and its fix (exit 1), and a
// missing exchange and its fix.
func TestCheckBrokerSinks(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "walhook.public.items"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := rabbittest.Lazy(t) // exchanges of its own on the package's node
	srv.Declare(t, "walhook-check", "topic", "all-check", "#")
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	brokerTables(t, conn)
	cfg, _ := writeAdminBrokerConfig(t, dsn, "broker_check", "k", fmt.Sprintf("    type: kafka\n    brokers: [%q]\n    topic: \"walhook.{schema}.{table}\"\n"+
		"  - name: r\n    type: rabbitmq\n    url: %q\n    exchange: walhook-check\n    routing_key: \"{schema}.{table}.{action}\"\n"+
		"  - name: r2\n    type: rabbitmq\n    url: %q\n    exchange: nowhere-check\n    routing_key: \"{schema}.{table}\"\n", c.ListenAddrs()[0], srv.URL, srv.URL))
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, want := range []string{
		"table public.items maps to topic walhook.public.items (2 partitions)",
		"table public.odd.name x maps to topic walhook.public.odd_name_x, which does not exist: unknown topic; create it",
		"table public.odd.name x maps to routing key public.odd_name_x.delete",
		`exchange "walhook-check" exists`,
		`exchange "nowhere-check" does not exist; declare it`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
