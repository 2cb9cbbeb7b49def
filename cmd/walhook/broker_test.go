package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walhook/walhook/internal/natstest"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/rabbittest"
	"github.com/walhook/walhook/internal/redistest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// brokerMsg is one message a broker holds, whatever the broker.
type brokerMsg struct {
	Name    string            // subject or stream
	Headers map[string]string // the walhook-* headers (and Nats-Msg-Id)
	Body    []byte
}

// brokerBody is what a test reads of a broker message's body.
type brokerBody struct {
	Action   string          `json:"action"`
	Record   json.RawMessage `json:"record"`
	Changes  json.RawMessage `json:"changes"`
	Metadata struct {
		TableSchema    string `json:"table_schema"`
		TableName      string `json:"table_name"`
		CommitLSN      string `json:"commit_lsn"`
		IdempotencyKey string `json:"idempotency_key"`
		Sink           string `json:"sink"`
	} `json:"metadata"`
}

// brokerUnderTest is a real broker and how a test reads it.
type brokerUnderTest struct {
	kind string
	// sink is the YAML of a sink named name of the broker's type.
	sink func(name string) string
	// messages returns what the broker holds, in its order, for names.
	messages func(t *testing.T, names []string) []brokerMsg
	// kill and restart the broker; nil for kfake, which runs in the
	// test's own process.
	kill    func()
	restart func()
	// dedupes says the broker keeps each idempotency key once.
	dedupes bool
}

func natsBroker(t *testing.T) *brokerUnderTest {
	srv := natstest.Start(t, natstest.Options{})
	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 2*time.Minute)
	return &brokerUnderTest{
		kind: "nats",
		sink: func(name string) string {
			return fmt.Sprintf("  - name: %s\n    type: nats\n    url: %s\n    subject: \"walhook.{schema}.{table}\"\n", name, srv.URL)
		},
		messages: func(t *testing.T, _ []string) []brokerMsg {
			var out []brokerMsg
			for _, m := range srv.Messages(t, "WALHOOK") {
				h := map[string]string{}
				for k, v := range m.Header {
					h[k] = strings.Join(v, ",")
				}
				out = append(out, brokerMsg{Name: m.Subject, Headers: h, Body: m.Data})
			}
			return out
		},
		kill:    func() { srv.Kill() },
		restart: srv.Restart,
		dedupes: true,
	}
}

func redisBroker(t *testing.T) *brokerUnderTest {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	return &brokerUnderTest{
		kind: "redis",
		sink: func(name string) string {
			return fmt.Sprintf("  - name: %s\n    type: redis\n    url: %s\n    stream: \"walhook:{schema}.{table}\"\n", name, srv.URL)
		},
		messages: func(t *testing.T, names []string) []brokerMsg {
			var out []brokerMsg
			for _, name := range names {
				for _, e := range srv.Stream(t, name) {
					h := map[string]string{}
					var body []byte
					for k, v := range e.Values {
						if k == "data" {
							body = []byte(v.(string))
							continue
						}
						h[k] = v.(string)
					}
					out = append(out, brokerMsg{Name: name, Headers: h, Body: body})
				}
			}
			return out
		},
		kill:    func() { srv.Kill() },
		restart: srv.Restart,
	}
}

