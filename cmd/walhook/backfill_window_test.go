package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// ghostConf makes every commit that asks for synchronous_commit = on wait
// for a standby that never comes: its record is in the WAL (and in the
// stream) but no snapshot sees it until its backend is cancelled. Other
// sessions, walhook's included, commit locally.
var ghostConf = []string{"synchronous_standby_names = 'ghost'", "synchronous_commit = local"}

// waitingCommit runs sql in a transaction of its own that commits with
// synchronous_commit = on, so it waits for the ghost standby; release
// cancels the wait (the transaction stays committed and becomes visible)
// and waits for it to return.
func waitingCommit(t *testing.T, dsn, sql string) (release func()) {
	t.Helper()
	h, err := newHolder(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	rel, err := h.hold(sql)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := rel(); err != nil {
			t.Fatal(err)
		}
	}
}

// errNoWait: the statement changed nothing, so its commit had nothing to
// wait for.
var errNoWait = errors.New("did not wait for the standby")

// holder runs statements whose commits wait for the ghost standby, one at
// a time, on a session with synchronous_commit = on; admin cancels the
// waits. It returns errors, for any goroutine.
type holder struct {
	conn, admin *pgx.Conn
	pid         int
}

func newHolder(dsn string) (*holder, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := &holder{}
	var err error
	if h.conn, err = pgx.Connect(ctx, dsn); err != nil {
		return nil, err
	}
	if h.admin, err = pgx.Connect(ctx, dsn); err != nil {
		h.conn.Close(ctx)
		return nil, err
	}
	if err := h.conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&h.pid); err != nil {
		h.close()
		return nil, err
	}
	if _, err := h.conn.Exec(ctx, `SET synchronous_commit = on`); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *holder) close() {
	h.conn.Close(context.Background())
	h.admin.Close(context.Background())
}

// hold runs sql and returns once its commit waits for the standby.
func (h *holder) hold(sql string) (release func() error, err error) {
	done := make(chan error, 1)
	go func() {
		_, err := h.conn.Exec(context.Background(), sql)
		done <- err
	}()
	release = func() error {
		if _, err := h.admin.Exec(context.Background(), `SELECT pg_cancel_backend($1)`, h.pid); err != nil {
			return err
		}
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("the waiting commit %q: %w", sql, err)
			}
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("the waiting commit %q did not return after its cancel", sql)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := h.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'`, h.pid).Scan(&n); err != nil {
			_ = release()
			return nil, fmt.Errorf("wait for the commit to wait for the standby: %w", err)
		}
		if n == 1 {
			return release, nil
		}
		select {
		case err := <-done:
			if err != nil {
				return nil, fmt.Errorf("%q: %w", sql, err)
			}
			return nil, fmt.Errorf("%q: %w", sql, errNoWait)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = release()
			return nil, fmt.Errorf("%q: its commit does not wait for the standby after 10 s", sql)
		}
	}
}

// delivered is a delivered message, parsed once for replays.
type delivered struct {
	ikey   string
	id     int
	lsn    pglogrepl.LSN
	idx    uint32
	action string
	rec    map[string]json.RawMessage
	toast  []string
}

// replayer rebuilds a sink's rows from what its receiver accepted: the
// first delivery of each idempotency key, per row in position order
// (commit LSN, index), as a receiver that dedupes and orders by position
// keeps them. A record column left out and named in
// unchanged_toast_columns keeps its earlier value. Each row comes out as
// its columns' JSON, "name=value" sorted by name.
type replayer struct {
	msgs []delivered
}

