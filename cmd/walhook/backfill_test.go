package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// backfillEnv is a walhook with its admin server on a database of its own.
type backfillEnv struct {
	dsn, cfg, addr, slot string
	conn                 *pgx.Conn
	rcv                  *webhooktest.Receiver
	d                    *daemon
}

// startBackfillEnv creates the tables with setup, then runs walhook with
// one sink s (extra: more of its YAML) on source tables source.
func startBackfillEnv(t *testing.T, slot, setup, source, extra string) *backfillEnv {
	t.Helper()
	return startBackfillEnvOn(t, pgtest.Shared(), slot, setup, source, extra)
}

func startBackfillEnvOn(t *testing.T, srv *pgtest.Server, slot, setup, source, extra string) *backfillEnv {
	t.Helper()
	e := &backfillEnv{dsn: pgtest.NewDatabase(t, srv), slot: slot}
	e.conn = connect(t, e.dsn)
	exec1(t, e.conn, setup)
	e.rcv = webhooktest.New(t, "")
	e.cfg = writeConfig(t, t.TempDir(), e.dsn, slot, source, sinkConf{Name: "s", URL: e.rcv.URL, Extra: extra})
	e.addr = freeAddr(t)
	editConfig(t, e.cfg, `listen: ""`, fmt.Sprintf("listen: %q", e.addr))
	e.start(t)
	return e
}

