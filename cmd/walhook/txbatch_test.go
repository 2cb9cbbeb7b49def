package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// txRequest is one request a txReceiver got under batch_by: transaction.
type txRequest struct {
	seq    int // arrival order
	id     string
	status int
	tx     *txObject
	msgs   []txMessage
}

type txObject struct {
	XID             uint32 `json:"xid"`
	CommitLSN       string `json:"commit_lsn"`
	CommitTimestamp string `json:"commit_timestamp"`
	Part            int    `json:"part"`
	Last            bool   `json:"last"`
}

type txMessage struct {
	Action string `json:"action"`
	Record struct {
		ID int `json:"id"`
	} `json:"record"`
	Metadata struct {
		Table     string `json:"table_name"`
		CommitLSN string `json:"commit_lsn"`
		CommitIdx int    `json:"commit_idx"`
		XID       uint32 `json:"xid"`
	} `json:"metadata"`
}

// txReceiver is a real HTTP receiver that keeps every request's
// transaction object, messages and webhook-id, and answers what answer
// says (200 while it is nil).
type txReceiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []txRequest
	answer  func(txRequest) int
	changed chan struct{}
}

func newTxReceiver(t *testing.T) *txReceiver {
	r := &txReceiver{changed: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var b struct {
			Transaction *txObject   `json:"transaction"`
			Data        []txMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			t.Errorf("body is not JSON: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		rq := txRequest{seq: len(r.reqs), id: req.Header.Get("webhook-id"), tx: b.Transaction, msgs: b.Data, status: http.StatusOK}
		if r.answer != nil {
			rq.status = r.answer(rq)
		}
		r.reqs = append(r.reqs, rq)
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
		w.WriteHeader(rq.status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *txReceiver) setAnswer(f func(txRequest) int) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

// waitFor waits until cond holds for the requests so far, and returns them.
func (r *txReceiver) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]txRequest) bool) []txRequest {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		reqs := slices.Clone(r.reqs)
		r.mu.Unlock()
		if cond(reqs) {
			return reqs
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s; %d requests", timeout, what, len(reqs))
		}
	}
}

func lsnOf(t *testing.T, s string) pglogrepl.LSN {
	t.Helper()
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("commit_lsn %q: %v", s, err)
	}
	return lsn
}

// checkTxRequest checks that a request holds one transaction's changes,
// in commit_idx order, as its transaction object says.
func checkTxRequest(t *testing.T, rq txRequest) {
	t.Helper()
	if rq.tx == nil {
		t.Fatalf("request %d has no transaction object", rq.seq)
	}
	for i, m := range rq.msgs {
		if m.Metadata.XID != rq.tx.XID || m.Metadata.CommitLSN != rq.tx.CommitLSN {
			t.Fatalf("request %d (xid %d at %s) holds a change of xid %d at %s", rq.seq, rq.tx.XID, rq.tx.CommitLSN, m.Metadata.XID, m.Metadata.CommitLSN)
		}
		if i > 0 && m.Metadata.CommitIdx <= rq.msgs[i-1].Metadata.CommitIdx {
			t.Fatalf("request %d: commit_idx %d after %d", rq.seq, m.Metadata.CommitIdx, rq.msgs[i-1].Metadata.CommitIdx)
		}
	}
}

// txParts groups delivered requests by transaction, in arrival order, and
// checks that each transaction's parts are numbered 1..n, in order, with
// last on the final one only, and each part goes on where the one before
// it ended.
func txParts(t *testing.T, reqs []txRequest) map[string][]txRequest {
	t.Helper()
	byTx := map[string][]txRequest{}
	for _, rq := range reqs {
		if rq.status != http.StatusOK {
			continue
		}
		checkTxRequest(t, rq)
		byTx[rq.tx.CommitLSN] = append(byTx[rq.tx.CommitLSN], rq)
	}
	for lsn, parts := range byTx {
		for i, rq := range parts {
			if rq.tx.Part != i+1 || rq.tx.Last != (i == len(parts)-1) {
				t.Fatalf("transaction at %s: request %d of it is part %d (last %v), want part %d (last %v)", lsn, i+1, rq.tx.Part, rq.tx.Last, i+1, i == len(parts)-1)
			}
			if i > 0 && rq.msgs[0].Metadata.CommitIdx <= parts[i-1].msgs[len(parts[i-1].msgs)-1].Metadata.CommitIdx {
				t.Fatalf("transaction at %s: part %d starts at commit_idx %d, before part %d ended", lsn, i+1, rq.msgs[0].Metadata.CommitIdx, i)
			}
		}
	}
	return byTx
}