func (r *replayer) replay(t *testing.T, msgs []webhooktest.Message) map[int]string {
	t.Helper()
	for _, m := range msgs[len(r.msgs):] {
		lsn, err := pglogrepl.ParseLSN(m.Metadata.CommitLSN)
		if err != nil {
			t.Fatalf("commit_lsn %q: %v", m.Metadata.CommitLSN, err)
		}
		d := delivered{ikey: m.Metadata.IdempotencyKey, lsn: lsn, idx: m.Metadata.CommitIdx, action: m.Action, toast: m.Metadata.UnchangedToastColumns}
		if err := json.Unmarshal(m.Record, &d.rec); err != nil {
			t.Fatalf("record %s: %v", m.Record, err)
		}
		if err := json.Unmarshal(d.rec["id"], &d.id); err != nil {
			t.Fatalf("record %s has no id: %v", m.Record, err)
		}
		r.msgs = append(r.msgs, d)
	}
	seen := map[string]bool{}
	perRow := map[int][]delivered{}
	for _, d := range r.msgs {
		if !seen[d.ikey] {
			seen[d.ikey] = true
			perRow[d.id] = append(perRow[d.id], d)
		}
	}
	rows := map[int]string{}
	for id, ds := range perRow {
		slices.SortStableFunc(ds, func(a, b delivered) int {
			if a.lsn != b.lsn {
				return cmpLSN(a.lsn, b.lsn)
			}
			return int(a.idx) - int(b.idx)
		})
		var row map[string]json.RawMessage
		for _, d := range ds {
			switch d.action {
			case "insert", "read":
				row = d.rec
			case "update":
				next := maps.Clone(d.rec)
				for _, c := range d.toast {
					if v, ok := row[c]; ok {
						next[c] = v
					}
				}
				row = next
			case "delete":
				row = nil
			}
		}
		if row != nil {
			rows[id] = rowText(row)
		}
	}
	return rows
}

// rowText is a row's columns' JSON, "name=value" sorted by name.
func rowText(row map[string]json.RawMessage) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(row)) {
		fmt.Fprintf(&b, "%s=%s ", k, row[k])
	}
	return b.String()
}