func (e *backfillEnv) start(t *testing.T) {
	t.Helper()
	d := startWalhook(t, "run", "--config", e.cfg)
	e.d = d
	t.Cleanup(func() {
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a race:\n%s", d.out.String())
		}
	})
	waitStreaming(t, e.conn, e.slot, e.d)
	waitUntil(t, 30*time.Second, "the admin API answers", func() bool {
		resp, err := http.Get("http://" + e.addr + "/api/v1/backfills")
		if err != nil {
			return false // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// backfills lists the daemon's backfills.
func (e *backfillEnv) backfills(t *testing.T) []server.Backfill {
	t.Helper()
	return getBackfills(t, e.addr)
}

// getBackfills is GET /api/v1/backfills on the admin server at addr.
func getBackfills(t *testing.T, addr string) []server.Backfill {
	t.Helper()
	code, body := adminGet(t, addr, "/api/v1/backfills", "")
	var list server.BackfillList
	if code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("GET /api/v1/backfills on %s: %d %s", addr, code, body)
	}
	return list.Backfills
}

// waitBackfill waits until backfill id is in state want.
func (e *backfillEnv) waitBackfill(t *testing.T, id, want string, timeout time.Duration) server.Backfill {
	t.Helper()
	var got server.Backfill
	waitUntil(t, timeout, "backfill "+id+" "+want, func() bool {
		b, ok := findBackfill(e.backfills(t), id)
		got = b
		if ok && b.State != want && b.State != "running" {
			t.Fatalf("backfill %s is %s (%s), want %s", id, b.State, b.Error, want)
		}
		return ok && b.State == want
	})
	return got
}

// readMsg is a delivered message with what a backfill adds.
type readMsg struct {
	webhooktest.Message
	BackfillID string
}

func withBackfillID(msgs []webhooktest.Message) []readMsg {
	out := make([]readMsg, len(msgs))
	for i, m := range msgs {
		var md struct {
			Metadata struct {
				BackfillID string `json:"backfill_id"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(m.Raw, &md)
		out[i] = readMsg{m, md.Metadata.BackfillID}
	}
	return out
}

// TestBackfillCLI: walhook backfill --wait sends every existing row once
// as a read with the backfill's ID and a key of its own, and exits 0; the
// status shows it done; the metrics count its rows.
func TestBackfillCLI(t *testing.T) {
	t.Parallel()
	e := startBackfillEnv(t, "bf_cli", `CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, at timestamptz, j jsonb);
		INSERT INTO t SELECT i, 'v' || i, i / 3.0, '2026-01-01'::timestamptz + i * interval '1 s', jsonb_build_object('i', i) FROM generate_series(1, 3000) i;
		ANALYZE t`, "  tables: [public.t]\n", "")
	code, out := runWalhook(t, "backfill", "--sink", "s", "--wait", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "done: 3000 of ~3000 rows") {
		t.Fatalf("backfill --wait: exit %d, output:\n%s", code, out)
	}
	msgs := withBackfillID(e.rcv.WaitCount(t, 3000, 30*time.Second))
	keys := map[string]bool{}
	ids := map[string]bool{}
	for _, m := range msgs {
		if m.Action != "read" || m.BackfillID == "" || !strings.HasPrefix(m.Metadata.IdempotencyKey, m.BackfillID+":") {
			t.Fatalf("got %s", m.Raw)
		}
		keys[m.Metadata.IdempotencyKey] = true
		ids[string(m.Record)] = true
	}
	if len(keys) != 3000 || len(ids) != 3000 {
		t.Errorf("got %d distinct keys and %d distinct records in %d messages, want 3000", len(keys), len(ids), len(msgs))
	}
	// The same value, streamed: same JSON.
	exec1(t, e.conn, `UPDATE t SET v = v WHERE id = 7`)
	upd := e.rcv.WaitFor(t, 30*time.Second, "the update", func(ms []webhooktest.Message) bool { return ms[len(ms)-1].Action == "update" })
	var read7 string
	for _, m := range msgs {
		if strings.HasPrefix(string(m.Record), `{"id":7,`) {
			read7 = string(m.Record)
		}
	}
	if got := string(upd[len(upd)-1].Record); got != read7 {
		t.Errorf("streamed record %s, backfilled %s: want the same JSON", got, read7)
	}

	code, body := adminGet(t, e.addr, "/api/v1/status", "")
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil || len(st.Backfills) != 1 || st.Backfills[0].State != "done" ||
		st.Backfills[0].RowsDone != 3000 || st.Backfills[0].Tables[0].RowsEstimate != 3000 {
		t.Errorf("status: %d %s", code, body)
	}
	code, out = runWalhook(t, "status", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "public.t") || !strings.Contains(out, "3000") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	if m := metrics(t, e.addr); m[`walhook_backfill_rows_total{sink="s",table="public.t"}`] != 3000 || m["walhook_backfills_running"] != 0 {
		t.Errorf("metrics: rows %v, running %v", m[`walhook_backfill_rows_total{sink="s",table="public.t"}`], m["walhook_backfills_running"])
	}
	if code := e.d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// startBackfill asks the API for a backfill and returns it.
func (e *backfillEnv) startBackfill(t *testing.T, body string) server.Backfill {
	t.Helper()
	code, out := adminDo(t, e.addr, "POST", "/api/v1/sinks/s/backfills", body)
	var b server.Backfill
	if code != 202 || json.Unmarshal(out, &b) != nil {
		t.Fatalf("POST backfills %s: %d %s", body, code, out)
	}
	return b
}

// adminDo sends a request to the admin API without a token.
func adminDo(t *testing.T, addr, method, path, body string) (int, []byte) {
	t.Helper()
	changes := method != http.MethodGet
	if changes && body == "" {
		body = "{}" // as the CLI sends: the API refuses a body-less POST or DELETE
	}
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if changes {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// writer changes random rows of t (id int PRIMARY KEY, v int) until
// stopped: updates, deletes and inserts of new ids, one per transaction.
type writer struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	touched map[int]bool // ids updated, deleted or inserted
	ops     int
	err     error
}

func startWriter(t *testing.T, dsn string, rows int) *writer {
	t.Helper()
	next := rows + 1
	return startWriting(t, dsn, time.Millisecond, func(conn *pgx.Conn, rnd *rand.Rand) (int, error) {
		id := 1 + rnd.IntN(rows)
		var err error
		switch op := rnd.IntN(10); {
		case op < 6:
			_, err = conn.Exec(context.Background(), `UPDATE t SET v = v + 1 WHERE id = $1`, id)
		case op < 8:
			_, err = conn.Exec(context.Background(), `DELETE FROM t WHERE id = $1`, id)
		default:
			id = next
			next++
			_, err = conn.Exec(context.Background(), `INSERT INTO t VALUES ($1, 0)`, id)
		}
		return id, err
	})
}

// startWriting runs step on a connection of its own, pausing between two
// steps, until stopped; step returns the id it touched.
func startWriting(t *testing.T, dsn string, pause time.Duration, step func(conn *pgx.Conn, rnd *rand.Rand) (int, error)) *writer {
	t.Helper()
	w := &writer{stop: make(chan struct{}), done: make(chan struct{}), touched: map[int]bool{}}
	conn := connect(t, dsn)
	go func() {
		defer close(w.done)
		rnd := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			id, err := step(conn, rnd)
			w.mu.Lock()
			w.touched[id] = true
			w.ops++
			if err != nil && w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
			time.Sleep(pause)
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

// count is how many steps the writer has taken.
func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ops
}

func (w *writer) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// replay applies the first delivery of each idempotency key, in arrival
// order, to a map of id to v: what a receiver that dedupes on the key
// rebuilds.
func replay(t *testing.T, msgs []webhooktest.Message) (rows map[int]int, reads map[int]bool) {
	t.Helper()
	rows, reads = map[int]int{}, map[int]bool{}
	for _, m := range firstDeliveries(msgs) {
		var r struct{ ID, V int }
		if err := json.Unmarshal(m.Record, &r); err != nil {
			t.Fatalf("record %s: %v", m.Record, err)
		}
		switch m.Action {
		case "insert", "update", "read":
			rows[r.ID] = r.V
			if m.Action == "read" {
				reads[r.ID] = true
			}
		case "delete":
			delete(rows, r.ID)
		}
	}
	return rows, reads
}

func tableRows(t *testing.T, conn *pgx.Conn) map[int]int {
	t.Helper()
	rs, err := conn.Query(context.Background(), `SELECT id, v FROM t`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	var id, v int
	_, err = pgx.ForEachRow(rs, []any{&id, &v}, func() error { out[id] = v; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// backfillRows is the size of TestBackfillConsistentUnderKills' table;
// WALHOOK_BACKFILL_ROWS=200000 runs the full acceptance size.
func backfillRows() int {
	if n, err := strconv.Atoi(os.Getenv("WALHOOK_BACKFILL_ROWS")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// TestBackfillConsistentUnderKills: a writer updates, deletes and inserts
// rows all through a backfill, and walhook is killed with SIGKILL twice
// while the backfill has chunks in flight (the receiver is down, so they
// cannot be delivered). Replaying the first delivery of each idempotency
// key in order rebuilds the table exactly, every row never changed
// arrives as a read, and the backfill finishes.
func TestBackfillConsistentUnderKills(t *testing.T) {
	t.Parallel()
	n := backfillRows()
	e := startBackfillEnv(t, "bf_kill", fmt.Sprintf(`CREATE TABLE t (id int PRIMARY KEY, v int, pad text);
		INSERT INTO t SELECT i, 0, repeat('x', 100) FROM generate_series(1, %d) i; ANALYZE t`, n),
		"  tables: [public.t]\n", "    batch_size: 200\n    max_in_flight: 8\n")
	w := startWriter(t, e.dsn, n)
	start := time.Now()
	b := e.startBackfill(t, "")
	for kill, at := range []int{n / 4, n / 2} {
		e.rcv.WaitFor(t, 60*time.Second, fmt.Sprintf("%d reads", at), func(ms []webhooktest.Message) bool {
			reads := 0
			for _, m := range ms {
				if m.Action == "read" {
					reads++
				}
			}
			return reads >= at
		})
		// With the receiver down nothing more is delivered: chunks are in
		// flight and the backfill cannot finish.
		e.rcv.SetFaults(webhooktest.Faults{Down: true})
		time.Sleep(200 * time.Millisecond)
		if st, _ := findBackfill(e.backfills(t), b.ID); st.State != "running" {
			t.Fatalf("kill %d: backfill is %s, want running", kill+1, st.State)
		}
		e.d.kill(t)
		e.rcv.SetFaults(webhooktest.Faults{})
		e.start(t)
	}
	done := e.waitBackfill(t, b.ID, "done", 120*time.Second)
	took := time.Since(start)
	w.Stop()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	want := tableRows(t, e.conn)
	var got map[int]int
	var reads map[int]bool
	e.rcv.WaitFor(t, 60*time.Second, "the receiver's replay equals the table", func(ms []webhooktest.Message) bool {
		got, reads = replay(t, ms)
		return maps.Equal(got, want)
	})
	missing := 0
	for id := 1; id <= n; id++ {
		if !w.touched[id] && !reads[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d rows never changed did not arrive as read", missing)
	}
	t.Logf("%d rows, %d writer changes, backfill of %d rows done in %v (two kills included); %d messages received",
		n, w.ops, done.RowsDone, took.Round(time.Millisecond), len(e.rcv.Messages()))
}

// TestBackfillCompositeWhereTwoTables: one backfill of two tables, one
// with a composite primary key, with a condition: exactly the rows that
// meet it arrive, each once.
func TestBackfillCompositeWhereTwoTables(t *testing.T) {
	t.Parallel()
	e := startBackfillEnv(t, "bf_comp", `CREATE TABLE a (k1 int, k2 text, v int, PRIMARY KEY (k1, k2));
		INSERT INTO a SELECT i / 10, 'k' || (i % 10), i FROM generate_series(0, 2999) i;
		CREATE TABLE "B x" (id bigint PRIMARY KEY, v int);
		INSERT INTO "B x" SELECT i, i FROM generate_series(1, 1000) i;
		CREATE TABLE other (id int PRIMARY KEY, v int); INSERT INTO other VALUES (1, 2)`,
		"  tables: [public.a, '\"B x\"', public.other]\n", "    tables: [public.a, '\"B x\"', public.other]\n")
	code, out := runWalhook(t, "backfill", "--sink", "s", "--table", "a", "--table", `"B x"`, "--where", "v % 3 = 0", "--wait", "--config", e.cfg)
	if code != 0 {
		t.Fatalf("backfill: exit %d\n%s", code, out)
	}
	msgs := e.rcv.WaitCount(t, 1000+333, 30*time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := len(e.rcv.Messages()); n != 1333 {
		t.Fatalf("got %d messages, want 1333", n)
	}
	type key struct {
		k1 int
		k2 string
	}
	seenA := map[key]bool{}
	seenB := map[int64]bool{}
	for _, m := range msgs {
		var r struct {
			K1 int
			K2 string
			ID int64
			V  int
		}
		if err := json.Unmarshal(m.Record, &r); err != nil || m.Action != "read" || r.V%3 != 0 {
			t.Fatalf("got %s", m.Raw)
		}
		switch m.Metadata.TableName {
		case "a":
			k := key{r.K1, r.K2}
			if seenA[k] {
				t.Fatalf("a: %v twice", k)
			}
			seenA[k] = true
		case "B x":
			if seenB[r.ID] {
				t.Fatalf("B x: %d twice", r.ID)
			}
			seenB[r.ID] = true
		default:
			t.Fatalf("a table not asked for: %s", m.Raw)
		}
	}
	if len(seenA) != 1000 || len(seenB) != 333 {
		t.Errorf("got %d rows of a and %d of B x, want 1000 and 333", len(seenA), len(seenB))
	}
}

// TestBackfillCancel: a backfill that cannot deliver is cancelled; it
// stops, says so, and a second cancel is a conflict.
func TestBackfillCancel(t *testing.T) {
	t.Parallel()
	e := startBackfillEnv(t, "bf_cancel", `CREATE TABLE t (id int PRIMARY KEY, v int);
		INSERT INTO t SELECT i, 0 FROM generate_series(1, 5000) i`, "  tables: [public.t]\n", "")
	e.rcv.SetFaults(webhooktest.Faults{Down: true})
	b := e.startBackfill(t, `{"tables": ["t"]}`)
	if code, out := adminDo(t, e.addr, "POST", "/api/v1/sinks/s/backfills", ""); code != 409 || !strings.Contains(string(out), "is being backfilled by "+b.ID) {
		t.Errorf("a second backfill of the table: %d %s, want 409", code, out)
	}
	if code, out := adminDo(t, e.addr, "DELETE", "/api/v1/backfills/"+b.ID, ""); code != 204 {
		t.Fatalf("DELETE: %d %s", code, out)
	}
	got := e.waitBackfill(t, b.ID, "cancelled", 30*time.Second)
	if got.FinishedAt == nil || got.RowsDone == 5000 {
		t.Errorf("cancelled backfill: %+v", got)
	}
	if code, out := adminDo(t, e.addr, "DELETE", "/api/v1/backfills/"+b.ID, ""); code != 409 {
		t.Errorf("second DELETE: %d %s, want 409", code, out)
	}
	if code, out := adminDo(t, e.addr, "DELETE", "/api/v1/backfills/bf_nope", ""); code != 404 {
		t.Errorf("DELETE of an unknown backfill: %d %s, want 404", code, out)
	}
	// Restarted, a cancelled backfill stays cancelled.
	e.rcv.SetFaults(webhooktest.Faults{})
	e.d.stop(t, syscall.SIGTERM, 30*time.Second)
	e.start(t)
	time.Sleep(500 * time.Millisecond)
	if st, _ := findBackfill(e.backfills(t), b.ID); st.State != "cancelled" {
		t.Errorf("after a restart: %s, want cancelled", st.State)
	}
}

// TestBackfillOnCreate: a sink with backfill.on_create gets its tables'
// rows on its first start, and not again on the next.
func TestBackfillOnCreate(t *testing.T) {
	t.Parallel()
	e := startBackfillEnv(t, "bf_create", `CREATE TABLE t (id int PRIMARY KEY, v int);
		INSERT INTO t SELECT i, 0 FROM generate_series(1, 500) i`, "  tables: [public.t]\n", "    backfill: {on_create: true}\n")
	e.rcv.WaitCount(t, 500, 30*time.Second)
	var list []server.Backfill
	waitUntil(t, 30*time.Second, "the on_create backfill done", func() bool {
		list = e.backfills(t)
		return len(list) == 1 && list[0].State == "done"
	})
	e.d.stop(t, syscall.SIGTERM, 30*time.Second)
	e.start(t)
	exec1(t, e.conn, `INSERT INTO t VALUES (501, 0)`)
	e.rcv.WaitCount(t, 501, 30*time.Second)
	if list := e.backfills(t); len(list) != 1 {
		t.Errorf("after a restart: %d backfills, want 1", len(list))
	}
	if n := len(e.rcv.Messages()); n != 501 {
		t.Errorf("got %d messages, want 501", n)
	}

	// A sink a reload adds is backfilled on its first start too.
	rcv2 := webhooktest.New(t, "")
	editConfig(t, e.cfg, "    backfill: {on_create: true}\n", fmt.Sprintf("    backfill: {on_create: true}\n  - name: s2\n    url: %q\n    backfill: {on_create: true}\n", rcv2.URL))
	_ = e.d.cmd.Process.Signal(syscall.SIGHUP)
	rcv2.WaitCount(t, 501, 30*time.Second)
	waitUntil(t, 30*time.Second, "two backfills done", func() bool {
		list := e.backfills(t)
		return len(list) == 2 && list[1].Sink == "s2" && list[1].State == "done"
	})
}

// TestBackfillBadInput: what cannot be backfilled is refused with its
// name, exit 2 from the CLI and 400 (404 for an unknown sink) from the
// API, and nothing starts.
func TestBackfillBadInput(t *testing.T) {
	t.Parallel()
	e := startBackfillEnv(t, "bf_bad", `CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 1), (2, 2), (3, 3);
		CREATE TABLE nopk (v int); CREATE TABLE elsewhere (id int PRIMARY KEY)`,
		"  tables: [public.t, public.nopk, public.elsewhere]\n", "    tables: [public.t, public.nopk]\n")
	for _, tt := range []struct {
		name string
		args []string
		body string
		code int
		want string
	}{
		{"no primary key", []string{"--table", "nopk"}, `{"tables": ["nopk"]}`, 400, "table public.nopk has no primary key"},
		{"not the sink's", []string{"--table", "elsewhere"}, `{"tables": ["elsewhere"]}`, 400, `sink "s" does not receive table public.elsewhere`},
		{"bad where", []string{"--table", "t", "--where", "id >"}, `{"tables": ["t"], "where": "id >"}`, 400, `--where "id >" on public.t: ERROR: syntax error`},
		{"unknown column", []string{"--table", "t", "--where", "nope = 1"}, `{"tables": ["t"], "where": "nope = 1"}`, 400, `column "nope" does not exist`},
		{"no table", []string{"--table", "missing"}, `{"tables": ["missing"]}`, 400, "does not receive table public.missing"},
		{"statements", []string{"--table", "t", "--where", `true); COMMIT; BEGIN READ WRITE; DELETE FROM public.t; COMMIT; SELECT 1 AS "id" WHERE (true`},
			`{"tables": ["t"], "where": "true); COMMIT; BEGIN READ WRITE; DELETE FROM public.t; COMMIT; SELECT 1 AS \"id\" WHERE (true"}`, 400, "closes a parenthesis the expression did not open"},
		{"keyset escape", []string{"--table", "t", "--where", "false) OR (true"}, `{"tables": ["t"], "where": "false) OR (true"}`, 400, "closes a parenthesis the expression did not open"},
		{"not boolean", []string{"--table", "t", "--where", "v + 1"}, `{"tables": ["t"], "where": "v + 1"}`, 400, `--where "v + 1" on public.t is of type integer`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runWalhook(t, append([]string{"backfill", "--sink", "s", "--config", e.cfg}, tt.args...)...)
			if code != 2 || !strings.Contains(out, tt.want) {
				t.Errorf("CLI: exit %d\n%s\nwant exit 2 and %q", code, out, tt.want)
			}
			code, body := adminDo(t, e.addr, "POST", "/api/v1/sinks/s/backfills", tt.body)
			var msg server.Error
			if code != tt.code || json.Unmarshal(body, &msg) != nil || !strings.HasPrefix(msg.Error, "cannot backfill: ") || !strings.Contains(msg.Error, tt.want) {
				t.Errorf("API: %d %s, want %d and %q", code, body, tt.code, tt.want)
			}
		})
	}
	code, out := runWalhook(t, "backfill", "--sink", "nope", "--config", e.cfg)
	if code != 2 || !strings.Contains(out, `unknown sink "nope"`) {
		t.Errorf("unknown sink: exit %d\n%s", code, out)
	}
	if code, body := adminDo(t, e.addr, "POST", "/api/v1/sinks/nope/backfills", ""); code != 404 || !strings.Contains(string(body), `unknown sink \"nope\"`) {
		t.Errorf("API, unknown sink: %d %s, want 404", code, body)
	}
	if list := e.backfills(t); len(list) != 0 {
		t.Errorf("bad input started %d backfills", len(list))
	}
	var n int
	if err := e.conn.QueryRow(context.Background(), `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 3 {
		t.Errorf("t has %d rows (%v), want 3", n, err)
	}
}

// TestBackfillRate measures, when WALHOOK_BACKFILL_BENCH is set (with
// WALHOOK_TEST_NORACE=1 for figures without the race detector), a
// backfill of backfillRows() rows beside COPY (SELECT ...) TO STDOUT of the
// same table, and the stream's latency for changes committed while it
// runs. It logs the figures.
func TestBackfillRate(t *testing.T) {
	t.Parallel()
	if os.Getenv("WALHOOK_BACKFILL_BENCH") == "" {
		t.Skip("set WALHOOK_BACKFILL_BENCH=1 to measure")
	}
	n := backfillRows()
	var mu sync.Mutex
	var lat, idle []time.Duration // during the backfill, before it
	backfilling := false
	e := startBackfillEnv(t, "bf_rate", fmt.Sprintf(`CREATE TABLE t (id bigint PRIMARY KEY, name text, amount numeric(12,2), attrs jsonb, created_at timestamptz);
		INSERT INTO t SELECT i, 'name ' || i, i / 100.0, jsonb_build_object('k', i, 'tags', jsonb_build_array('a', 'b')), now() FROM generate_series(1, %d) i;
		CREATE TABLE w (id bigint PRIMARY KEY, at timestamptz); ANALYZE t`, n),
		"  tables: [public.t, public.w]\n", "")
	e.rcv.SetFaults(webhooktest.Faults{Reject: func(batch []webhooktest.Message) int {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, m := range batch {
			if m.Metadata.TableName == "w" {
				at, err := time.Parse(time.RFC3339Nano, m.Metadata.CommitTimestamp)
				switch {
				case err != nil:
				case backfilling:
					lat = append(lat, now.Sub(at))
				default:
					idle = append(idle, now.Sub(at))
				}
			}
		}
		return 0
	}})

	copyStart := time.Now()
	if _, err := e.conn.PgConn().CopyTo(context.Background(), io.Discard, "COPY (SELECT * FROM t) TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	copyTook := time.Since(copyStart)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wconn := connect(t, e.dsn)
	wg.Go(func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, err := wconn.Exec(context.Background(), `INSERT INTO w VALUES ($1, now())`, i); err != nil {
				t.Error(err)
				return
			}
		}
	})
	time.Sleep(2 * time.Second) // the stream's latency without a backfill
	mu.Lock()
	backfilling = true
	mu.Unlock()
	start := time.Now()
	b := e.startBackfill(t, `{"tables": ["t"]}`)
	e.waitBackfill(t, b.ID, "done", 10*time.Minute)
	took := time.Since(start)
	close(stop)
	wg.Wait()
	e.rcv.WaitFor(t, time.Minute, "every read", func(ms []webhooktest.Message) bool {
		reads := 0
		for _, m := range ms {
			if m.Action == "read" {
				reads++
			}
		}
		return reads >= n
	})
	mu.Lock()
	slices.Sort(lat)
	slices.Sort(idle)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	qi := func(p float64) time.Duration { return idle[min(len(idle)-1, int(p*float64(len(idle))))] }
	t.Logf("%d rows: backfill %v (%.0f rows/s); COPY (SELECT * FROM t) TO STDOUT %v (%.0f rows/s); ratio %.2f",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), copyTook.Round(time.Millisecond), float64(n)/copyTook.Seconds(), copyTook.Seconds()/took.Seconds())
	t.Logf("stream latency of %d inserts during the backfill: p50 %v, p90 %v, p99 %v, max %v",
		len(lat), q(0.5).Round(time.Millisecond), q(0.9).Round(time.Millisecond), q(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	t.Logf("and of %d inserts before it: p50 %v, p90 %v, p99 %v, max %v",
		len(idle), qi(0.5).Round(time.Millisecond), qi(0.9).Round(time.Millisecond), qi(0.99).Round(time.Millisecond), idle[len(idle)-1].Round(time.Millisecond))
	mu.Unlock()
}

// TestBackfillSurvivesPostgresRestart: PostgreSQL restarts (immediate
// shutdown) in the middle of a backfill; walhook reconnects, the backfill
// goes on from its last delivered chunk and every row arrives.
func TestBackfillSurvivesPostgresRestart(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgtest.Options{})
	e := startBackfillEnvOn(t, srv, "bf_restart", `CREATE TABLE t (id int PRIMARY KEY, v int);
		INSERT INTO t SELECT i, 0 FROM generate_series(1, 20000) i`, "  tables: [public.t]\n", "")
	e.rcv.SetFaults(webhooktest.Faults{Delay: 20 * time.Millisecond})
	b := e.startBackfill(t, "")
	e.rcv.WaitCount(t, 2000, 30*time.Second)
	if err := srv.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	e.rcv.SetFaults(webhooktest.Faults{})
	got := e.waitBackfill(t, b.ID, "done", 90*time.Second)
	ids := map[string]bool{}
	for _, m := range e.rcv.Messages() {
		if m.Action == "read" {
			ids[m.Metadata.IdempotencyKey] = true
		}
	}
	if len(ids) != 20000 || got.RowsDone < 20000 {
		t.Errorf("got %d distinct reads, %d rows done; want 20000", len(ids), got.RowsDone)
	}
}

// TestBackfillPublicationFilters: with an administrator's publication that
// has a column list and a row filter, a backfill sends what the stream
// would: neither password_hash nor the private rows; then the sink's
// columns apply, as to the stream.
func TestBackfillPublicationFilters(t *testing.T) {
	t.Parallel()
	e := startBackfillEnv(t, "bf_pub", `CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text, private bool);
		INSERT INTO users SELECT i, 'u' || i || '@x', 'hash' || i, i % 3 = 0 FROM generate_series(1, 300) i;
		CREATE PUBLICATION bf_pub FOR TABLE users (id, email) WHERE (NOT private)`, "  tables: [public.users]\n", "")
	exec1(t, e.conn, `INSERT INTO users VALUES (1001, 'new@x', 'hash', false), (1002, 'hidden@x', 'hash', true)`)
	streamed := e.rcv.WaitCount(t, 1, 30*time.Second)
	b := e.startBackfill(t, "")
	e.waitBackfill(t, b.ID, "done", 60*time.Second)
	msgs := e.rcv.WaitCount(t, 201, 30*time.Second)
	if got := string(streamed[0].Record); got != `{"id":1001,"email":"new@x"}` {
		t.Errorf("streamed %s, want id and email", got)
	}
	reads := 0
	for _, m := range msgs {
		var rec map[string]any
		if err := json.Unmarshal(m.Record, &rec); err != nil {
			t.Fatalf("%s: %v", m.Raw, err)
		}
		if _, ok := rec["password_hash"]; ok || len(rec) != 2 {
			t.Errorf("%s: %s, want only id and email", m.Action, m.Record)
		}
		if id := int(rec["id"].(float64)); id%3 == 0 || id == 1002 {
			t.Errorf("%s of private row %d: %s", m.Action, id, m.Record)
		}
		if m.Action == "read" {
			reads++
		}
	}
	if reads != 201 {
		t.Errorf("got %d reads, want 201 (200 public rows and 1001)", reads)
	}

	// The sink's columns come on top, for the stream and the backfill.
	editConfig(t, e.cfg, "    batch_wait: 5ms\n", "    batch_wait: 5ms\n    columns: {public.users: {exclude: [email]}}\n")
	e.d.stop(t, syscall.SIGTERM, 30*time.Second)
	e.start(t)
	b = e.startBackfill(t, `{"where": "id < 10"}`)
	e.waitBackfill(t, b.ID, "done", 60*time.Second)
	msgs = e.rcv.WaitCount(t, 202+6, 30*time.Second)
	for _, m := range msgs[202:] {
		if m.Action != "read" || !strings.HasPrefix(string(m.Record), `{"id":`) || strings.Contains(string(m.Record), ",") {
			t.Errorf("with columns {exclude: [email]}: %s %s, want reads of the id alone", m.Action, m.Record)
		}
	}
}

// TestBackfillOnCreateSourceDown: walhook's first start finds PostgreSQL
// down. The on_create backfill is recorded all the same, survives a
// kill -9 while PostgreSQL is still down, and runs once PostgreSQL
// answers: every row arrives, from one backfill.
func TestBackfillOnCreateSourceDown(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgtest.Options{})
	dsn := pgtest.NewDatabase(t, srv)
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT i, 0 FROM generate_series(1, 500) i`)
	conn.Close(context.Background())
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "bf_down", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL, Extra: "    backfill: {on_create: true}\n"})
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q", addr))
	if err := srv.Stop("fast"); err != nil {
		t.Fatal(err)
	}

	d := startWalhook(t, "run", "--config", cfg)
	waitOutput(t, d, "cannot reach PostgreSQL", 1, 30*time.Second)
	waitUntil(t, 30*time.Second, "the on_create backfill recorded while PostgreSQL is down", func() bool {
		resp, err := http.Get("http://" + addr + "/api/v1/backfills")
		if err != nil {
			return false // not listening yet
		}
		resp.Body.Close()
		list := getBackfills(t, addr)
		return len(list) == 1 && list[0].Sink == "s" && list[0].State == "running"
	})
	if code, out := runWalhook(t, "status", "--config", cfg); code != 0 || !strings.Contains(out, "(its tables, once the stream runs)") {
		t.Errorf("status while PostgreSQL is down: exit %d\n%s", code, out)
	}
	d.kill(t)

	d = startWalhook(t, "run", "--config", cfg)
	waitOutput(t, d, "cannot reach PostgreSQL", 1, 30*time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var list []server.Backfill
	waitUntil(t, 60*time.Second, "the on_create backfill done", func() bool {
		list = getBackfills(t, addr)
		return len(list) == 1 && list[0].State == "done"
	})
	ids := map[string]bool{}
	for _, m := range rcv.WaitCount(t, 500, 30*time.Second) {
		if m.Action == "read" {
			ids[string(m.Record)] = true
		}
	}
	if len(ids) != 500 || list[0].RowsDone != 500 || len(list[0].Tables) != 1 || list[0].Tables[0].Table != "public.t" {
		t.Errorf("got %d distinct reads; backfill %+v; want 500 rows of public.t", len(ids), list[0])
	}
}