// TestTxBatchInterleaved: concurrent transactions, some touching the same
// rows, with batch_by: transaction. Every request holds the changes of one
// transaction (or one part of it), in commit_idx order, after the sink's
// tables; a transaction that only touched another table is not sent;
// transactions sharing a row arrive one after the other in commit order.
func TestTxBatchInterleaved(t *testing.T) {
	t.Parallel()
	const workers, perWorker, hot = 6, 8, 3
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
	exec1(t, conn, `CREATE TABLE other (id int PRIMARY KEY)`)
	exec1(t, conn, `INSERT INTO t SELECT g, 0 FROM generate_series(1, $1) g`, hot)
	rcv := newTxReceiver(t)
	cfg := writeConfig(t, t.TempDir(), dsn, "tx_interleaved", "  tables: [public.t, public.other]\n",
		sinkConf{Name: "tx", URL: rcv.srv.URL, Extra: "    tables: [public.t]\n    batch_by: transaction\n    batch_size: 2\n    max_in_flight: 4\n"})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "2s")
	waitStreaming(t, conn, "tx_interleaved", d)

	// Each transaction: an insert of its own row, an update of one of the
	// hot rows, an update of its own row (three changes to t); every third
	// also writes to other, which the sink leaves out. Each worker ends
	// with a transaction that writes to other only.
	var mu sync.Mutex
	want := map[uint32]int{} // xid → changes to t
	var empty []uint32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			c, err := pgx.Connect(context.Background(), dsn)
			if err != nil {
				t.Errorf("connect: %v", err)
				return
			}
			defer c.Close(context.Background())
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range perWorker + 1 {
				id := 1000 + w*100 + i
				stmts := []string{
					fmt.Sprintf(`INSERT INTO t VALUES (%d, 0)`, id),
					`SELECT pg_sleep(0.002)`,
					fmt.Sprintf(`UPDATE t SET v = v + 1 WHERE id = %d`, 1+rnd.IntN(hot)),
					fmt.Sprintf(`UPDATE t SET v = v + 1 WHERE id = %d`, id),
				}
				if i%3 == 0 {
					stmts = append(stmts, fmt.Sprintf(`INSERT INTO other VALUES (%d)`, id))
				}
				if i == perWorker {
					stmts = []string{fmt.Sprintf(`INSERT INTO other VALUES (%d)`, id+50)}
				}
				xid, err := runTx(c, stmts)
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				mu.Lock()
				if i == perWorker {
					empty = append(empty, xid)
				} else {
					want[xid] = 3
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 3 * workers * perWorker
	reqs := rcv.waitFor(t, 30*time.Second, fmt.Sprintf("%d changes", total), func(reqs []txRequest) bool {
		n := 0
		for _, rq := range reqs {
			n += len(rq.msgs)
		}
		return n >= total
	})

	byTx := txParts(t, reqs)
	if len(byTx) != len(want) {
		t.Errorf("got %d transactions, want %d", len(byTx), len(want))
	}
	type span struct {
		lsn         pglogrepl.LSN
		first, last int // arrival of its first and last part
	}
	rows := map[int][]span{} // row → the transactions that touched it
	for lsn, parts := range byTx {
		xid, n := parts[0].tx.XID, 0
		for _, rq := range parts {
			n += len(rq.msgs)
		}
		if n != want[xid] {
			t.Errorf("transaction %d at %s: got %d changes, want %d", xid, lsn, n, want[xid])
		}
		if slices.Contains(empty, xid) {
			t.Errorf("transaction %d touched only a table the sink leaves out, and was sent", xid)
		}
		s := span{lsn: lsnOf(t, lsn), first: parts[0].seq, last: parts[len(parts)-1].seq}
		seen := map[int]bool{}
		for _, rq := range parts {
			for _, m := range rq.msgs {
				if !seen[m.Record.ID] {
					seen[m.Record.ID] = true
					rows[m.Record.ID] = append(rows[m.Record.ID], s)
				}
			}
		}
	}
	shared := 0
	for id, spans := range rows {
		slices.SortFunc(spans, func(a, b span) int { return int(a.lsn) - int(b.lsn) })
		for i := 1; i < len(spans); i++ {
			shared++
			if spans[i].first < spans[i-1].last {
				t.Errorf("row %d: the transaction at %s began (request %d) before the one at %s, committed earlier, ended (request %d)",
					id, spans[i].lsn, spans[i].first, spans[i-1].lsn, spans[i-1].last)
			}
		}
	}
	if shared < workers*perWorker-hot {
		t.Errorf("only %d pairs of transactions shared a row; the test means many to", shared)
	}
}

// runTx runs stmts in one transaction and returns its xid.
func runTx(c *pgx.Conn, stmts []string) (uint32, error) {
	ctx := context.Background()
	tx, err := c.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return 0, fmt.Errorf("%s: %w", s, err)
		}
	}
	var xid int64
	if err := tx.QueryRow(ctx, `SELECT txid_current() % 4294967296`).Scan(&xid); err != nil {
		return 0, err
	}
	return uint32(xid), tx.Commit(ctx)
}

