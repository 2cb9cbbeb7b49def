package replication

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/pgvalue"
)

var benchRows = flag.Int("rows", 1_000_000, "rows in BenchmarkLargeTransaction's transaction")

// largeTable is a table of the shape a CDC user streams: a key, text, a
// numeric, a timestamp, an array and a document.
const largeTable = `CREATE TABLE big (id int PRIMARY KEY, name text, amount numeric(12,2), created timestamptz, tags text[], doc jsonb)`

func largeInsert(n int) string {
	return `INSERT INTO big SELECT g, 'name ' || g, g * 1.25, '2026-11-26 11:20:00+00'::timestamptz + g * interval '1 ms',
		ARRAY['a', 'b ' || g], jsonb_build_object('g', g, 'even', g % 2 = 0) FROM generate_series(1, ` + strconv.Itoa(n) + `) g`
}

// TestLargeTransaction streams a transaction of many rows: every row
// arrives, in order, with commit_idx counting within the transaction.
func TestLargeTransaction(t *testing.T) {
	t.Parallel()
	const n = 20_000
	db := newTestDB(t)
	db.exec(t, largeTable)
	ts := startStream(t, db, streamOpts{})
	db.exec(t, `BEGIN`, largeInsert(n), `UPDATE big SET name = 'last' WHERE id = 1`, `COMMIT`)
	msgs := ts.sync(t)
	if len(msgs) != n+1 {
		t.Fatalf("got %d messages, want %d", len(msgs), n+1)
	}
	for i, m := range msgs {
		if m.Pos.Idx != uint32(i) || m.Pos.CommitLSN != msgs[0].Pos.CommitLSN {
			t.Fatalf("message %d: got position %s, want index %d of the transaction at %s", i, m.Pos, i, msgs[0].Pos.CommitLSN)
		}
	}
	if got, want := render(msgs[n-1]), fmt.Sprintf(`{"action":"insert","table":"public.big","record":{"id":%d,"name":"name %d","amount":"%d.00","created":"2026-11-26T11:20:20.000000Z","tags":["a","b %d"],"doc":{"g": %d, "even": true}},"changes":null}`, n, n, n*5/4, n, n); got != want {
		t.Errorf("last insert: got %s, want %s", got, want)
	}
}

// TestLargeTransactionSmallBudget: a byte budget far smaller than one
// batch of events. The stream holds a transaction's changes back until
// the batch is full or the transaction ends; the changes it holds count
// against the budget, so it must hand them on before it waits for room,
// or it would wait for a consumer that never sees them.
func TestLargeTransactionSmallBudget(t *testing.T) {
	t.Parallel()
	const n = 2_000
	db := newTestDB(t)
	db.exec(t, largeTable)
	ts := startStream(t, db, streamOpts{budget: 2 << 10})
	db.exec(t, `BEGIN`, largeInsert(n), `COMMIT`)
	msgs := ts.sync(t)
	if len(msgs) != n {
		t.Fatalf("got %d messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if m.Pos.Idx != uint32(i) {
			t.Fatalf("message %d: got position %s, want index %d", i, m.Pos, i)
		}
	}
}