func kafkaBroker(t *testing.T) *brokerUnderTest {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "walhook.public.kv"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var cl *kgo.Client
	var got []brokerMsg
	return &brokerUnderTest{
		kind: "kafka",
		sink: func(name string) string {
			return fmt.Sprintf("  - name: %s\n    type: kafka\n    brokers: [%q]\n    topic: \"walhook.{schema}.{table}\"\n", name, c.ListenAddrs()[0])
		},
		// messages consumes the topics from the start, the first time,
		// and then from where it stopped: until a poll finds nothing new.
		messages: func(t *testing.T, names []string) []brokerMsg {
			if cl == nil {
				cl, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(names...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(cl.Close)
			}
			for n := -1; n != 0; {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				fs := cl.PollFetches(ctx)
				cancel()
				n = 0
				fs.EachRecord(func(r *kgo.Record) {
					h := map[string]string{}
					for _, rh := range r.Headers {
						h[rh.Key] = string(rh.Value)
					}
					got = append(got, brokerMsg{Name: r.Topic, Headers: h, Body: r.Value})
					n++
				})
			}
			return got
		},
	}
}

func rabbitBroker(t *testing.T) *brokerUnderTest {
	srv := rabbittest.New(t)
	srv.Declare(t, "walhook", "topic", "all", "#")
	var got []brokerMsg
	return &brokerUnderTest{
		kind: "rabbitmq",
		sink: func(name string) string {
			return fmt.Sprintf("  - name: %s\n    type: rabbitmq\n    url: %q\n    exchange: walhook\n    routing_key: \"{schema}.{table}.{action}\"\n", name, srv.URL)
		},
		// messages takes what the queue bound to every routing key holds
		// now, after what earlier calls took.
		messages: func(t *testing.T, _ []string) []brokerMsg {
			for _, d := range srv.Get(t, "all") {
				h := map[string]string{}
				for k, v := range d.Headers {
					h[k] = fmt.Sprint(v)
				}
				got = append(got, brokerMsg{Name: d.RoutingKey, Headers: h, Body: d.Body})
			}
			return got
		},
		kill: srv.Kill,
		restart: func() {
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// writeBrokerConfig writes a configuration for dsn whose one sink, s, is
// the broker's, on 16 lanes, with extra lines of the sink's.
func writeBrokerConfig(t *testing.T, dir, dsn, slot, tables string, b *brokerUnderTest, extra string) string {
	t.Helper()
	return writeSinksConfig(t, dir, dsn, slot, tables,
		b.sink("s")+"    batch_wait: 5ms\n    max_in_flight: 16\n    timeout: 5s\n    retry: {initial: 20ms, max: 300ms}\n"+extra)
}

// writeSinksConfig writes a configuration for dsn capturing tables (a YAML
// list) on slot and publication slot, with the admin server off, and
// sinks, the YAML of the sinks list.
func writeSinksConfig(t *testing.T, dir, dsn, slot, tables, sinks string) string {
	t.Helper()
	claimSlot(t, dsn, slot)
	var y strings.Builder
	fmt.Fprintf(&y, "source:\n  url: %q\n  slot: %s\n  publication: %s\n  heartbeat: 200ms\n  receive_timeout: 5s\n  tables: %s\n", dsn, slot, slot, tables)
	fmt.Fprintf(&y, "state:\n  path: %q\n", filepath.Join(dir, "walhook.state"))
	y.WriteString("server:\n  listen: \"\"\nlog:\n  format: text\n  level: info\nsinks:\n")
	y.WriteString(sinks)
	path := filepath.Join(dir, "walhook.yaml")
	if err := os.WriteFile(path, []byte(y.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBrokerMixedWorkload: inserts, updates, deletes and a truncate, in a
// table whose name holds a dot and a space too, arrive through the real
// binary (16 lanes) once per idempotency key, with the documented body,
// the exact lowercase header names and the mapped subject or stream, each
// row's changes in position order; on Redis a 10 MB row too.
func TestBrokerMixedWorkload(t *testing.T) {
	t.Parallel()
	for _, mk := range []func(*testing.T) *brokerUnderTest{natsBroker, redisBroker} {
		b := mk(t)
		t.Run(b.kind, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t, pgtest.Shared())
			conn := connect(t, dsn)
			exec1(t, conn, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
			exec1(t, conn, `CREATE TABLE "odd.name x" (id int PRIMARY KEY, v text)`)
			slot := "broker_mixed_" + b.kind
			cfg := writeBrokerConfig(t, t.TempDir(), dsn, slot, `[public.items, 'public."odd.name x"']`, b, "")
			d := startWalhook(t, "run", "--config", cfg)
			waitStreaming(t, conn, slot, d)

			exec1(t, conn, `INSERT INTO items SELECT g, 'a' FROM generate_series(1, 50) g`)
			exec1(t, conn, `UPDATE items SET v = 'b' WHERE id <= 20`)
			exec1(t, conn, `DELETE FROM items WHERE id > 40`)
			exec1(t, conn, `INSERT INTO "odd.name x" VALUES (1, 'x'), (2, 'y')`)
			exec1(t, conn, `UPDATE "odd.name x" SET v = 'z' WHERE id = 1`)
			big := 0
			if b.kind == "redis" {
				// A 10 MB row, where the broker takes it (NATS's
				// max_payload is 1 MB by default).
				exec1(t, conn, `INSERT INTO "odd.name x" VALUES (3, repeat('x', 10 << 20))`)
				big = 1
			}
			exec1(t, conn, `TRUNCATE items`)
			exec1(t, conn, `INSERT INTO items VALUES (7, 'after')`)
			want := 50 + 20 + 10 + 2 + 1 + 1 + 1 + big

			names := map[string]string{"items": "walhook.public.items", "odd.name x": "walhook.public.odd_name_x"}
			if b.kind == "redis" {
				names = map[string]string{"items": "walhook:public.items", "odd.name x": "walhook:public.odd_name x"}
			}
			streams := []string{names["items"], names["odd.name x"]}
			var msgs []brokerMsg
			waitUntil(t, 30*time.Second, fmt.Sprintf("%d messages", want), func() bool {
				msgs = b.messages(t, streams)
				return len(msgs) >= want
			})
			time.Sleep(200 * time.Millisecond) // nothing more may come
			msgs = b.messages(t, streams)
			if len(msgs) != want {
				t.Fatalf("got %d messages, want %d", len(msgs), want)
			}
			seen := map[string]bool{}
			lastKey := map[string]string{} // per row, the idempotency key of its last change so far
			actions := map[string]int{}
			largest := 0
			for i, m := range msgs {
				largest = max(largest, len(m.Body))
				var body brokerBody
				if err := json.Unmarshal(m.Body, &body); err != nil {
					t.Fatalf("message %d: body %q: %v", i, m.Body, err)
				}
				md := body.Metadata
				key := md.IdempotencyKey
				if seen[key] {
					t.Errorf("message %d: idempotency key %s twice", i, key)
				}
				seen[key] = true
				actions[body.Action]++
				if m.Name != names[md.TableName] {
					t.Errorf("message %d (%s): got %q, want %q", i, md.TableName, m.Name, names[md.TableName])
				}
				wantHeaders := map[string]string{
					"walhook-idempotency-key": key,
					"walhook-table":           md.TableSchema + "." + md.TableName,
					"walhook-action":          body.Action,
					"walhook-commit-lsn":      md.CommitLSN,
					"walhook-sink":            "s",
				}
				if b.kind == "nats" {
					wantHeaders["Nats-Msg-Id"] = key
				}
				if !mapsEqual(m.Headers, wantHeaders) {
					t.Errorf("message %d: got headers %v, want %v", i, m.Headers, wantHeaders)
				}
				if md.Sink != "s" || md.TableSchema != "public" {
					t.Errorf("message %d: metadata %+v", i, md)
				}
				if (body.Action == "truncate") != (string(body.Record) == "null") {
					t.Errorf("message %d: %s with record %s", i, body.Action, body.Record)
				}
				if body.Action != "truncate" {
					var rec struct{ ID int }
					if err := json.Unmarshal(body.Record, &rec); err != nil {
						t.Fatalf("message %d: record %s: %v", i, body.Record, err)
					}
					row := fmt.Sprintf("%s/%d", md.TableName, rec.ID)
					if last, ok := lastKey[row]; ok && !keyLess(last, key) {
						t.Errorf("row %s: change %s arrived after %s, want position order", row, key, last)
					}
					lastKey[row] = key
				}
			}
			if big > 0 && largest < 10<<20 {
				t.Errorf("the largest body is %d bytes, want the 10 MB row's", largest)
			}
			wantActions := map[string]int{"insert": 50 + 2 + 1 + big, "update": 20 + 1, "delete": 10, "truncate": 1}
			for a, n := range wantActions {
				if actions[a] != n {
					t.Errorf("got %d %s messages, want %d", actions[a], a, n)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestBrokerFaults: for every broker type, under a steady load on 16
// lanes, walhook is killed with SIGKILL every second, 8 times, and the
// broker (NATS, Redis, RabbitMQ; Kafka is kfake, in this process) is killed
// while walhook streams and restarted a second later. Every committed
// version of every row arrives, each row's versions first arrive in commit
// order, and on NATS no idempotency key reaches the stream twice.
func TestBrokerFaults(t *testing.T) {
	t.Parallel()
	for _, bt := range []struct {
		kind  string
		start func(*testing.T) *brokerUnderTest
	}{
		// RabbitMQ first: it takes longest (a node starts, and restarts,
		// in seconds), and go test runs GOMAXPROCS subtests at once.
		{"rabbitmq", rabbitBroker}, {"nats", natsBroker}, {"redis", redisBroker}, {"kafka", kafkaBroker},
	} {
		t.Run(bt.kind, func(t *testing.T) {
			t.Parallel()
			b := bt.start(t)
			dsn := pgtest.NewDatabase(t, pgtest.Shared())
			conn := connect(t, dsn)
			exec1(t, conn, `CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL)`)
			slot := "broker_faults_" + b.kind
			cfg := writeBrokerConfig(t, t.TempDir(), dsn, slot, `[public.kv]`, b, "    batch_size: 10\n")
			start := time.Now()
			d := killStorm(t, conn, dsn, cfg, slot, 8, b)
			storm := time.Since(start)

			names := []string{"walhook.public.kv"}
			if b.kind == "redis" {
				names = []string{"walhook:public.kv"}
			}
			msgs, distinct := waitKV(t, conn, b, names)
			t.Logf("walhook SIGKILLed 8 times in %v, the broker restarted %t; %d messages, %d distinct idempotency keys",
				storm.Round(time.Millisecond), b.restart != nil, len(msgs), distinct)
			if b.dedupes && len(msgs) != distinct {
				t.Errorf("%d idempotency keys reached the stream more than once; want none (Nats-Msg-Id dedupes)", len(msgs)-distinct)
			}
			if !d.running() {
				t.Errorf("walhook exited by itself: %v", d.err)
			}
		})
	}
}

// TestBrokerRefusesThenReplays: walhook check names the missing JetStream
// stream and its fix; walhook run retries, shows the reason by name in
// status (last_error), moves the batches to the dead letters after
// max_attempts, and dlq replay delivers them once the stream exists.
func TestBrokerRefusesThenReplays(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{})
	b := &brokerUnderTest{kind: "nats", sink: func(name string) string {
		return fmt.Sprintf("  - name: %s\n    type: nats\n    url: %s\n    subject: \"walhook.{schema}.{table}\"\n", name, srv.URL)
	}}
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	cfg := writeBrokerConfig(t, t.TempDir(), dsn, "broker_dlq", `[public.t]`, b, "    batch_size: 1\n")
	editConfig(t, cfg, "max_in_flight: 16", "max_in_flight: 1")
	editConfig(t, cfg, "retry: {initial: 20ms, max: 300ms}", "retry: {initial: 20ms, max: 100ms, max_attempts: 3}")

	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 1 || !strings.Contains(out, "table public.t maps to subject walhook.public.t, which no JetStream stream takes; create one") {
		t.Fatalf("check without a stream: exit %d, want 1 naming the missing stream:\n%s", code, out)
	}

	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "broker_dlq", d)
	for i := 1; i <= 3; i++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1)`, i)
	}
	var status string
	waitUntil(t, 30*time.Second, "last_error to name the missing stream", func() bool {
		_, status = runWalhook(t, "status", "--json", "--config", cfg)
		return strings.Contains(status, `no JetStream stream takes subject \"walhook.public.t\"`)
	})
	waitUntil(t, 30*time.Second, "3 dead letters", func() bool {
		return metrics(t, addr)[`walhook_dead_letters{sink="s"}`] == 3
	})
	if !strings.Contains(d.out.String(), "level=ERROR msg=\"delivery failed: the destination refuses until an operator acts\"") {
		t.Errorf("the log does not show the refusal as an error:\n%s", d.out.String())
	}

	srv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	if code, out := runWalhook(t, "check", "--config", cfg); code != 0 || !strings.Contains(out, "taken by stream WALHOOK (duplicate window 2m0s)") {
		t.Errorf("check with the stream: exit %d, want 0 naming the stream:\n%s", code, out)
	}
	if code, out := runWalhook(t, "dlq", "replay", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("dlq replay: exit %d:\n%s", code, out)
	}
	waitUntil(t, 30*time.Second, "the 3 replayed rows in the stream", func() bool {
		return len(srv.Messages(t, "WALHOOK")) == 3
	})
	waitUntil(t, 30*time.Second, "no dead letters left", func() bool {
		return metrics(t, addr)[`walhook_dead_letters{sink="s"}`] == 0
	})
}

// TestBrokerReload: on SIGHUP a broker sink's subject changes live (the
// next change goes to the new subject, through a new connection), and a
// Redis sink added beside it starts receiving.
func TestBrokerReload(t *testing.T) {
	t.Parallel()
	nsrv := natstest.Start(t, natstest.Options{})
	nsrv.AddStream(t, "WALHOOK", []string{"walhook.>", "moved.>"}, 0)
	rsrv := redistest.Start(t, redistest.Options{})
	b := &brokerUnderTest{kind: "nats", sink: func(name string) string {
		return fmt.Sprintf("  - name: %s\n    type: nats\n    url: %s\n    subject: \"walhook.{schema}.{table}\"\n", name, nsrv.URL)
	}}
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	cfg := writeBrokerConfig(t, t.TempDir(), dsn, "broker_reload", `[public.t]`, b, "")
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "broker_reload", d)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	subjects := func() []string {
		var out []string
		for _, m := range nsrv.Messages(t, "WALHOOK") {
			out = append(out, m.Subject)
		}
		return out
	}
	waitUntil(t, 30*time.Second, "row 1 in the stream", func() bool { return len(subjects()) == 1 })

	editConfig(t, cfg, `subject: "walhook.{schema}.{table}"`, `subject: "moved.{table}.{action}"`)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "  - name: r\n    type: redis\n    url: %s\n    stream: \"walhook:{table}\"\n    batch_wait: 5ms\n", rsrv.URL)
	f.Close()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, d, "configuration reloaded", 1, 30*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	waitUntil(t, 30*time.Second, "row 2 in the stream", func() bool { return len(subjects()) == 2 })
	if got := subjects(); got[1] != "moved.t.insert" {
		t.Errorf("after the reload: got subjects %q, want the second on moved.t.insert", got)
	}
	waitUntil(t, 30*time.Second, "row 2 in the added Redis sink's stream", func() bool {
		return len(rsrv.Stream(t, "walhook:t")) == 1
	})
}

// TestBrokerDownWebhookGoesOn: a webhook sink and a NATS sink side by
// side; with the NATS server down, the webhook gets all 60,000 rows (the
// NATS sink's backlog takes them); once the server is back, the NATS sink
// catches up, every row once.
func TestBrokerDownWebhookGoesOn(t *testing.T) {
	t.Parallel()
	const rows = 60000
	nsrv := natstest.Start(t, natstest.Options{})
	nsrv.AddStream(t, "WALHOOK", []string{"walhook.>"}, 0)
	nsrv.Kill()
	rcv := webhooktest.New(t, "")
	b := &brokerUnderTest{kind: "nats", sink: func(name string) string {
		return fmt.Sprintf("  - name: %s\n    type: nats\n    url: %s\n    subject: \"walhook.{schema}.{table}\"\n", name, nsrv.URL)
	}}
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	cfg := writeBrokerConfig(t, t.TempDir(), dsn, "broker_side", `[public.t]`, b,
		"    batch_size: 500\n  - name: w\n    url: \""+rcv.URL+"\"\n    batch_size: 500\n    batch_wait: 5ms\n")
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "broker_side", d)

	start := time.Now()
	for lo := 1; lo <= rows; lo += 10000 {
		exec1(t, conn, `INSERT INTO t SELECT g FROM generate_series($1::int, $2::int) g`, lo, lo+9999)
	}
	rcv.WaitCount(t, rows, 90*time.Second)
	t.Logf("the webhook got %d rows in %v with the NATS server down", rows, time.Since(start).Round(time.Millisecond))

	nsrv.Restart()
	start = time.Now()
	waitUntil(t, 60*time.Second, "every row in the stream", func() bool {
		return streamCount(t, nsrv) >= rows
	})
	t.Logf("the NATS sink caught up in %v", time.Since(start).Round(time.Millisecond))
	if n := streamCount(t, nsrv); n != rows {
		t.Errorf("got %d messages in the stream, want %d", n, rows)
	}
}

// streamCount is how many messages the WALHOOK stream holds.
func streamCount(t *testing.T, srv *natstest.Server) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := srv.JetStream(t).Stream(ctx, "WALHOOK")
	if err != nil {
		t.Fatal(err)
	}
	return int(st.CachedInfo().State.Msgs)
}

// TestBrokerBackfillFilterColumns: a Redis sink's filter and columns act
// as a webhook's, and walhook backfill sends the table's rows through it
// as action read.
func TestBrokerBackfillFilterColumns(t *testing.T) {
	t.Parallel()
	b := redisBroker(t)
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, secret text, keep bool)`)
	exec1(t, conn, `INSERT INTO t SELECT g, 'pw', g % 2 = 0 FROM generate_series(1, 100) g`)
	cfg := writeBrokerConfig(t, t.TempDir(), dsn, "broker_bf", `[public.t]`, b,
		"    filter: 'record.keep == true'\n    columns: {public.t: {exclude: [secret]}}\n")
	withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "broker_bf", d)
	if code, out := runWalhook(t, "backfill", "--sink", "s", "--wait", "--config", cfg); code != 0 {
		t.Fatalf("backfill: exit %d:\n%s", code, out)
	}
	exec1(t, conn, `UPDATE t SET keep = true WHERE id = 1`)
	var msgs []brokerMsg
	waitUntil(t, 30*time.Second, "51 entries", func() bool {
		msgs = b.messages(t, []string{"walhook:public.t"})
		return len(msgs) >= 51
	})
	reads := 0
	for _, m := range msgs {
		var body brokerBody
		if err := json.Unmarshal(m.Body, &body); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(body.Record), "secret") {
			t.Errorf("a record with the excluded column: %s", body.Record)
		}
		if body.Action == "read" {
			reads++
		}
		if m.Headers["walhook-action"] != body.Action {
			t.Errorf("walhook-action %q, body action %q", m.Headers["walhook-action"], body.Action)
		}
	}
	if reads != 50 || len(msgs) != 51 {
		t.Errorf("got %d entries, %d of them read; want 51, 50 read (the even rows) and the update", len(msgs), reads)
	}
}