// TestTxBatchLarge: a transaction of 100,000 rows arrives in parts of
// batch_size, in order, the last one last, while walhook's peak RSS stays
// under 150 MiB: nothing holds the whole transaction.
func TestTxBatchLarge(t *testing.T) {
	t.Parallel()
	const rows, batch = 100_000, 1000
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE big (id int PRIMARY KEY, pad text)`)
	rcv := newTxReceiver(t)
	cfg := writeConfig(t, t.TempDir(), dsn, "tx_large", "  tables: [public.big]\n",
		sinkConf{Name: "tx", URL: rcv.srv.URL, Extra: fmt.Sprintf("    batch_by: transaction\n    batch_size: %d\n", batch)})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "2s")
	waitStreaming(t, conn, "tx_large", d)

	exec1(t, conn, `INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, $1) g`, rows)
	// A bound, not a speed: 7 s alone, and a full make test once took
	// over a minute for the 100 parts, one after the other, another more
	// than 3 minutes (94 parts).
	reqs := rcv.waitFor(t, 6*time.Minute, "the last part", func(reqs []txRequest) bool {
		return len(reqs) > 0 && reqs[len(reqs)-1].tx != nil && reqs[len(reqs)-1].tx.Last
	})
	peak := procStatusKB(t, d.cmd.Process.Pid, "VmHWM")
	byTx := txParts(t, reqs)
	if len(byTx) != 1 {
		t.Fatalf("got %d transactions, want 1", len(byTx))
	}
	for _, parts := range byTx {
		if len(parts) != rows/batch {
			t.Errorf("got %d parts, want %d", len(parts), rows/batch)
		}
		next := 0
		for _, rq := range parts {
			for _, m := range rq.msgs {
				if m.Metadata.CommitIdx != next || m.Record.ID != next+1 {
					t.Fatalf("part %d: got commit_idx %d (row %d), want %d (row %d)", rq.tx.Part, m.Metadata.CommitIdx, m.Record.ID, next, next+1)
				}
				next++
			}
		}
		if next != rows {
			t.Errorf("got %d rows, want %d", next, rows)
		}
	}
	t.Logf("%d rows in %d parts; walhook's peak RSS %d MiB", rows, len(reqs), peak>>10)
	// 150 MiB even under the race detector (about 120 MiB there, 64 MiB
	// without it): a runner that kept the transaction's delivered messages
	// took 240 MiB here.
	if peak > 150<<10 {
		t.Errorf("peak RSS %d MiB, want under 150 MiB", peak>>10)
	}
}

// TestTxBatchKillMidTransaction: the receiver takes part 1 of a
// transaction of three parts and fails part 2; walhook is killed with
// SIGKILL and started again. The transaction is delivered again whole, from
// part 1, with the same parts and the same webhook-id for each.
func TestTxBatchKillMidTransaction(t *testing.T) {
	t.Parallel()
	const rows, batch = 25, 10
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := newTxReceiver(t)
	rcv.setAnswer(func(rq txRequest) int {
		if rq.tx != nil && rq.tx.Part >= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	cfg := writeConfig(t, t.TempDir(), dsn, "tx_kill", "  tables: [public.t]\n",
		sinkConf{Name: "tx", URL: rcv.srv.URL, Extra: fmt.Sprintf("    batch_by: transaction\n    batch_size: %d\n", batch)})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "tx_kill", d)

	exec1(t, conn, `INSERT INTO t SELECT g FROM generate_series(1, $1) g`, rows)
	// Part 2 failing for a while: walhook persisted what part 1's 2xx
	// allowed (its cursor is written every 100 ms) many times over.
	before := rcv.waitFor(t, 30*time.Second, "part 2 to fail 8 times", func(reqs []txRequest) bool {
		n := 0
		for _, rq := range reqs {
			if rq.tx != nil && rq.tx.Part == 2 {
				n++
			}
		}
		return n >= 8
	})
	ids := map[int]string{} // part → webhook-id before the kill
	for _, rq := range before {
		checkTxRequest(t, rq)
		if old, ok := ids[rq.tx.Part]; ok && old != rq.id {
			t.Fatalf("part %d: webhook-id %s on a retry, %s before", rq.tx.Part, rq.id, old)
		}
		ids[rq.tx.Part] = rq.id
	}
	if len(ids) != 2 {
		t.Fatalf("before the kill: got parts %v, want 1 and 2", ids)
	}
	d.kill(t)
	rcv.mu.Lock()
	rcv.answer = nil
	killedAt := len(rcv.reqs)
	rcv.mu.Unlock()

	startWalhook(t, "run", "--config", cfg)
	reqs := rcv.waitFor(t, 30*time.Second, "the last part after the restart", func(reqs []txRequest) bool {
		return len(reqs) > killedAt && reqs[len(reqs)-1].tx != nil && reqs[len(reqs)-1].tx.Last
	})
	after := reqs[killedAt:]
	byTx := txParts(t, after)
	if len(byTx) != 1 {
		t.Fatalf("after the restart: got %d transactions, want 1", len(byTx))
	}
	for _, parts := range byTx {
		if len(parts) != 3 {
			t.Fatalf("after the restart: got %d parts, want 3 (from part 1)", len(parts))
		}
		n := 0
		for _, rq := range parts {
			if old, ok := ids[rq.tx.Part]; ok && old != rq.id {
				t.Errorf("part %d: webhook-id %s after the restart, %s before", rq.tx.Part, rq.id, old)
			}
			for _, m := range rq.msgs {
				if m.Metadata.CommitIdx != n {
					t.Errorf("part %d: got commit_idx %d, want %d", rq.tx.Part, m.Metadata.CommitIdx, n)
				}
				n++
			}
		}
		if n != rows {
			t.Errorf("after the restart: got %d rows, want all %d", n, rows)
		}
	}
}

// TestTxBatchBackfill: backfilled reads are no transaction: under
// batch_by: transaction they arrive in batches without a transaction
// object, and the changes streamed meanwhile with one.
func TestTxBatchBackfill(t *testing.T) {
	t.Parallel()
	const rows = 300
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
	exec1(t, conn, `INSERT INTO t SELECT g, 0 FROM generate_series(1, $1) g`, rows)
	rcv := newTxReceiver(t)
	cfg := writeConfig(t, t.TempDir(), dsn, "tx_backfill", "  tables: [public.t]\n",
		sinkConf{Name: "tx", URL: rcv.srv.URL, Extra: "    batch_by: transaction\n    batch_size: 50\n    backfill: {on_create: true}\n"})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "2s")
	waitStreaming(t, conn, "tx_backfill", d)
	exec1(t, conn, `UPDATE t SET v = 1 WHERE id <= 3`)

	// The update may commit inside the window of the chunk that reads rows
	// 1-3: it carries every column, so their reads are then left out (the
	// sink has the newer state). Every other row is read.
	reqs := rcv.waitFor(t, 30*time.Second, "every row read (1-3 read or updated) and the update", func(reqs []txRequest) bool {
		read, updated := map[int]bool{}, 0
		for _, rq := range reqs {
			for _, m := range rq.msgs {
				switch m.Action {
				case "read":
					read[m.Record.ID] = true
				case "update":
					updated++
				}
			}
		}
		for id := 4; id <= rows; id++ {
			if !read[id] {
				return false
			}
		}
		return updated == 3
	})
	for _, rq := range reqs {
		reads := 0
		for _, m := range rq.msgs {
			if m.Action == "read" {
				reads++
			}
		}
		switch {
		case reads > 0 && (reads != len(rq.msgs) || rq.tx != nil):
			t.Fatalf("request %d: %d reads of %d messages, transaction %+v; want reads alone, without a transaction object", rq.seq, reads, len(rq.msgs), rq.tx)
		case reads == 0:
			checkTxRequest(t, rq)
		}
		if len(rq.msgs) > 50 {
			t.Fatalf("request %d: %d messages, want at most batch_size (50)", rq.seq, len(rq.msgs))
		}
	}
}

// TestTxBatchWindowSmallerThanParts: a sink whose window holds fewer
// messages than batch_size, and fewer bytes than batch_bytes, still
// delivers transactions larger than both, and one of changes each larger
// than the window's bytes: parts are cut below the window, so the message
// after a full part fits in it, and a window of one message takes one
// more.
func TestTxBatchWindowSmallerThanParts(t *testing.T) {
	t.Parallel()
	const rows, window, huge = 500, 50, 5
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, pad text)`)
	rcv := newTxReceiver(t)
	cfg := writeConfig(t, t.TempDir(), dsn, "tx_window", "  tables: [public.t]\n",
		sinkConf{Name: "tx", URL: rcv.srv.URL, Extra: fmt.Sprintf("    batch_by: transaction\n    batch_size: 100\n    window: {messages: %d, bytes: 8KiB}\n", window)})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "2s")
	waitStreaming(t, conn, "tx_window", d)
	exec1(t, conn, `INSERT INTO t SELECT g, '' FROM generate_series(1, $1) g`, rows)
	// Changes of 10 kB each, more than the window's bytes.
	exec1(t, conn, `INSERT INTO t SELECT g, repeat('x', 10000) FROM generate_series($1::int + 1, $1::int + $2::int) g`, rows, huge)
	reqs := rcv.waitFor(t, 30*time.Second, "both transactions", func(reqs []txRequest) bool {
		last := 0
		for _, rq := range reqs {
			if rq.tx != nil && rq.tx.Last {
				last++
			}
		}
		return last == 2
	})
	byTx := txParts(t, reqs)
	if len(byTx) != 2 {
		t.Fatalf("got %d transactions, want 2", len(byTx))
	}
	n := 0
	for _, parts := range byTx {
		for _, rq := range parts {
			if len(rq.msgs) >= window {
				t.Errorf("part %d: %d messages, want fewer than the window (%d)", rq.tx.Part, len(rq.msgs), window)
			}
			n += len(rq.msgs)
		}
	}
	if n != rows+huge {
		t.Errorf("got %d rows, want %d", n, rows+huge)
	}
}

