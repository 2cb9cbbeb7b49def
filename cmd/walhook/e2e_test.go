package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestDeliversChangesInOrder runs inserts, updates and deletes on two
// tables and checks what a signed receiver gets: every change, in commit
// order per row, in the documented JSON.
func TestDeliversChangesInOrder(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10,2), tags text[], meta jsonb, paid_at timestamptz)`)
	exec1(t, conn, `CREATE TABLE customers (id bigint PRIMARY KEY, name text, vip bool, avatar bytea, born date, score float8)`)

	rcv := webhooktest.New(t, testSecret)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "e2e_order", "  tables: [public.orders, customers]\n",
		sinkConf{Name: "orders", URL: rcv.URL, Secret: testSecret, Extra: "    batch_size: 7\n    max_in_flight: 4\n    headers: {X-Test: static}\n"})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "e2e_order", d)

	// The workload: 20 orders and 5 customers, each row changed several
	// times, some in multi-statement transactions.
	type rowKey struct {
		table string
		id    int
	}
	want := map[rowKey][]string{} // per row: the actions in commit order
	exec1(t, conn, `INSERT INTO orders VALUES (1, 'new', 19.90, '{a,"b c"}', '{"k": 1}', '2026-11-26 11:20:00.123456+00')`)
	want[rowKey{"orders", 1}] = append(want[rowKey{"orders", 1}], "insert")
	for i := 2; i <= 20; i++ {
		exec1(t, conn, `INSERT INTO orders (id, status, amount) VALUES ($1, 'new', $2)`, i, i)
		want[rowKey{"orders", i}] = append(want[rowKey{"orders", i}], "insert")
	}
	for i := 1; i <= 5; i++ {
		exec1(t, conn, `INSERT INTO customers VALUES ($1, $2, $3, '\x0001ff', '2000-01-31', 1.5)`, i, fmt.Sprintf("c%d", i), i%2 == 0)
		want[rowKey{"customers", i}] = append(want[rowKey{"customers", i}], "insert")
	}
	for round := 0; round < 3; round++ {
		tx, err := conn.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 20; i += 2 {
			if _, err := tx.Exec(context.Background(), `UPDATE orders SET status = $2 WHERE id = $1`, i, fmt.Sprintf("s%d", round)); err != nil {
				t.Fatal(err)
			}
			want[rowKey{"orders", i}] = append(want[rowKey{"orders", i}], "update")
		}
		if _, err := tx.Exec(context.Background(), `UPDATE customers SET score = score + 1 WHERE id = 3`); err != nil {
			t.Fatal(err)
		}
		want[rowKey{"customers", 3}] = append(want[rowKey{"customers", 3}], "update")
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	exec1(t, conn, `DELETE FROM orders WHERE id IN (2, 4)`)
	want[rowKey{"orders", 2}] = append(want[rowKey{"orders", 2}], "delete")
	want[rowKey{"orders", 4}] = append(want[rowKey{"orders", 4}], "delete")
	exec1(t, conn, `DELETE FROM customers WHERE id = 5`)
	want[rowKey{"customers", 5}] = append(want[rowKey{"customers", 5}], "delete")
	total := 0
	for _, v := range want {
		total += len(v)
	}

	msgs := rcv.WaitCount(t, total, 60*time.Second)
	if len(msgs) != total {
		t.Fatalf("got %d messages, want %d (no redelivery expected without faults)", len(msgs), total)
	}
	got := map[rowKey][]string{}
	lastPos := map[rowKey]string{}
	seen := map[string]bool{}
	for _, m := range msgs {
		var rec struct {
			ID int `json:"id"`
		}
		if err := json.Unmarshal(m.Record, &rec); err != nil {
			t.Fatalf("record %s: %v", m.Record, err)
		}
		k := rowKey{m.Metadata.TableName, rec.ID}
		got[k] = append(got[k], m.Action)
		if seen[m.Metadata.IdempotencyKey] {
			t.Errorf("idempotency key %s delivered twice", m.Metadata.IdempotencyKey)
		}
		seen[m.Metadata.IdempotencyKey] = true
		if want := m.Metadata.CommitLSN + ":" + fmt.Sprint(m.Metadata.CommitIdx); m.Metadata.IdempotencyKey != want {
			t.Errorf("got idempotency key %s, want %s", m.Metadata.IdempotencyKey, want)
		}
		if prev, ok := lastPos[k]; ok && !positionLess(t, prev, m.Metadata.IdempotencyKey) {
			t.Errorf("row %v: %s delivered after %s", k, m.Metadata.IdempotencyKey, prev)
		}
		lastPos[k] = m.Metadata.IdempotencyKey
		if m.Metadata.Sink != "orders" || m.Metadata.TableSchema != "public" {
			t.Errorf("got metadata %+v, want sink orders and schema public", m.Metadata)
		}
	}
	for k, w := range want {
		if strings.Join(got[k], ",") != strings.Join(w, ",") {
			t.Errorf("row %v: got actions %v, want %v", k, got[k], w)
		}
	}

	// The first message, exactly as documented.
	first := msgs[0]
	for _, m := range msgs {
		if m.Metadata.TableName == "orders" && m.Action == "insert" && strings.Contains(string(m.Record), `"id":1,`) {
			first = m
		}
	}
	wantRecord := `{"id":1,"status":"new","amount":"19.90","tags":["a","b c"],"meta":{"k": 1},"paid_at":"2026-11-26T11:20:00.123456Z"}`
	if string(first.Record) != wantRecord {
		t.Errorf("got record %s, want %s", first.Record, wantRecord)
	}
	if string(first.Changes) != "null" {
		t.Errorf("got changes %s on insert, want null", first.Changes)
	}
	var customer webhooktest.Message
	for _, m := range msgs {
		if m.Metadata.TableName == "customers" && m.Action == "insert" && strings.Contains(string(m.Record), `"id":2,`) {
			customer = m
		}
	}
	if want := `{"id":2,"name":"c2","vip":true,"avatar":"AAH/","born":"2000-01-31","score":1.5}`; string(customer.Record) != want {
		t.Errorf("got record %s, want %s", customer.Record, want)
	}
	if _, err := time.Parse(time.RFC3339Nano, first.Metadata.CommitTimestamp); err != nil || !strings.HasSuffix(first.Metadata.CommitTimestamp, "Z") {
		t.Errorf("commit_timestamp %q is not RFC 3339 UTC: %v", first.Metadata.CommitTimestamp, err)
	}
	for _, m := range msgs {
		if m.Action == "update" && m.Metadata.TableName == "orders" && string(m.Changes) != "{}" {
			t.Errorf("got changes %s on an update without REPLICA IDENTITY FULL, want {}", m.Changes)
		}
		if m.Action == "delete" && string(m.Record) != `{"id":2}` && string(m.Record) != `{"id":4}` && string(m.Record) != `{"id":5}` {
			t.Errorf("got delete record %s, want the key only", m.Record)
		}
	}

	_, _, badSigs, _ := rcv.Stats()
	if len(badSigs) > 0 {
		t.Errorf("receiver rejected signatures: %v", badSigs)
	}
	for _, h := range rcv.Headers() {
		if h.Get("X-Test") != "static" || h.Get("webhook-id") == "" || h.Get("webhook-timestamp") == "" ||
			!strings.HasPrefix(h.Get("webhook-signature"), "v1,") || !strings.HasPrefix(h.Get("User-Agent"), "walhook/") ||
			h.Get("Content-Type") != "application/json" {
			t.Errorf("request headers %v lack what the contract requires", h)
			break
		}
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

func positionLess(t *testing.T, a, b string) bool {
	t.Helper()
	pa, pb := parsePos(t, a), parsePos(t, b)
	if pa.lsn != pb.lsn {
		return pa.lsn < pb.lsn
	}
	return pa.idx < pb.idx
}

type testPos struct {
	lsn pglogrepl.LSN
	idx int
}

func parsePos(t *testing.T, s string) testPos {
	t.Helper()
	i := strings.LastIndexByte(s, ':')
	lsn, err := pglogrepl.ParseLSN(s[:i])
	if err != nil {
		t.Fatalf("bad position %q: %v", s, err)
	}
	var idx int
	fmt.Sscan(s[i+1:], &idx)
	return testPos{lsn, idx}
}

// TestFailingReceiverHoldsSlot checks that while the receiver answers 500
// nothing is lost and the slot never confirms past the undelivered
// transaction, and that it catches up once the receiver answers 2xx.
func TestFailingReceiverHoldsSlot(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	exec1(t, conn, `CREATE TABLE other (id int)`) // not captured: its writes move WAL only

	rcv := webhooktest.New(t, "")
	rcv.SetFaults(webhooktest.Faults{FailRatio: 1})
	cfg := writeConfig(t, t.TempDir(), dsn, "e2e_hold", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "e2e_hold", d)

	exec1(t, conn, `INSERT INTO t VALUES (1, 'held')`)
	// Keep WAL moving (writes outside the publication, heartbeats) while
	// the receiver fails.
	checkSlotHeld(t, conn, rcv, "e2e_hold", 10, 0, func(int) { exec1(t, conn, `INSERT INTO other VALUES (1)`) })
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestRestartLosesNothingAndRedeliversNothing stops walhook with SIGTERM,
// writes while it is down, and starts it again.
func TestRestartLosesNothingAndRedeliversNothing(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
	rcv := webhooktest.New(t, "")
	dir := t.TempDir()
	// One lane: delivery order is stream order, so once the last row
	// arrived, any redelivery would have arrived before it.
	cfg := writeConfig(t, dir, dsn, "e2e_restart", "", sinkConf{Name: "s", URL: rcv.URL, Extra: "    max_in_flight: 1\n"})

	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "e2e_restart", d)
	for i := 0; i < 50; i++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1, 0)`, i)
	}
	rcv.WaitCount(t, 50, 30*time.Second)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
	for i := 50; i < 100; i++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1, 0)`, i)
	}
	exec1(t, conn, `UPDATE t SET v = 1`)
	d = startWalhook(t, "run", "--config", cfg)
	rcv.WaitCount(t, 200, 30*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (1000, 0)`)
	msgs := rcv.WaitFor(t, 30*time.Second, "the last row", func(m []webhooktest.Message) bool {
		return len(m) > 0 && strings.Contains(string(m[len(m)-1].Record), `"id":1000`)
	})
	if len(msgs) != 201 {
		keys := map[string]int{}
		for _, m := range msgs {
			keys[m.Metadata.IdempotencyKey]++
		}
		dups := 0
		for _, n := range keys {
			dups += n - 1
		}
		t.Fatalf("got %d messages (%d distinct, %d redelivered), want 201 exactly once each", len(msgs), len(keys), dups)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestWALLevelReplica checks that walhook names the fix and exits non-zero
// against a server that cannot decode logically.
func TestWALLevelReplica(t *testing.T) {
	t.Parallel()
	srv, err := pgtest.Start(pgtest.Options{WALLevel: "replica"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := writeConfig(t, t.TempDir(), srv.DSN("postgres"), "e2e_replica", "", sinkConf{Name: "s", URL: "http://127.0.0.1:1/"})
	for _, cmd := range []string{"run", "check"} {
		code, out := runWalhook(t, cmd, "--config", cfg)
		if code != 1 {
			t.Errorf("walhook %s exited %d, want 1; output:\n%s", cmd, code, out)
		}
		if !strings.Contains(out, "ALTER SYSTEM SET wal_level = logical") {
			t.Errorf("walhook %s output does not name the fix:\n%s", cmd, out)
		}
	}
}

// TestCheckRejectsBadConfigs runs `walhook check` on bad files: each exits
// 2 with a message that names the file and line.
func TestCheckRejectsBadConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../testdata/config/bad/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("want at least 5 bad configs in testdata/config/bad, got %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			code, out := runWalhook(t, "check", "--config", f)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
			}
			if !strings.Contains(out, filepath.Base(f)+":") {
				t.Fatalf("output does not name the file and line:\n%s", out)
			}
		})
	}
}

