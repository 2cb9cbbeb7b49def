package main

import (
	"testing"
	"time"

	"github.com/walhook/walhook/internal/lateness"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// TestRateLimitEndToEnd: rate_limit 50/s on one sink with 2,000 rows
// written at once. Over every 1 s window after the first burst its
// receiver sees at most 50 + batch_size messages; a second, unlimited sink
// drains at full speed meanwhile; the limited sink's window (200 messages)
// fills and spills to its backlog like a slow sink's; nothing is lost and
// each row's changes keep their order.
func TestRateLimitEndToEnd(t *testing.T) {
	soak(t)
	t.Parallel()
	const rows, rate, batch = 2000, 50, 10
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
	limited := webhooktest.New(t, "")
	free := webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "rate_e2e", "  tables: [public.t]\n",
		sinkConf{Name: "limited", URL: limited.URL, Extra: "    rate_limit: 50/s\n    batch_size: 10\n    window: {messages: 200}\n"},
		sinkConf{Name: "free", URL: free.URL})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "rate_e2e", d)
	lateWindow := lateness.Probe(t)

	start := time.Now()
	// 1,000 rows inserted, then each updated: 2,000 changes, two per row.
	exec1(t, conn, `INSERT INTO t SELECT g, 0 FROM generate_series(1, $1) g`, rows/2)
	exec1(t, conn, `UPDATE t SET v = 1`)
	free.WaitCount(t, rows, 60*time.Second)
	freeTook := time.Since(start)
	if freeTook > 15*time.Second {
		t.Errorf("the unlimited sink took %v for %d changes", freeTook, rows)
	}
	if got := len(limited.Messages()); got > rows/2 {
		t.Errorf("the limited sink had %d messages when the unlimited one had all %d, after %v", got, rows, freeTook)
	}
	msgs := limited.WaitCount(t, rows, 90*time.Second)
	if took, least := time.Since(start), time.Duration(rows-batch)*time.Second/rate; took < least {
		t.Errorf("the limited sink took %v, want at least %v", took, least)
	}

	var reqs []webhooktest.Request
	for _, r := range limited.Requests() {
		if r.Status == 200 {
			reqs = append(reqs, r)
		}
	}
	// Every 1 s window from a request after the first burst (batch_size
	// messages, sent at once). The receiver stamps a request when this
	// process gets to it, and walhook sends it when its process gets to
	// it: on a loaded machine requests sent apart can be stamped together.
	// The window allows for twice the longest delay this process saw (its
	// timers' lateness: one for each process) at the rate; past half a
	// second of it the windows mean nothing and only the total time is
	// checked (the bucket itself is checked on a fake clock in sink).
	late := lateWindow()
	allowed := rate + batch + int(float64(rate)*2*late.Seconds()+0.5)
	t.Logf("this process ran up to %v late; a 1 s window may hold %d messages", late.Round(time.Millisecond), allowed)
	if late > 500*time.Millisecond {
		t.Logf("the machine is too loaded for 1 s windows to mean anything: only the total time is checked")
		allowed = len(msgs)
	}
	burst, first := 0, 0
	for first < len(reqs) && burst < batch {
		burst += reqs[first].Messages
		first++
	}
	for i := first; i < len(reqs); i++ {
		sum := 0
		for j := i; j < len(reqs) && reqs[j].Time.Sub(reqs[i].Time) < time.Second; j++ {
			sum += reqs[j].Messages
		}
		if sum > allowed {
			t.Errorf("1 s from request %d: %d messages, want at most %d (%d + batch_size %d + twice %v of lateness)", i+1, sum, allowed, rate, batch, late.Round(time.Millisecond))
		}
	}
	// Nothing lost, each row's insert before its update.
	seen := map[int]int{} // id → changes seen
	for _, m := range msgs {
		id := rowID(t, m)
		switch {
		case seen[id] == 0 && m.Action != "insert", seen[id] == 1 && m.Action != "update", seen[id] > 1:
			t.Fatalf("row %d: change %d is %s", id, seen[id]+1, m.Action)
		}
		seen[id]++
	}
	if len(seen) != rows/2 {
		t.Errorf("got changes of %d rows, want %d", len(seen), rows/2)
	}
}