// TestBudgetReturnedOnDisconnect: the connection ends while the stream
// holds a batch it could not hand on (the consumer is not reading). The
// events come again on the next connection, so their budget must come
// back: once the consumer took what was handed on, nothing is in use.
func TestBudgetReturnedOnDisconnect(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t, largeTable)
	// One batch fits in the channel; status updates every 200 ms notice
	// the lost connection while the stream waits with the next batch.
	ts := startStream(t, db, streamOpts{budget: 4 << 20, buffer: 1, heartbeat: 200 * time.Millisecond})
	db.exec(t, `BEGIN`, largeInsert(5_000), `COMMIT`)
	// Read up to the transaction's first change (heartbeats come before
	// it), then no more: its other changes fill the channel and the
	// stream's pending batch. Nothing else comes between a transaction's
	// changes.
	for ts.next(t, 30*time.Second).Kind != EventChange {
	}
	// Waiting: the channel is full and the budget in use stopped growing.
	var last int64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		in := ts.budget.InUse()
		if in > 0 && in == last && len(ts.events) == cap(ts.events) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream did not wait within 30s (%d bytes in use, %d batches queued)", in, len(ts.events))
		}
		last = in
	}
	db.exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '`+db.name+`'`)
	select {
	case <-ts.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not end within 30s of its connection")
	}
	handed := 0
	take := func(evs []Event) {
		for _, ev := range evs {
			if ev.Kind == EventChange {
				ts.taker.Took(ev.Msg.Size())
				handed++
			}
		}
	}
	take(ts.pending)
	for len(ts.events) > 0 {
		take(<-ts.events)
	}
	if in := ts.budget.InUse(); in != 0 {
		t.Errorf("after the consumer took the %d changes handed on, %d bytes of the budget are still in use, want 0", handed, in)
	}
}

// BenchmarkLargeTransaction inserts -rows rows in one transaction, then
// streams them through a Stream into a consumer that counts them and
// writes each as JSON, and reports rows/s and the process's peak RSS.
// Before that, for comparison, pg_recvlogical reads the same transaction
// from a second slot (pgoutput, the same publication) and discards it. It
// makes one pass whatever b.N. Run it alone:
//
//	go test -run '^$' -bench LargeTransaction -benchtime 1x ./replication
func BenchmarkLargeTransaction(b *testing.B) {
	n := *benchRows
	db := newTestDB(b)
	db.exec(b, largeTable)
	ctx := context.Background()
	recvSlot := db.name + "_recvlogical"
	db.exec(b, "CREATE PUBLICATION walhook FOR ALL TABLES WITH (publish_via_partition_root = true)",
		"SELECT pg_create_logical_replication_slot('"+recvSlot+"', 'pgoutput')",
		"SELECT pg_create_logical_replication_slot('"+db.name+"', 'pgoutput')")
	start := time.Now()
	db.exec(b, largeInsert(n))
	var end pglogrepl.LSN
	if err := db.conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&end); err != nil {
		b.Fatal(err)
	}
	b.Logf("inserted %d rows in one transaction in %v", n, time.Since(start).Round(time.Millisecond))

	// pg_recvlogical on the other slot, same plugin options, to the same end.
	// It goes first: both then read the WAL from a warm page cache.
	recvRate := 0.0
	if bin, err := recvlogicalPath(); err != nil {
		b.Logf("no pg_recvlogical to compare with: %v", err)
	} else {
		recvRate = recvlogical(b, bin, db, recvSlot, end, n)
	}

	// walhook: the slot holds the transaction; stream it from the start.
	// One pass whatever b.N: the slot has been read then.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset the peak RSS (%v): it includes the time before streaming", err)
	}
	b.ResetTimer()
	start = time.Now()
	cpuStart := cpuTime(b)
	ts := startStream(b, db, streamOpts{buffer: 1024})
	count := 0
	var out []byte
	for {
		ev := ts.next(b, 5*time.Minute)
		if ev.Kind == EventChange && ev.Msg.Table == "big" {
			out = ev.Msg.AppendJSON(out[:0], "bench")
			count++
		}
		if ev.Kind == EventCommit && count > 0 {
			break
		}
	}
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpuStart
	b.StopTimer()
	if count != n {
		b.Fatalf("got %d rows, want %d", count, n)
	}
	hwm := peakRSS(b)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64(hwm)/(1<<20), "peak-RSS-MB")
	if recvRate > 0 {
		b.ReportMetric(recvRate, "recvlogical-rows/s")
	}
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "walhook-CPUs")
	b.Logf("walhook Stream: %d rows in %v: %.0f rows/s, peak RSS %.1f MB, %v of CPU in this process (%.0f%% of one CPU)",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), float64(hwm)/(1<<20), cpu.Round(time.Millisecond), 100*cpu.Seconds()/elapsed.Seconds())
}

// recvlogical reads slot to end with pg_recvlogical, pgoutput with the
// stream's options, discarding the output, and returns its rows/s.
func recvlogical(b *testing.B, bin string, db *testDB, slot string, end pglogrepl.LSN, n int) float64 {
	start := time.Now()
	cmd := exec.Command(bin, "-d", db.dsn, "--slot", slot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names=walhook", "--endpos", end.String(), "-f", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	written, _ := bufio.NewReaderSize(stdout, 1<<20).WriteTo(discard{})
	if err := cmd.Wait(); err != nil {
		b.Fatalf("pg_recvlogical: %v\n%s", err, stderr.String())
	}
	elapsed := time.Since(start)
	b.Logf("pg_recvlogical: %d rows (%d bytes of pgoutput) in %v: %.0f rows/s", n, written, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	return float64(n) / elapsed.Seconds()
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// peakRSS reads the process's peak resident set size (VmHWM), in bytes.
func peakRSS(tb testing.TB) int64 {
	tb.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmHWM in /proc/self/status")
	return 0
}

func recvlogicalPath() (string, error) {
	if p, err := exec.LookPath("pg_recvlogical"); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_recvlogical")
	if len(matches) == 0 {
		return "", fmt.Errorf("not on PATH nor in /usr/lib/postgresql/*/bin")
	}
	return matches[len(matches)-1], nil
}

// BenchmarkDecodeInsert measures the decoder alone on one Insert message of
// the large transaction's shape.
func BenchmarkDecodeInsert(b *testing.B) {
	const rel = 16500
	d := newDecoder(pgvalue.NewTypes(nil), nil, nil)
	ctx := context.Background()
	emit := func(Event) error { return nil }
	setup := [][]byte{beginMsg(0x200, t0, 7), relationMsg(rel, "public", "big", 'd',
		relCol{"id", pgtype.Int4OID, true}, relCol{"name", pgtype.TextOID, false}, relCol{"amount", pgtype.NumericOID, false},
		relCol{"created", pgtype.TimestamptzOID, false}, relCol{"tags", pgtype.TextArrayOID, false}, relCol{"doc", pgtype.JSONBOID, false})}
	for _, m := range setup {
		if err := d.decode(ctx, m, 0, t0, emit); err != nil {
			b.Fatal(err)
		}
	}
	msg := insertMsg(rel, text("123456"), text("name 123456"), text("154320.00"), text("2026-11-26 11:22:03.456+00"),
		text(`{a,"b 123456"}`), text(`{"g": 123456, "even": true}`))
	var out []byte
	var last *change.Message
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := d.decode(ctx, msg, 0, t0, func(ev Event) error { last = ev.Msg; return nil }); err != nil {
			b.Fatal(err)
		}
		out = last.AppendJSON(out[:0], "bench")
	}
}
