package main

// Helpers of the fault suite (fault_test.go): dedicated servers, process
// memory, slot and walsender state, a background writer, and a tally of
// what the receiver got.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// startServer starts a PostgreSQL server of the test's own, for a test that
// stops it or changes its settings. It is closed when the test ends, after
// the walhook processes the test started later (cleanups run last first).
func startServer(t *testing.T, opts pgtest.Options) *pgtest.Server {
	t.Helper()
	srv, err := pgtest.Start(opts)
	if err != nil {
		t.Fatalf("start a dedicated server: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", srv.LogTail(40))
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close the dedicated server: %v", err)
		}
	})
	return srv
}

// running reports whether the process still runs.
func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Kill()
	d.wait(t, 10*time.Second)
}

// waitOutput waits until the process's output holds s at least n times and
// returns the output. It fails the test if the process exits first. Wait
// for a log line only when nothing else shows what the test needs (the
// process got past its start), or to check a message that is itself the
// contract; assert on behaviour through what the receiver, the server or
// the proxy saw.
func waitOutput(t *testing.T, d *daemon, s string, n int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := d.out.String()
		if strings.Count(out, s) >= n {
			return out
		}
		if !d.running() {
			t.Fatalf("walhook exited (%v) before logging %q %d times; output:\n%s", d.err, s, n, out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("walhook did not log %q %d times within %v; output:\n%s", s, n, timeout, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstLine returns the first line of out that holds s, or "".
func firstLine(out, s string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// rssKB returns the resident set size of process pid in KiB.
func rssKB(t testing.TB, pid int) int64 { return procStatusKB(t, pid, "VmRSS") }

// procStatusKB reads a memory field (VmRSS, VmHWM, ...) of process pid, in
// KiB, from /proc/PID/status.
func procStatusKB(t testing.TB, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read memory of process %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %s %q: %v", field, rest, err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// slotRow is a replication slot as pg_replication_slots shows it.
type slotRow struct {
	exists    bool
	confirmed pglogrepl.LSN
	activePID int // 0 when no process streams from it
	walStatus string
}

// settledSlot waits until the slot's confirmed_flush_lsn has not moved for
// quiet, and returns it.
func settledSlot(t *testing.T, conn *pgx.Conn, slot string, quiet time.Duration) pglogrepl.LSN {
	t.Helper()
	last, since := readSlot(t, conn, slot).confirmed, time.Now()
	waitUntil(t, 30*time.Second, "the slot to settle", func() bool {
		if c := readSlot(t, conn, slot).confirmed; c != last {
			last, since = c, time.Now()
		}
		return time.Since(since) >= quiet
	})
	return last
}

func readSlot(t *testing.T, conn *pgx.Conn, slot string) slotRow {
	t.Helper()
	var (
		lsn       *pglogrepl.LSN
		pid       *int32
		walStatus *string
	)
	err := conn.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn::text, active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&lsn, &pid, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotRow{}
	}
	if err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	r := slotRow{exists: true}
	if lsn != nil {
		r.confirmed = *lsn
	}
	if pid != nil {
		r.activePID = int(*pid)
	}
	if walStatus != nil {
		r.walStatus = *walStatus
	}
	return r
}

// sentLSN is how far the walsender with the given PID has decoded and sent.
func sentLSN(t *testing.T, conn *pgx.Conn, pid int) pglogrepl.LSN {
	t.Helper()
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(context.Background(), `SELECT sent_lsn::text FROM pg_stat_replication WHERE pid = $1`, pid).Scan(&lsn); err != nil {
		t.Fatalf("read sent_lsn of walsender %d: %v", pid, err)
	}
	return lsn
}

// waitActive waits until a process other than not streams from the slot and
// returns its PID.
func waitActive(t *testing.T, conn *pgx.Conn, slot string, not int, d *daemon, timeout time.Duration) int {
	t.Helper()
	var pid int
	deadline := time.Now().Add(timeout)
	for {
		if s := readSlot(t, conn, slot); s.activePID != 0 && s.activePID != not && isWalsender(t, conn, s.activePID) {
			pid = s.activePID
			return pid
		}
		if d != nil && !d.running() {
			t.Fatalf("walhook exited (%v) before streaming from slot %s; output:\n%s", d.err, slot, d.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process other than %d streams from slot %s after %v", not, slot, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inserter inserts rows (id) into a table, one per transaction, from its
// own goroutine until stopped. While the server is away it reconnects, so
// the table is the truth of what committed: a commit whose answer was lost
// may or may not be in it.
type inserter struct {
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	next int // the next id to insert
}

func startInserter(t *testing.T, dsn, table string, first int, pace time.Duration) *inserter {
	t.Helper()
	w := &inserter{stop: make(chan struct{}), done: make(chan struct{}), next: first}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(pace):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if conn == nil {
				c, err := pgx.Connect(ctx, dsn)
				if err != nil {
					cancel()
					continue // the server is away: try again
				}
				conn = c
			}
			w.mu.Lock()
			id := w.next
			w.mu.Unlock()
			_, err := conn.Exec(ctx, "INSERT INTO "+table+" (id) VALUES ($1)", id)
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				// The commit may have happened: never reuse the id.
			}
			w.mu.Lock()
			w.next++
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

// Next returns the id the inserter will try next.
func (w *inserter) Next() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next
}

// Stop stops the inserter and waits for it.
func (w *inserter) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// committedIDs returns the ids in a table.
func committedIDs(t *testing.T, conn *pgx.Conn, table string) []int {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT id FROM "+table+" ORDER BY id")
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	return ids
}

// row is what the fault tests put in their records.
type row struct {
	ID *int `json:"id"`
	K  *int `json:"k"`
	V  *int `json:"v"`
}

func parseRow(t testing.TB, m webhooktest.Message) row {
	var r row
	if err := json.Unmarshal(m.Record, &r); err != nil {
		t.Fatalf("record %s: %v", m.Record, err)
	}
	return r
}

// idTally counts the deliveries of each id of one table, looking at each
// message once however often it is asked.
type idTally struct {
	table string
	seen  int // messages looked at
	count map[int]int
}

func newIDTally(table string) *idTally { return &idTally{table: table, count: map[int]int{}} }

func (c *idTally) update(t testing.TB, msgs []webhooktest.Message) {
	for ; c.seen < len(msgs); c.seen++ {
		m := msgs[c.seen]
		if m.Metadata.TableName != c.table {
			continue
		}
		if r := parseRow(t, m); r.ID != nil {
			c.count[*r.ID]++
		}
	}
}

// missing returns the ids not delivered yet.
func (c *idTally) missing(ids []int) []int {
	var out []int
	for _, id := range ids {
		if c.count[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// waitIDs waits until every id was delivered at least once.
func waitIDs(t *testing.T, rcv *webhooktest.Receiver, table string, ids []int, timeout time.Duration) *idTally {
	t.Helper()
	c := newIDTally(table)
	rcv.WaitFor(t, timeout, fmt.Sprintf("all %d rows of %s", len(ids), table), func(m []webhooktest.Message) bool {
		// The receiver runs this under its lock after each request it
		// accepts: only the new messages are looked at, and the ids
		// are scanned only once enough distinct ones arrived (a scan of
		// 200k under the race detector held up the receiver's answers
		// for seconds on a loaded machine).
		c.update(t, m)
		return len(c.count) >= len(ids) && len(c.missing(ids)) == 0
	})
	return c
}

// duplicates sums the deliveries beyond the first.
func (c *idTally) duplicates() int {
	n := 0
	for _, k := range c.count {
		n += k - 1
	}
	return n
}

// attempts groups the requests that arrived after since by webhook-id.
func attempts(reqs []webhooktest.Request, since, until time.Time) map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, r := range reqs {
		if r.Time.Before(since) || r.Time.After(until) {
			continue
		}
		out[r.ID] = append(out[r.ID], r.Time)
	}
	return out
}

// acceptedSince groups the requests answered 200 from since on by
// webhook-id: a batch accepted more than once was retried after a request
// that walhook gave up on (its timeout) but the receiver took.
func acceptedSince(reqs []webhooktest.Request, since time.Time) map[string][]webhooktest.Request {
	out := map[string][]webhooktest.Request{}
	for _, r := range reqs {
		if r.Status == http.StatusOK && !r.Time.Before(since) {
			out[r.ID] = append(out[r.ID], r)
		}
	}
	return out
}

// maxAttempts is the highest number of requests for one batch since since.
func maxAttempts(reqs []webhooktest.Request, since time.Time) int {
	n := 0
	for _, a := range attempts(reqs, since, time.Now().Add(time.Hour)) {
		n = max(n, len(a))
	}
	return n
}

// checkBackoff checks that failed attempts at each batch came ever slower,
// up to the cap: with the retry schedule initial..limit (doubling, ±50 %
// jitter), from the fifth wait on every wait is at least limit/2, and no
// batch was tried more often than that allows. The times are when the
// receiver saw each attempt, which on a loaded machine can be late and
// shorten a gap: a gap passes from limit/4 on, still far above what waits
// that do not grow from initial would give.
func checkBackoff(t *testing.T, reqs []webhooktest.Request, since, until time.Time, initial, limit time.Duration) {
	t.Helper()
	window := until.Sub(since)
	for id, at := range attempts(reqs, since, until) {
		// Waits: initial·2^k (capped at limit) ± 50 %; the sum of the
		// shortest possible first four is (1+2+4+8)·initial/2.
		most := 5 + int((window-15*initial/2)/(limit/2))
		if len(at) > most {
			t.Errorf("batch %s was tried %d times in %v: retries do not back off", id, len(at), window.Round(time.Millisecond))
		}
		for i := 5; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < limit/4 {
				t.Errorf("batch %s: wait %d before a retry was %v, want at least %v once backed off to retry.max %v",
					id, i, gap.Round(time.Millisecond), limit/2, limit)
			}
		}
	}
}

// checkSlotLost checks how walhook ended on a lost slot: exit code 1 and an
// error that names the slot and the way to recover.
func checkSlotLost(t *testing.T, code int, out, slot string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("walhook exited %d on a lost slot, want 1; output:\n%s", code, out)
	}
	// The last line is the error main prints.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	t.Logf("exit %d: %s", code, last)
	for _, want := range []string{"walhook: ", "replication slot lost", `"` + slot + `"`, "To recover", "backfill", "state file"} {
		if !strings.Contains(last, want) {
			t.Fatalf("walhook's error %q lacks %q", last, want)
		}
	}
}

// checkPublicationMissing checks that walhook exited 1 with an error about
// the missing publication saying each of want, and no advice to drop the
// slot.
func checkPublicationMissing(t *testing.T, code int, out string, want ...string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("walhook exited %d on a missing publication, want 1; output:\n%s", code, out)
	}
	// The last line is the error main prints.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	t.Logf("exit %d: %s", code, last)
	for _, w := range append([]string{"walhook: ", "do not drop it"}, want...) {
		if !strings.Contains(last, w) {
			t.Errorf("walhook's error %q lacks %q", last, w)
		}
	}
	for _, bad := range []string{"slot lost", "slot drop", "pg_drop_replication_slot"} {
		if strings.Contains(last, bad) {
			t.Errorf("walhook's error %q says %q: the slot is fine", last, bad)
		}
	}
}

// The backoff walhook uses while PostgreSQL cannot be reached and while
// another process holds its slot: 0.5 s, growing ×1.5 a try, each wait
// jittered by ±50 %.
const (
	connBackoffInitial = 500 * time.Millisecond
	connBackoffFactor  = 1.5
	// connBackoffTries is how many tries checkConnBackoff needs: the
	// fifth wait is at least 1.27 s, beyond the 0.75 s that the longest
	// wait of a backoff that does not grow could be.
	connBackoffTries = 6
	// seenLate allows for the proxy seeing a try later than it was made
	// (the scheduler on a loaded machine), which can shorten a gap.
	seenLate = 150 * time.Millisecond
)

// waitConns waits until the proxy accepted n connections that match (all
// of them if match is nil) and returns those connections. It fails the
// test if walhook exits first.
func waitConns(t *testing.T, proxy *blackhole, d *daemon, what string, n int, match func(proxyConn) bool, timeout time.Duration) []proxyConn {
	t.Helper()
	var got []proxyConn
	deadline := time.Now().Add(timeout)
	for {
		got = got[:0]
		for _, c := range proxy.Conns() {
			if match == nil || match(c) {
				got = append(got, c)
			}
		}
		if len(got) >= n {
			return got
		}
		if !d.running() {
			t.Fatalf("walhook exited (%v) after %d of %d %s; output:\n%s", d.err, len(got), n, what, d.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d %s within %v", len(got), n, what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkConnBackoff checks, from when the proxy saw walhook's tries, that
// walhook waited between them as its backoff says: wait i at least
// connBackoffInitial·1.5^i/2, less what seenLate allows. Only lower bounds:
// a slow machine makes the gaps longer, never shorter. A walhook that
// retries at once fails on the first gap; one whose waits do not grow fails
// on the fifth.
func checkConnBackoff(t *testing.T, what string, tries []proxyConn) {
	t.Helper()
	if len(tries) < connBackoffTries {
		t.Fatalf("got %d tries %s, want at least %d to check the backoff", len(tries), what, connBackoffTries)
	}
	shortest := float64(connBackoffInitial) / 2
	var gaps []string
	for i := 1; i < connBackoffTries; i++ {
		gap := tries[i].Accepted.Sub(tries[i-1].Accepted)
		gaps = append(gaps, gap.Round(time.Millisecond).String())
		if want := time.Duration(shortest) - seenLate; gap < want {
			t.Errorf("walhook tried again %v after try %d %s, want at least %v (backoff from %v, ×%.1f, ±50%% jitter)",
				gap.Round(time.Millisecond), i, what, want, connBackoffInitial, connBackoffFactor)
		}
		shortest *= connBackoffFactor
	}
	t.Logf("waits between tries %s: %s", what, strings.Join(gaps, ", "))
}

// editConfig replaces old with new in the configuration file at path.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("configuration %s lacks %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// walsenderSince reports whether pid is a walsender whose backend started
// after since.
func walsenderSince(t *testing.T, conn *pgx.Conn, pid int, since time.Time) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE pid = $1 AND backend_start > $2)", pid, since).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// isWalsender reports whether pid is a walsender: the backend that creates
// a slot holds it for a moment too, before any walsender streams from it.
func isWalsender(t *testing.T, conn *pgx.Conn, pid int) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE pid = $1)", pid).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// startBehindProxy starts a server of its own (a 2 s wal_sender_timeout
// frees the slot from a walsender cut off by the proxy) with a table t (id
// int primary key), and the test proxy in front of it.
func startBehindProxy(t *testing.T) (*pgtest.Server, *pgx.Conn, *blackhole) {
	t.Helper()
	srv := startServer(t, pgtest.Options{WALSenderTimeout: 2 * time.Second})
	conn := connect(t, srv.DSN("postgres"))
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	return srv, conn, startBlackhole(t, fmt.Sprintf("127.0.0.1:%d", srv.Port()))
}