func cmpLSN(a, b pglogrepl.LSN) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// tableRowsText reads the table's rows as walhook encodes them (to_jsonb
// writes integers and text alike), keyed by id, each as rowText; where is
// a condition on the rows, "" for all.
func tableRowsText(t *testing.T, conn *pgx.Conn, table, where string) map[int]string {
	t.Helper()
	q := fmt.Sprintf(`SELECT id, to_jsonb(x)::text FROM %s x`, table)
	if where != "" {
		q += " WHERE " + where
	}
	rs, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	var id int
	var js string
	_, err = pgx.ForEachRow(rs, []any{&id, &js}, func() error {
		var row map[string]json.RawMessage
		if err := json.Unmarshal([]byte(js), &row); err != nil {
			return err
		}
		out[id] = rowText(row)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffRows describes how got differs from want, in a few lines.
func diffRows(got, want map[int]string) string {
	var b strings.Builder
	n := 0
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[id]; !ok || g != want[id] {
			if n++; n <= 5 {
				// From a little before where they differ: big values are long.
				i := 0
				for i < len(g) && i < len(want[id]) && g[i] == want[id][i] {
					i++
				}
				i = max(0, i-20)
				fmt.Fprintf(&b, "\n  row %d: got …%.100s, want …%.100s", id, g[min(i, len(g)):], want[id][i:])
			}
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			if n++; n <= 5 {
				fmt.Fprintf(&b, "\n  row %d: got %.120v, want none", id, got[id])
			}
		}
	}
	if n > 5 {
		fmt.Fprintf(&b, "\n  ... %d rows differ in all", n)
	}
	return b.String()
}

// TestBackfillInvisibleCommit: an update whose commit waits for a
// synchronous standby is in the WAL, and delivered, before the chunk's
// low watermark, but the chunk's query does not see it. The old row must
// not be delivered as a read after the update: the chunk is read again
// until its snapshot sees the commit, and replaying the receiver gives
// the table.
func TestBackfillInvisibleCommit(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgtest.Options{ExtraConf: ghostConf})
	e := startBackfillEnvOn(t, srv, "bf_invisible", `CREATE TABLE t (id int PRIMARY KEY, v int);
		INSERT INTO t SELECT i, 0 FROM generate_series(1, 50) i`, "  tables: [public.t]\n", "")
	release := waitingCommit(t, e.dsn, `UPDATE t SET v = 1 WHERE id = 5`)
	e.rcv.WaitFor(t, 30*time.Second, "the waiting update delivered", func(ms []webhooktest.Message) bool {
		return slices.ContainsFunc(ms, func(m webhooktest.Message) bool { return m.Action == "update" })
	})
	b := e.startBackfill(t, "")
	waitUntil(t, 30*time.Second, "the backfill done, or its chunk read again", func() bool {
		st, _ := findBackfill(e.backfills(t), b.ID)
		return st.State == "done" || strings.Contains(e.d.out.String(), "its snapshot missed a transaction")
	})
	release()
	e.waitBackfill(t, b.ID, "done", 30*time.Second)
	waitReplay(t, e.rcv, "the table", tableRowsText(t, e.conn, "t", ""))
}

// waitReplay waits until replaying what rcv accepted gives want: every
// message of a finished backfill is delivered soon after it is done.
func waitReplay(t *testing.T, rcv *webhooktest.Receiver, what string, want map[int]string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var r replayer
	for {
		d := diffRows(r.replay(t, rcv.Messages()), want)
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replaying the receiver does not give %s:%s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBackfillExactPerSink is the acceptance case of the backfill's
// rules: four sinks backfill one table at once while a writer updates
// (most updates leave the TOASTed column alone, so they carry only
// unchanged_toast_columns), deletes and inserts again rows of every chunk,
// and some of its commits wait for a synchronous standby (in the stream,
// not yet visible) until cancelled. Replaying each sink's messages per
// row in position order gives exactly what the sink should have:
//   - all (no filter): the table;
//   - even (CEL on the record): the table's rows with an even id;
//   - noupd (actions without update) and odd_noupd (CEL rejecting
//     updates, odd ids): the table's rows (odd ones for odd_noupd) by key;
//     their values are the read's or the last insert's, which the table
//     no longer shows after an update.
func TestBackfillExactPerSink(t *testing.T) {
	t.Parallel()
	const rows = 1000
	srv := startServer(t, pgtest.Options{ExtraConf: ghostConf})
	dsn := pgtest.NewDatabase(t, srv)
	conn := connect(t, dsn)
	// big: 100 MD5s in a row, 3,200 hex digits that pglz cannot shrink,
	// so the value is TOASTed out of line.
	exec1(t, conn, fmt.Sprintf(`CREATE TABLE t (id int PRIMARY KEY, v int, big text);
		CREATE FUNCTION big(seed text) RETURNS text LANGUAGE sql AS
			$$ SELECT string_agg(md5(seed || j), '') FROM generate_series(1, 100) j $$;
		INSERT INTO t SELECT i, 0, big(i::text) FROM generate_series(1, %d) i; ANALYZE t`, rows))
	sinks := []struct{ name, extra string }{
		{"all", ""},
		{"even", "    filter: 'record.id % 2 == 0'\n"},
		{"noupd", "    actions: [insert, delete, read]\n"},
		{"odd_noupd", "    filter: 'action != \"update\" && record.id % 2 == 1'\n"},
	}
	rcvs := map[string]*webhooktest.Receiver{}
	var confs []sinkConf
	for _, s := range sinks {
		rcvs[s.name] = webhooktest.New(t, "")
		confs = append(confs, sinkConf{Name: s.name, URL: rcvs[s.name].URL, Extra: s.extra})
	}
	cfg := writeConfig(t, t.TempDir(), dsn, "bf_exact", "  tables: [public.t]\n", confs...)
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q", addr))
	e := &backfillEnv{dsn: dsn, cfg: cfg, addr: addr, slot: "bf_exact", conn: conn}
	e.start(t)

	// Two writers (even and odd ids): updates of v alone (unchanged TOAST),
	// updates of big, deletes and inserts again of deleted ids; each
	// commit local. Most go to the rows after the last read some sink got:
	// the chunk being read, or the next.
	var fronts []*hotRows
	for _, s := range sinks {
		fronts = append(fronts, followReads(t, rcvs[s.name], rows))
	}
	hot := func(rnd *rand.Rand) int { return fronts[rnd.IntN(len(fronts))].id(rnd) }
	var writers []*writer
	for parity := range 2 {
		deleted := map[int]bool{}
		writers = append(writers, startWriting(t, dsn, 0, func(c *pgx.Conn, rnd *rand.Rand) (int, error) {
			id := hot(rnd)
			if id%2 != parity {
				id = id%rows + 1
			}
			ctx := context.Background()
			var err error
			switch op := rnd.IntN(10); {
			case deleted[id]:
				_, err = c.Exec(ctx, `INSERT INTO t VALUES ($1, 100, big($2))`, id, fmt.Sprint(rnd.Int()))
				delete(deleted, id)
			case op < 6:
				_, err = c.Exec(ctx, `UPDATE t SET v = v + 1 WHERE id = $1`, id)
			case op < 8:
				_, err = c.Exec(ctx, `UPDATE t SET big = big($2) WHERE id = $1`, id, fmt.Sprint(rnd.Int()))
			default:
				_, err = c.Exec(ctx, `DELETE FROM t WHERE id = $1`, id)
				deleted[id] = true
			}
			return id, err
		}))
	}
	// The delayer: now and then an update of v, in the rows being read,
	// whose commit waits for the ghost standby for 100 ms: in the stream,
	// not yet visible.
	stopDelay := make(chan struct{})
	delayDone := make(chan struct{})
	var delayErr error
	held := 0
	delayer, err := newHolder(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer delayer.close()
	go func() {
		defer close(delayDone)
		rnd := rand.New(rand.NewPCG(3, 4))
		for {
			select {
			case <-stopDelay:
				return
			case <-time.After(50 * time.Millisecond):
			}
			release, err := delayer.hold(fmt.Sprintf(`UPDATE t SET v = v + 1000 WHERE id = %d`, hot(rnd)))
			if errors.Is(err, errNoWait) {
				continue // the row was deleted
			}
			if err == nil {
				held++
				time.Sleep(100 * time.Millisecond)
				err = release()
			}
			if err != nil {
				delayErr = err
				return
			}
		}
	}()

	start := time.Now()
	ids := map[string]string{}
	for _, s := range sinks {
		code, out := adminDo(t, addr, "POST", "/api/v1/sinks/"+s.name+"/backfills", "")
		var b struct{ ID string }
		if code != 202 || json.Unmarshal(out, &b) != nil {
			t.Fatalf("POST backfill of %s: %d %s", s.name, code, out)
		}
		ids[s.name] = b.ID
	}
	for _, s := range sinks {
		e.waitBackfill(t, ids[s.name], "done", 60*time.Second)
	}
	took := time.Since(start)
	close(stopDelay)
	<-delayDone
	ops := 0
	for _, w := range writers {
		w.Stop()
		if w.err != nil {
			t.Fatalf("writer: %v", w.err)
		}
		ops += w.ops
	}
	if delayErr != nil {
		t.Fatalf("delayer: %v", delayErr)
	}
	keys := func(m map[int]string) map[int]string {
		out := map[int]string{}
		for id := range m {
			out[id] = "present"
		}
		return out
	}
	waitReplay(t, rcvs["all"], "the table", tableRowsText(t, conn, "t", ""))
	waitReplay(t, rcvs["even"], "the even rows", tableRowsText(t, conn, "t", "id % 2 = 0"))
	for name, where := range map[string]string{"noupd": "", "odd_noupd": "id % 2 = 1"} {
		want := keys(tableRowsText(t, conn, "t", where))
		deadline := time.Now().Add(10 * time.Second)
		var r replayer
		for {
			d := diffRows(keys(r.replay(t, rcvs[name].Messages())), want)
			if d == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sink %s: its replay does not hold the table's rows:%s", name, d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	merged := 0
	for _, m := range rcvs["all"].Messages() {
		if m.Action == "update" && len(m.Metadata.UnchangedToastColumns) > 0 {
			merged++
		}
	}
	t.Logf("%d rows, 4 sinks backfilled in %v under %d writer changes (%d updates with unchanged TOAST to sink all) and %d commits held 100 ms; %d chunks read again for a commit their snapshot missed",
		rows, took.Round(time.Millisecond), ops, merged, held, strings.Count(e.d.out.String(), "its snapshot missed a transaction"))
}

// hotRows follows how far a backfill got: the highest id a receiver got
// as a read.
type hotRows struct {
	rows int
	at   atomic.Int64
}

// followReads follows rcv's reads until the test ends.
func followReads(t *testing.T, rcv *webhooktest.Receiver, rows int) *hotRows {
	h := &hotRows{rows: rows}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		seen := 0
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			ms := rcv.Messages()
			for _, m := range ms[seen:] {
				var r struct{ ID int64 }
				if m.Action == "read" && json.Unmarshal(m.Record, &r) == nil && r.ID > h.at.Load() {
					h.at.Store(r.ID)
				}
			}
			seen = len(ms)
		}
	}()
	return h
}

// id picks a row: three times in four among the 300 after the last read,
// else any.
func (h *hotRows) id(rnd *rand.Rand) int {
	if rnd.IntN(4) > 0 {
		if id := int(h.at.Load()) + 1 + rnd.IntN(300); id <= h.rows {
			return id
		}
	}
	return 1 + rnd.IntN(h.rows)
}

// TestBackfillReadKeptPerSink: issue 16 item 3 against a real PostgreSQL,
// made certain rather than left to a writer's timing. Each sink's backfill
// reads the whole table in one chunk whose query waits, at its second row,
// for an advisory lock the test holds (the --where takes it; the check's
// trial reads only row 1 and does not); while it waits, after its low
// watermark and its snapshot, an update of every column of every row
// commits, then the test lets the lock go: the update is between the
// chunk's watermarks and not in what the chunk read. Sink all takes
// the update and so leaves every read out; noupd (actions without update)
// and celnoupd (a filter rejecting updates) never get the update, so they
// must keep every read, or they would never have the rows.
func TestBackfillReadKeptPerSink(t *testing.T) {
	t.Parallel()
	const rows = 50
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, fmt.Sprintf(`CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT i, 0 FROM generate_series(1, %d) i`, rows))
	sinks := []struct{ name, extra string }{
		{"all", ""},
		{"noupd", "    actions: [insert, delete, read]\n"},
		{"celnoupd", "    filter: 'action != \"update\"'\n"},
	}
	rcvs := map[string]*webhooktest.Receiver{}
	var confs []sinkConf
	for _, s := range sinks {
		rcvs[s.name] = webhooktest.New(t, "")
		confs = append(confs, sinkConf{Name: s.name, URL: rcvs[s.name].URL, Extra: s.extra})
	}
	cfg := writeConfig(t, t.TempDir(), dsn, "bf_kept", "  tables: [public.t]\n", confs...)
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q", addr))
	e := &backfillEnv{dsn: dsn, cfg: cfg, addr: addr, slot: "bf_kept", conn: conn}
	e.start(t)

	// A lock number of this database's own: the cluster is shared.
	var lock int64
	if err := conn.QueryRow(context.Background(), `SELECT oid::int8 FROM pg_database WHERE datname = current_database()`).Scan(&lock); err != nil {
		t.Fatal(err)
	}
	where := fmt.Sprintf(`CASE WHEN id = 1 THEN true ELSE pg_advisory_xact_lock_shared(%d) IS NOT NULL END`, lock)
	body, err := json.Marshal(map[string]string{"where": where})
	if err != nil {
		t.Fatal(err)
	}
	for round, s := range sinks {
		exec1(t, conn, fmt.Sprintf(`SELECT pg_advisory_lock(%d)`, lock))
		code, out := adminDo(t, addr, "POST", "/api/v1/sinks/"+s.name+"/backfills", string(body))
		var b struct{ ID string }
		if code != 202 || json.Unmarshal(out, &b) != nil {
			t.Fatalf("POST backfill of %s: %d %s", s.name, code, out)
		}
		// The chunk's query waits for the lock at row 2: its low watermark
		// is written and its snapshot taken.
		waitUntil(t, time.Minute, "the chunk query of "+s.name+" waiting for the test's lock", func() bool {
			var n int
			err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
				WHERE a.datname = current_database() AND a.application_name = 'walhook backfill'
				AND l.locktype = 'advisory' AND NOT l.granted`).Scan(&n)
			return err == nil && n > 0
		})
		exec1(t, conn, fmt.Sprintf(`UPDATE t SET v = %d`, round+1))
		exec1(t, conn, fmt.Sprintf(`SELECT pg_advisory_unlock(%d)`, lock))
		e.waitBackfill(t, b.ID, "done", time.Minute)
	}

	waitReplay(t, rcvs["all"], "the table", tableRowsText(t, conn, "t", ""))
	if n := countAction(rcvs["all"].Messages(), "read"); n != 0 {
		t.Fatalf("sink all got %d reads, want none: the update was not between the chunk's watermarks, and the test proves nothing", n)
	}
	for _, name := range []string{"noupd", "celnoupd"} {
		want := map[int]string{}
		for id := 1; id <= rows; id++ {
			want[id] = "present"
		}
		deadline := time.Now().Add(10 * time.Second)
		var r replayer
		for {
			got := map[int]string{}
			for id := range r.replay(t, rcvs[name].Messages()) {
				got[id] = "present"
			}
			d := diffRows(got, want)
			if d == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sink %s (it takes no update): its replay does not hold the table's rows (%d reads):%s", name, countAction(rcvs[name].Messages(), "read"), d)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := countAction(rcvs[name].Messages(), "update"); n != 0 {
			t.Errorf("sink %s got %d updates, want none", name, n)
		}
	}
}

// countAction counts the messages of an action.
func countAction(msgs []webhooktest.Message, action string) int {
	n := 0
	for _, m := range msgs {
		if m.Action == action {
			n++
		}
	}
	return n
}
