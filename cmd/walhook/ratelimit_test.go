package main

import (
	"testing"
	"time"

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
	// messages, sent at once).
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
		if sum > rate+batch {
			t.Errorf("1 s from request %d: %d messages, want at most %d", i+1, sum, rate+batch)
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
