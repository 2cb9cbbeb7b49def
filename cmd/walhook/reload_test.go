package main

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// TestReloadOnSIGHUP: a live change applies (the next request goes to the
// new URL with the new header), a sink added starts receiving and a sink
// removed stops; a change that cannot apply live, and a file that does
// not validate, are refused and the old configuration keeps delivering.
func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	a, b, c := webhooktest.New(t, ""), webhooktest.New(t, ""), webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "rl_hup", "  tables: [public.t]\n", sinkConf{Name: "s", URL: a.URL, Extra: "    headers: {X-Version: one}\n"})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "rl_hup", d)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	a.WaitCount(t, 1, 30*time.Second)

	sinks := func() []string {
		code, body := adminGet(t, addr, "/api/v1/status", testToken)
		if code != 200 {
			return nil
		}
		var names []string
		for _, part := range strings.Split(string(body), `"name":"`)[1:] {
			names = append(names, part[:strings.IndexByte(part, '"')])
		}
		return names
	}
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// Live: a new URL and header for s, a new sink c.
	live := strings.Replace(string(raw), a.URL, b.URL, 1)
	live = strings.Replace(live, "X-Version: one", "X-Version: two", 1)
	live += "  - name: c\n    url: \"" + c.URL + "\"\n    batch_wait: 5ms\n"
	write(live)
	waitUntil(t, 30*time.Second, "sink c in the status", func() bool { return strings.Join(sinks(), ",") == "s,c" })
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	b.WaitCount(t, 1, 30*time.Second)
	c.WaitCount(t, 1, 30*time.Second)
	if h := b.Headers()[0].Get("X-Version"); h != "two" {
		t.Errorf("the new URL got X-Version %q, want two", h)
	}
	if n := len(a.Messages()); n != 1 {
		t.Errorf("the old URL got %d messages, want only the first", n)
	}
	if m := c.Messages(); rowID(t, m[0]) != 2 {
		t.Errorf("the added sink got row %d first, want 2 (it starts at the current position)", rowID(t, m[0]))
	}

	// Refused: the source cannot change live, nor can a broken file apply.
	write(strings.Replace(live, "heartbeat: 200ms", "heartbeat: 300ms", 1))
	// The refusal's log line, naming the field, is the contract here.
	waitOutput(t, d, "source.heartbeat", 1, 30*time.Second)
	write("sinks: [oops\n")
	waitOutput(t, d, "the file does not validate", 1, 30*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (3)`)
	b.WaitCount(t, 2, 30*time.Second)
	c.WaitCount(t, 2, 30*time.Second)
	if h := b.Headers()[1].Get("X-Version"); h != "two" {
		t.Errorf("after refused reloads the sink sent X-Version %q, want two", h)
	}

	// Removed: c gets nothing more.
	write(strings.Replace(string(raw), a.URL, b.URL, 1))
	waitUntil(t, 30*time.Second, "sink c gone from the status", func() bool { return strings.Join(sinks(), ",") == "s" })
	exec1(t, conn, `INSERT INTO t VALUES (4)`)
	b.WaitCount(t, 3, 30*time.Second)
	if n := len(c.Messages()); n != 2 {
		t.Errorf("the removed sink got %d messages, want 2", n)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestReloadUnderLoad: while a writer updates a few rows thousands of times
// a second, SIGHUP storms add and remove a second sink and change the first
// one's batching, and walhook is killed (SIGKILL) once in the middle. The sink
// that stays rebuilds the table exactly from the first delivery of each
// idempotency key in arrival order, and every sink's first deliveries of
// a row are in commit order.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	// Few rows, each changed every few milliseconds, and receivers that
	// take 5 ms a request: every lane is busy, and a row's next change is
	// often queued while the one before is in flight.
	const rows = 20
	const minRoundUpdates = 20 // at least, between one reload and the next
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, fmt.Sprintf(`CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT i, 0 FROM generate_series(1, %d) i`, rows))
	s, c := webhooktest.New(t, ""), webhooktest.New(t, "")
	s.SetFaults(webhooktest.Faults{Delay: 5 * time.Millisecond})
	c.SetFaults(webhooktest.Faults{Delay: 5 * time.Millisecond})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "rl_load", "  tables: [public.t]\n", sinkConf{Name: "s", URL: s.URL,
		Extra: "    batch_size: 10\n    max_in_flight: 4\n"})
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Two configurations to alternate: s alone, and s with other batching
	// beside a second sink c.
	alone := string(raw)
	both := strings.Replace(alone, "batch_size: 10", "batch_size: 3", 1) +
		"  - name: c\n    url: \"" + c.URL + "\"\n    batch_wait: 5ms\n    max_in_flight: 2\n"
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "rl_load", d)
	w := startUpdater(t, dsn, rows)

	reloads := 0
	for round := range 16 {
		next := alone
		if round%2 == 0 {
			next = both
		}
		if err := os.WriteFile(cfg, []byte(next), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloads++
		// Changes are in flight across every reload: on a machine that
		// starves the writer (39 updates in a whole loaded run once), the
		// round lasts until it has made a few.
		from := w.count()
		time.Sleep(150 * time.Millisecond)
		waitUntil(t, time.Minute, "the writer's next updates", func() bool { return w.count() >= from+minRoundUpdates })
		if round == 7 {
			d.kill(t)
			d = startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
			waitStreaming(t, conn, "rl_load", d)
		}
	}
	time.Sleep(300 * time.Millisecond)
	w.Stop()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	want := tableRows(t, conn)
	var got map[int]int
	defer func() {
		if !t.Failed() {
			return
		}
		// What a failure needs to be read: which rows differ, and whether
		// a row's first deliveries came out of commit order.
		byRow := map[int][]string{} // each row's first deliveries at s
		for _, m := range firstDeliveries(s.Messages()) {
			id := rowID(t, m)
			byRow[id] = append(byRow[id], m.Action+" "+m.Metadata.IdempotencyKey)
		}
		var diff []string
		for id := 1; id <= rows; id++ {
			if got[id] != want[id] {
				last := byRow[id]
				diff = append(diff, fmt.Sprintf("row %d: got %d, want %d, from %d first deliveries, the last %v", id, got[id], want[id], len(last), last[max(0, len(last)-3):]))
			}
		}
		t.Logf("%d writer changes, %d reloads and a kill; s got %d messages, c %d; %d rows differ: %s",
			w.count(), reloads, len(s.Messages()), len(c.Messages()), len(diff), strings.Join(diff, "; "))
		checkRowOrder(t, s.Messages())
	}()
	// A bound, not a speed: after the kill the walsender decodes again
	// from the slot's restart LSN, which other tests' open transactions on
	// the shared server can hold far back, through all their WAL.
	s.WaitFor(t, 3*time.Minute, "s rebuilds the table", func(ms []webhooktest.Message) bool {
		got, _ = replay(t, ms)
		// The rows were inserted before walhook started, with v 0: a row
		// the writer never updated has no message and keeps that. (A
		// loaded full run's writer made so few updates that some rows
		// kept it.)
		for id := 1; id <= rows; id++ {
			if _, ok := got[id]; !ok {
				got[id] = 0
			}
		}
		return maps.Equal(got, want)
	})
	checkRowOrder(t, s.Messages())
	checkRowOrder(t, c.Messages())
	if len(c.Messages()) == 0 {
		t.Error("the sink added and removed by the reloads got nothing")
	}
	t.Logf("%d writer changes, %d reloads and a kill; s got %d messages, c %d", w.ops, reloads, len(s.Messages()), len(c.Messages()))
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// startUpdater updates random rows of t (ids 1 to rows) until stopped,
// one row a transaction, about 3,000 a second.
func startUpdater(t *testing.T, dsn string, rows int) *writer {
	t.Helper()
	return startWriting(t, dsn, 300*time.Microsecond, func(conn *pgx.Conn, rnd *rand.Rand) (int, error) {
		id := 1 + rnd.IntN(rows)
		_, err := conn.Exec(context.Background(), `UPDATE t SET v = v + 1 WHERE id = $1`, id)
		return id, err
	})
}

// reloadWith writes s as the configuration file and sends SIGHUP.
func reloadWith(t *testing.T, d *daemon, cfg, s string) {
	t.Helper()
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// TestReloadBeforeStreaming: a SIGHUP that adds a sink while walhook
// cannot reach PostgreSQL yet adds it; once PostgreSQL is up both sinks
// stream, and walhook does not exit.
func TestReloadBeforeStreaming(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgtest.Options{})
	dsn := srv.DSN("postgres")
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	conn.Close(context.Background())
	if err := srv.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	a, b := webhooktest.New(t, ""), webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "rl_early", "", sinkConf{Name: "a", URL: a.URL})
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitOutput(t, d, "cannot reach PostgreSQL; retrying", 1, 30*time.Second)
	reloadWith(t, d, cfg, string(raw)+"  - name: b\n    url: \""+b.URL+"\"\n    batch_wait: 5ms\n")
	waitOutput(t, d, "configuration reloaded", 1, 30*time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	conn = connect(t, dsn)
	waitActive(t, conn, "rl_early", 0, d, 60*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	a.WaitCount(t, 1, 30*time.Second)
	b.WaitCount(t, 1, 30*time.Second)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestReloadWhileASinkHoldsTheStream: with the only sink failing and its
// window full (it holds the stream), a SIGHUP adds a sink at once: the
// held sink spills to its backlog and the added one gets the rows
// committed after the reload; a second SIGHUP editing the added sink
// applies too.
func TestReloadWhileASinkHoldsTheStream(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	held, added := webhooktest.New(t, ""), webhooktest.New(t, "")
	held.SetFaults(webhooktest.Faults{Down: true})
	cfg := writeConfig(t, t.TempDir(), dsn, "rl_held", "  tables: [public.t]\n",
		sinkConf{Name: "held", URL: held.URL, Extra: "    window: {messages: 5}\n    batch_size: 1\n"})
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "rl_held", d)
	for i := 1; i <= 50; i++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1)`, i)
	}
	// Five batches of one failing: the window is full, the stream held.
	waitUntil(t, 30*time.Second, "the held sink's window to fill", func() bool {
		ids := map[string]bool{}
		for _, r := range held.Requests() {
			ids[r.ID] = true
		}
		return len(ids) >= 5
	})
	withAdded := string(raw) + "  - name: added\n    url: \"" + added.URL + "\"\n    batch_wait: 5ms\n"
	reloadWith(t, d, cfg, withAdded)
	waitOutput(t, d, "configuration reloaded", 1, 20*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (100)`)
	hasRow := func(id int) func([]webhooktest.Message) bool {
		return func(ms []webhooktest.Message) bool {
			return slices.ContainsFunc(ms, func(m webhooktest.Message) bool { return rowID(t, m) == id })
		}
	}
	added.WaitFor(t, 20*time.Second, "row 100", hasRow(100))
	reloadWith(t, d, cfg, strings.Replace(withAdded, "batch_wait: 5ms\n    retry", "batch_wait: 6ms\n    retry", 2))
	waitOutput(t, d, "configuration reloaded", 2, 20*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (101)`)
	added.WaitFor(t, 20*time.Second, "row 101", hasRow(101))
	held.SetFaults(webhooktest.Faults{})
	held.WaitCount(t, 52, 30*time.Second)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}