// TestTxBatchSpills: a transaction larger than a slow sink's window, while
// another sink goes on: the slow sink spills to its backlog (the slot is
// not held for it) and, once its receiver answers, gets the transaction
// whole from its backlog, in parts, in order.
func TestTxBatchSpills(t *testing.T) {
	t.Parallel()
	const rows = 5000
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	slow := newTxReceiver(t)
	slow.setAnswer(func(txRequest) int { return http.StatusServiceUnavailable })
	free := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "tx_spill", "  tables: [public.t]\n",
		sinkConf{Name: "slow", URL: slow.srv.URL, Extra: "    batch_by: transaction\n    batch_size: 100\n    window: {messages: 200}\n"},
		sinkConf{Name: "free", URL: free.URL})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "2s")
	waitStreaming(t, conn, "tx_spill", d)
	exec1(t, conn, `INSERT INTO t SELECT g FROM generate_series(1, $1) g`, rows)
	// The other sink has it all while the slow one's window holds 200:
	// the slow sink's messages went to its backlog.
	free.WaitCount(t, rows, 30*time.Second)
	slow.setAnswer(nil)
	reqs := slow.waitFor(t, 30*time.Second, "the last part", func(reqs []txRequest) bool {
		return len(reqs) > 0 && reqs[len(reqs)-1].tx != nil && reqs[len(reqs)-1].tx.Last && reqs[len(reqs)-1].status == http.StatusOK
	})
	byTx := txParts(t, reqs)
	if len(byTx) != 1 {
		t.Fatalf("got %d transactions, want 1", len(byTx))
	}
	for _, parts := range byTx {
		n := 0
		for _, rq := range parts {
			for _, m := range rq.msgs {
				if m.Metadata.CommitIdx != n {
					t.Fatalf("part %d: got commit_idx %d, want %d", rq.tx.Part, m.Metadata.CommitIdx, n)
				}
				n++
			}
		}
		if n != rows || len(parts) != rows/100 {
			t.Errorf("got %d rows in %d parts, want %d in %d", n, len(parts), rows, rows/100)
		}
	}
}

