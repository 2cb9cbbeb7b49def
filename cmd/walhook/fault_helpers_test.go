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
// returns the output. It fails the test if the process exits first.
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
		if s := readSlot(t, conn, slot); s.activePID != 0 && s.activePID != not {
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
		c.update(t, m)
		return len(c.missing(ids)) == 0
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
// batch was tried more often than that allows.
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
			if gap := at[i].Sub(at[i-1]); gap < limit/2-limit/10 {
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

// retry is a logged wait before a retry.
type retry struct {
	at   time.Time     // when it was logged
	wait time.Duration // retry_in
}

// retryWaits reads the time and retry_in of the log lines that hold s.
func retryWaits(t *testing.T, out, s string) []retry {
	t.Helper()
	var waits []retry
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, s) {
			continue
		}
		var r retry
		for _, f := range strings.Fields(line) {
			var err error
			switch k, v, _ := strings.Cut(f, "="); k {
			case "time":
				r.at, err = time.Parse(time.RFC3339Nano, v)
			case "retry_in":
				r.wait, err = time.ParseDuration(v)
			}
			if err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
		}
		if r.at.IsZero() || r.wait == 0 {
			t.Fatalf("log line %q lacks time or retry_in", line)
		}
		waits = append(waits, r)
	}
	return waits
}