// TestCheckReportsDatabase runs `walhook check` on a good config.
func TestCheckReportsDatabase(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	exec1(t, conn, `CREATE TABLE nokey (v int)`)
	cfg := writeConfig(t, t.TempDir(), dsn, "e2e_check", "  tables: [t, nokey]\n", sinkConf{Name: "s", URL: "http://127.0.0.1:1/"})
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit code %d, want 0; output:\n%s", code, out)
	}
	for _, want := range []string{"wal_level: logical", "table public.t: replica identity DEFAULT; rows ordered by id",
		"table public.nokey: replica identity DEFAULT; rows ordered by the whole table", "PostgreSQL rejects UPDATE and DELETE", "ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestExistingPublicationIsLeftAlone checks that walhook uses a publication
// it did not create as it is, and warns when it lacks a configured table.
func TestExistingPublicationIsLeftAlone(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE a (id int PRIMARY KEY)`)
	exec1(t, conn, `CREATE TABLE b (id int PRIMARY KEY)`)
	exec1(t, conn, `CREATE PUBLICATION e2e_pub FOR TABLE a`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "e2e_pub", "  tables: [a, b]\n", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "e2e_pub", d)
	exec1(t, conn, `INSERT INTO b VALUES (1)`)
	exec1(t, conn, `INSERT INTO a VALUES (1)`)
	msgs := rcv.WaitCount(t, 1, 30*time.Second)
	if msgs[0].Metadata.TableName != "a" {
		t.Fatalf("got a message for table %s, want only table a (b is not in the publication)", msgs[0].Metadata.TableName)
	}
	var tables int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'e2e_pub'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 1 {
		t.Fatalf("publication has %d tables, want 1: walhook must leave an existing publication alone", tables)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d, want 0", code)
	}
	if out := d.out.String(); !strings.Contains(out, "lacks a configured table") || !strings.Contains(out, "ADD TABLE") || !strings.Contains(out, "table=public.b") {
		t.Fatalf("walhook did not warn about the missing table with the fix; output:\n%s", out)
	}
	if n := len(rcv.Messages()); n != 1 {
		t.Fatalf("got %d messages, want 1", n)
	}
}

// TestLogicalMessageBeforeCommit: a configured non-transactional logical
// message emitted just before a COMMIT must not hide the transaction's
// first change (they used to share a position).
func TestLogicalMessageBeforeCommit(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "e2e_msg", "  messages: [p]\n", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "e2e_msg", d)
	exec1(t, conn, `BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(false, 'p', 'x'); COMMIT`)
	exec1(t, conn, `SELECT pg_logical_emit_message(true, 'p', 'y')`)
	msgs := rcv.WaitCount(t, 3, 30*time.Second)
	got := map[string]bool{}
	for _, m := range msgs {
		got[m.Action+":"+string(m.Record)+string(m.Content)] = true
	}
	for _, want := range []string{`insert:{"id":1}`, `message:null"x"`, `message:null"y"`} {
		if !got[want] {
			t.Errorf("missing %s; got %v", want, got)
		}
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d, want 0", code)
	}
}

// TestTwoSinksOneDown: the slot waits for the slowest sink, but each sink
// keeps its own cursor, so after a restart the sink that had everything is
// not sent it again while the other catches up.
func TestTwoSinksOneDown(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	up, down := webhooktest.New(t, ""), webhooktest.New(t, "")
	down.SetFaults(webhooktest.Faults{Down: true})
	one := "    max_in_flight: 1\n"
	cfg := writeConfig(t, t.TempDir(), dsn, "e2e_two", "",
		sinkConf{Name: "up", URL: up.URL, Extra: one}, sinkConf{Name: "down", URL: down.URL, Extra: one})

	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s") // the down sink cannot drain
	waitStreaming(t, conn, "e2e_two", d)
	for i := 0; i < 10; i++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1)`, i)
	}
	msgs := up.WaitCount(t, 10, 30*time.Second)
	first, err := pglogrepl.ParseLSN(msgs[0].Metadata.CommitLSN)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the down sink to fail a few times", func() bool {
		_, failures, _, _ := down.Stats()
		return failures >= 3
	})
	if got := readSlot(t, conn, "e2e_two").confirmed; got > first {
		t.Fatalf("slot confirmed %s past %s, which the down sink never got", got, first)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d, want 0", code)
	}

	down.SetFaults(webhooktest.Faults{})
	d = startWalhook(t, "run", "--config", cfg)
	down.WaitCount(t, 10, 30*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (100)`)
	got := up.WaitFor(t, 30*time.Second, "the last row", func(m []webhooktest.Message) bool {
		return len(m) > 0 && string(m[len(m)-1].Record) == `{"id":100}`
	})
	if len(got) != 11 {
		t.Fatalf("the up sink got %d messages, want 11: the restart sent it what it had acknowledged", len(got))
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d, want 0", code)
	}
}

// TestExitCodes checks the contract's exit codes for usage mistakes.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"version"}, 0, "walhook "},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"run", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"version", "x"}, 2, "takes no arguments"},
		{[]string{"check", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, 2, "no such file"},
	}
	for _, tt := range tests {
		code, out := runWalhook(t, tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) {
			t.Errorf("walhook %s: got exit %d and %q, want exit %d and output containing %q", strings.Join(tt.args, " "), code, out, tt.code, tt.out)
		}
	}
}