// TestTxBatchKillWhileSpilling: a sink takes part 1 of a transaction larger
// than its window and fails the rest, so it spills to its backlog in the
// middle of the transaction while another sink goes on; walhook is killed
// with SIGKILL and started again. The transaction is delivered again whole,
// from part 1 with its webhook-id, never from the middle its backlog starts
// at.
func TestTxBatchKillWhileSpilling(t *testing.T) {
	t.Parallel()
	const rows, batch = 200, 10
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := newTxReceiver(t)
	rcv.setAnswer(func(rq txRequest) int {
		if rq.tx != nil && rq.tx.Part >= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	free := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "tx_kill_spill", "  tables: [public.t]\n",
		sinkConf{Name: "tx", URL: rcv.srv.URL, Extra: fmt.Sprintf("    batch_by: transaction\n    batch_size: %d\n    window: {messages: 30}\n", batch)},
		sinkConf{Name: "free", URL: free.URL})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "tx_kill_spill", d)
	exec1(t, conn, `INSERT INTO t SELECT g FROM generate_series(1, $1) g`, rows)

	// The other sink has it all while this one's window holds 30: this
	// one spilled. Then part 2 fails 20 more times, 3 s or more at
	// retry.max 200 ms, while cursors are written every 100 ms and the
	// slot's flush every 200 ms: without the floor kept below the
	// transaction, the slot passed it by then (the test failed so).
	free.WaitCount(t, rows, 30*time.Second)
	rcv.mu.Lock()
	from := len(rcv.reqs)
	rcv.mu.Unlock()
	before := rcv.waitFor(t, 30*time.Second, "part 2 to fail 20 more times", func(reqs []txRequest) bool {
		return len(reqs) >= from+20
	})
	ids := map[int]string{}
	for _, rq := range before {
		ids[rq.tx.Part] = rq.id
	}
	d.kill(t)
	rcv.mu.Lock()
	rcv.answer = nil
	killedAt := len(rcv.reqs)
	rcv.mu.Unlock()

	startWalhook(t, "run", "--config", cfg)
	reqs := rcv.waitFor(t, 30*time.Second, "the last part after the restart", func(reqs []txRequest) bool {
		return len(reqs) > killedAt && reqs[len(reqs)-1].tx != nil && reqs[len(reqs)-1].tx.Last
	})
	byTx := txParts(t, reqs[killedAt:])
	if len(byTx) != 1 {
		t.Fatalf("after the restart: got %d transactions, want 1", len(byTx))
	}
	for _, parts := range byTx {
		if parts[0].id != ids[1] {
			t.Errorf("after the restart: part 1 has webhook-id %s, %s before", parts[0].id, ids[1])
		}
		n := 0
		for _, rq := range parts {
			for _, m := range rq.msgs {
				if m.Metadata.CommitIdx != n {
					t.Fatalf("after the restart: part %d holds commit_idx %d, want %d", rq.tx.Part, m.Metadata.CommitIdx, n)
				}
				n++
			}
		}
		if n != rows {
			t.Errorf("after the restart: got %d rows, want all %d", n, rows)
		}
	}
}
