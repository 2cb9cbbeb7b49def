package main

// The fault suite: each test starts the real walhook binary against a real
// PostgreSQL and a real receiver, injects one kind of fault (killed
// processes, a restarted server, a receiver that is down, a dropped or
// invalidated slot, a slot held by someone else) and asserts on what the
// receiver got.

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// TestFaultKillStorm commits 250 keys × 20 versions while walhook is
// SIGKILLed and restarted at random intervals of 0.5 to 1.5 s, and the
// receiver answers 500 to 10 % of requests and drops 3 % of connections
// without an answer. Every (key, version) must arrive at least once, the
// first deliveries of each key in commit order, with fewer than 3
// deliveries per change on average.
func TestFaultKillStorm(t *testing.T) {
	t.Parallel()
	const (
		keys     = 250
		versions = 20
		perTx    = 25 // keys per transaction
		minKills = 5
	)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)

	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL)`)
	rcv := webhooktest.New(t, "")
	rcv.SetFaults(webhooktest.Faults{FailRatio: 0.10, DropRatio: 0.03})
	// Retries wait 100 ms and more, so that failed batches stay in flight
	// for a while and kills catch transactions whose later ones are
	// already delivered: a flush LSN that ran ahead of them would lose them.
	cfg := writeConfig(t, t.TempDir(), dsn, "fault_storm", "  tables: [public.kv]\n",
		sinkConf{Name: "s", URL: rcv.URL, Retry: "{initial: 100ms, max: 1s}", Extra: "    batch_size: 20\n    max_in_flight: 8\n"})

	// The first walhook creates the slot; the workload starts after that.
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "fault_storm", d)

	// The workload: version 1 inserts every key, each later version
	// updates every key; perTx keys per transaction, paced so that it
	// spans several kills.
	workDone := make(chan error, 1)
	wconn := connect(t, dsn)
	go func() {
		ctx := context.Background()
		for v := 1; v <= versions; v++ {
			for lo := 0; lo < keys; lo += perTx {
				var err error
				if v == 1 {
					_, err = wconn.Exec(ctx, `INSERT INTO kv SELECT k, 1 FROM generate_series($1::int, $2::int) k`, lo, lo+perTx-1)
				} else {
					_, err = wconn.Exec(ctx, `UPDATE kv SET v = $1 WHERE k BETWEEN $2 AND $3`, v, lo, lo+perTx-1)
				}
				if err != nil {
					workDone <- fmt.Errorf("version %d keys %d..: %w", v, lo, err)
					return
				}
				time.Sleep(25 * time.Millisecond)
			}
		}
		workDone <- nil
	}()

	kills := 0
	working := true
	start := time.Now()
	for working || kills < minKills {
		// Run for a random 0.5 to 1.5 s, then SIGKILL: the interval is
		// the fault schedule, not a wait for a condition.
		life := 500*time.Millisecond + time.Duration(rng.Int63n(int64(time.Second)))
		select {
		case err := <-workDone:
			if err != nil {
				t.Fatal(err)
			}
			working = false
			continue
		case <-time.After(life):
		}
		if !d.running() {
			t.Fatalf("walhook exited by itself (%v); output:\n%s", d.err, d.out.String())
		}
		d.kill(t)
		kills++
		d = startWalhook(t, "run", "--config", cfg)
	}
	t.Logf("workload committed and walhook SIGKILLed %d times in %v", kills, time.Since(start).Round(time.Millisecond))
	waitOutput(t, d, "msg=streaming", 1, 30*time.Second) // SIGTERM before main handles it would kill

	// The last walhook runs undisturbed until every change arrived.
	type kv struct{ k, v int }
	first := map[int][]int{} // key: versions in the order of their first delivery
	delivered := map[kv]int{}
	idem := map[kv]string{}
	seen := 0
	var badIdem []string
	msgs := rcv.WaitFor(t, time.Minute, "every (key, version)", func(m []webhooktest.Message) bool {
		for ; seen < len(m); seen++ {
			r := parseRow(t, m[seen])
			c := kv{*r.K, *r.V}
			if delivered[c] == 0 {
				first[c.k] = append(first[c.k], c.v)
				idem[c] = m[seen].Metadata.IdempotencyKey
			} else if idem[c] != m[seen].Metadata.IdempotencyKey {
				badIdem = append(badIdem, fmt.Sprintf("%v: %s and %s", c, idem[c], m[seen].Metadata.IdempotencyKey))
			}
			delivered[c]++
		}
		return len(delivered) == keys*versions
	})
	for k := 0; k < keys; k++ {
		for i, v := range first[k] {
			if v != i+1 {
				t.Fatalf("key %d: first deliveries in the order %v, want versions 1..%d in commit order", k, first[k], versions)
			}
		}
	}
	if len(badIdem) > 0 {
		t.Errorf("a change was delivered with different idempotency keys: %v", badIdem)
	}
	factor := float64(len(msgs)) / float64(keys*versions)
	requests, failures, _, _ := rcv.Stats()
	t.Logf("duplicate factor %.3f: %d deliveries of %d distinct changes; %d kills; %d requests, %d failed by injection",
		factor, len(msgs), keys*versions, kills, requests, failures)
	if factor >= 3 {
		t.Fatalf("got %.2f deliveries per change on average, want fewer than 3", factor)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestFaultPostgresUnreachableThenRestarted starts walhook while its
// PostgreSQL is down: walhook must keep retrying with backoff, saying why in
// its log, not exit. Then, while rows are committed continuously,
// PostgreSQL is stopped with pg_ctl -m immediate (a crash) and started
// again: the same walhook process must reconnect by itself and deliver every
// committed row. walhook reaches PostgreSQL through a proxy, which sees
// each of its tries.
func TestFaultPostgresUnreachableThenRestarted(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgtest.Options{})
	dsn := srv.DSN("postgres")
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	conn.Close(context.Background())
	if err := srv.Stop("fast"); err != nil {
		t.Fatal(err)
	}

	proxy := startBlackhole(t, fmt.Sprintf("127.0.0.1:%d", srv.Port()))
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), proxy.DSN(t, dsn), "fault_pgrestart", "", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	// Unreachable at start: walhook keeps trying, waiting longer each
	// time. Each try is one connection, answered with a reset (pgx then
	// sends a cancel request on another, which is not a try).
	connection := func(c proxyConn) bool { return c.Kind == "startup" || c.Kind == "replication" }
	tries := waitConns(t, proxy, d, "tries to reach PostgreSQL", connBackoffTries, connection, time.Minute)
	checkConnBackoff(t, "to reach PostgreSQL", tries)
	// The operator is told why (the message, not the timing, is the
	// contract here).
	const retrying = `msg="cannot reach PostgreSQL; retrying"`
	if line := firstLine(waitOutput(t, d, retrying, 1, 30*time.Second), retrying); !strings.Contains(line, " err=") || !strings.Contains(line, " retry_in=") {
		t.Errorf("the retry log line does not say why and for how long: %s", line)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	conn = connect(t, dsn)
	oldPID := waitActive(t, conn, "fault_pgrestart", 0, d, 30*time.Second)

	w := startInserter(t, dsn, "t", 1, 5*time.Millisecond)
	rcv.WaitCount(t, 50, 30*time.Second)
	if err := srv.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	conn = connect(t, dsn)
	waitActive(t, conn, "fault_pgrestart", oldPID, d, 60*time.Second)
	// Keep writing for a while after the reconnect, then check it all.
	after := w.Next() + 50
	waitUntil(t, 30*time.Second, "50 more rows after the restart", func() bool { return w.Next() >= after })
	w.Stop()
	ids := committedIDs(t, conn, "t")
	c := waitIDs(t, rcv, "t", ids, 60*time.Second)
	if !d.running() {
		t.Fatalf("walhook exited (%v): it must reconnect by itself; output:\n%s", d.err, d.out.String())
	}
	t.Logf("%d rows committed around an immediate restart, all delivered, %d redelivered", len(ids), c.duplicates())
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestFaultReceiverOutage takes the receiver down, restarts walhook during
// the outage, then commits a backlog far larger than walhook's buffers.
// Retries must back off; walhook must stop reading the slot rather than
// buffer (the walsender stalls far behind the WAL while walhook's memory
// stays flat), keep its replication connection alive through a short
// wal_sender_timeout while blocked, and deliver everything once the
// receiver is back.
func TestFaultReceiverOutage(t *testing.T) {
	soak(t)
	t.Parallel()
	const (
		backlogRows = 40000
		rowBytes    = 1500
	)
	const walSenderTimeout = 2 * time.Second
	srv := startServer(t, pgtest.Options{WALSenderTimeout: walSenderTimeout})
	dsn := srv.DSN("postgres")
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, pad text)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "fault_outage", "", sinkConf{Name: "s", URL: rcv.URL,
		Retry: "{initial: 50ms, max: 800ms}", Extra: "    batch_size: 100\n    max_in_flight: 4\n"})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "fault_outage", d)
	exec1(t, conn, `INSERT INTO t SELECT i, 'before' FROM generate_series(1, 10) i`)
	rcv.WaitCount(t, 10, 30*time.Second)

	// The outage. A few rows fail until their batches are retried at the
	// backoff's cap.
	rcv.SetFaults(webhooktest.Faults{Down: true})
	outage := time.Now()
	exec1(t, conn, `INSERT INTO t SELECT i, 'during' FROM generate_series(11, 30) i`)
	// The undelivered rows' WAL ends by here: the slot must stay before it.
	duringEnd := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "a batch retried 7 times", func() bool {
		return maxAttempts(rcv.Requests(), outage) >= 7
	})

	// Restart walhook during the outage: a stop signal drains for the
	// shutdown timeout (less its reserve of a tenth), in vain, and exits
	// 0. Nothing can drain, so a walhook that ignored the flag would not
	// exit within 10 s (the default timeout is 30 s).
	oldPID := readSlot(t, conn, "fault_outage").activePID
	stopAt := time.Now()
	if code := d.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM during the outage, want 0", code)
	}
	took := time.Since(stopAt)
	t.Logf("stopped in %v with --shutdown-timeout 1s", took.Round(time.Millisecond))
	if took < 900*time.Millisecond {
		t.Errorf("walhook stopped %v after SIGTERM with undelivered batches, want it to drain for --shutdown-timeout 1s less its reserve", took.Round(time.Millisecond))
	}
	checkBackoff(t, rcv.Requests(), outage, stopAt, 50*time.Millisecond, 800*time.Millisecond)

	d = startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	pid := waitActive(t, conn, "fault_outage", oldPID, d, 30*time.Second)
	restarted := time.Now()
	waitUntil(t, 30*time.Second, "the new walhook retrying", func() bool {
		return maxAttempts(rcv.Requests(), restarted) >= 2
	})
	// The new walhook may still move the slot over what lies before the
	// undelivered rows (heartbeats it reads again from the slot, at its
	// next status update); once that is done the slot must not move.
	held := settledSlot(t, conn, "fault_outage", time.Second)
	if held >= duringEnd {
		t.Fatalf("the slot is at %s, past the undelivered rows (their WAL ends by %s)", held, duringEnd)
	}

	// The backlog, in two halves, each far more than walhook may buffer.
	// After each, watch walhook stay blocked until the walsender has not
	// moved for twice wal_sender_timeout: walhook is reading nothing, so
	// only its status updates can keep the connection through that.
	commit := func(lo, hi int) {
		for ; lo <= hi; lo += 2000 {
			exec1(t, conn, `INSERT INTO t SELECT i, repeat(md5(i::text), $3) FROM generate_series($1::int, $2::int) i`,
				lo, min(lo+1999, hi), rowBytes/32)
		}
	}
	// stall waits until the walsender stalls or has sent all WAL up to
	// end (walhook kept reading: the checks below fail).
	stall := func(end pglogrepl.LSN) (maxRSS int64, sent pglogrepl.LSN) {
		var lastSent pglogrepl.LSN
		stableSince := time.Now()
		waitUntil(t, 60*time.Second, "the walsender to stall", func() bool {
			if s := readSlot(t, conn, "fault_outage"); s.activePID != pid {
				t.Fatalf("the replication connection was replaced (walsender %d, now %d) while delivery was blocked: status updates must keep it alive", pid, s.activePID)
			} else if s.confirmed > held {
				t.Fatalf("the slot advanced from %s to %s while nothing was delivered", held, s.confirmed)
			}
			maxRSS = max(maxRSS, rssKB(t, d.cmd.Process.Pid))
			if sent = sentLSN(t, conn, pid); sent != lastSent {
				lastSent, stableSince = sent, time.Now()
			}
			return sent >= end || time.Since(stableSince) > 2*walSenderTimeout
		})
		return maxRSS, sent
	}
	rss0 := rssKB(t, d.cmd.Process.Pid)
	lsn0 := currentLSN(t, conn)
	commit(31, 30+backlogRows/2)
	lsn1 := currentLSN(t, conn)
	rss1, _ := stall(lsn1)
	commit(31+backlogRows/2, 30+backlogRows)
	lsn2 := currentLSN(t, conn)
	rss2, sent := stall(lsn2)
	backlog, half := int64(lsn2-lsn0), int64(lsn2-lsn1)
	lag := int64(lsn2 - sent)
	t.Logf("backlog %d MB of WAL: the walsender stalled %d MB behind; walhook RSS %d MB before, %d MB after the first half, %d MB after the second",
		backlog>>20, lag>>20, rss0>>10, rss1>>10, rss2>>10)
	if lag < backlog/2 {
		t.Errorf("the walsender sent all but %d of %d bytes of backlog while delivery was blocked: walhook kept reading", lag, backlog)
	}
	if grew := (rss2 - rss1) * 1024; grew > half/4 {
		t.Errorf("walhook's RSS grew by %d MB while another %d MB of backlog was committed: memory is not bounded", grew>>20, half>>20)
	}

	// The receiver is back: everything arrives.
	rcv.SetFaults(webhooktest.Faults{})
	ids := make([]int, 0, 30+backlogRows)
	for i := 1; i <= 30+backlogRows; i++ {
		ids = append(ids, i)
	}
	waitIDs(t, rcv, "t", ids, 3*time.Minute)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestFaultInterleavedTransactionsAcrossRestart is the shape of Debezium's
// data-loss bug dbz#76: transaction A begins and writes, B commits and is
// delivered, and the slot confirms a position past A's writes; walhook
// stops, A commits while it is down, then C commits. After the restart A, B
// and C must all arrive, each whole.
func TestFaultInterleavedTransactionsAcrossRestart(t *testing.T) {
	t.Parallel()
	for _, stop := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(stop, func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.NewDatabase(t, pgtest.Shared())
			conn := connect(t, dsn)
			exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, tx text)`)
			rcv := webhooktest.New(t, "")
			cfg := writeConfig(t, t.TempDir(), dsn, "fault_interleave", "", sinkConf{Name: "s", URL: rcv.URL})
			d := startWalhook(t, "run", "--config", cfg)
			waitStreaming(t, conn, "fault_interleave", d)

			connA := connect(t, dsn)
			txA, err := connA.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer txA.Rollback(ctx)
			var aWrote pglogrepl.LSN
			if _, err := txA.Exec(ctx, `INSERT INTO t VALUES (1, 'A'), (2, 'A')`); err != nil {
				t.Fatal(err)
			}
			if err := txA.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&aWrote); err != nil {
				t.Fatal(err)
			}
			exec1(t, conn, `INSERT INTO t VALUES (10, 'B')`)
			rcv.WaitCount(t, 1, 30*time.Second)
			// The slot moves past A's writes (B's end, then idle
			// positions): A is still open, so this is safe only because
			// PostgreSQL resends by commit position.
			waitUntil(t, 30*time.Second, "the slot to confirm past A's writes", func() bool {
				return readSlot(t, conn, "fault_interleave").confirmed > aWrote
			})

			if stop == "SIGTERM" {
				if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
					t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
				}
			} else {
				d.kill(t)
			}
			if _, err := txA.Exec(ctx, `INSERT INTO t VALUES (3, 'A')`); err != nil {
				t.Fatal(err)
			}
			if err := txA.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			exec1(t, conn, `INSERT INTO t VALUES (20, 'C'), (21, 'C')`)

			d = startWalhook(t, "run", "--config", cfg)
			c := waitIDs(t, rcv, "t", []int{1, 2, 3, 10, 20, 21}, 30*time.Second)
			// A's three changes, two written before the stop and one
			// after, arrive as one transaction.
			var aLSN string
			for _, m := range rcv.Messages() {
				if r := parseRow(t, m); *r.ID <= 3 {
					if aLSN != "" && m.Metadata.CommitLSN != aLSN {
						t.Errorf("A's changes have commit LSNs %s and %s, want one", aLSN, m.Metadata.CommitLSN)
					}
					aLSN = m.Metadata.CommitLSN
				}
			}
			if n := c.duplicates(); n > 0 {
				t.Logf("%d redelivered", n)
			}
			if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
			}
		})
	}
}

// TestFaultIdleAndFilteredTraffic writes only to a table outside the
// publication and changes the sink filters out (by table and by action):
// the slot's confirmed_flush_lsn must follow the server's WAL position
// within a few heartbeat intervals, not only with the 10 s status timer.
// Then, with the receiver down and one matching change undelivered, it
// must stop at that transaction, never pass it, and catch up once it is
// delivered.
func TestFaultIdleAndFilteredTraffic(t *testing.T) {
	t.Parallel()
	const heartbeat = 200 * time.Millisecond // writeConfig's source.heartbeat
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int)`)        // published, delivered on insert
	exec1(t, conn, `CREATE TABLE u (id int PRIMARY KEY)`)               // published, not a table of the sink
	exec1(t, conn, `CREATE TABLE other (id serial PRIMARY KEY, v int)`) // not published
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "fault_idle", "  tables: [public.t, public.u]\n",
		sinkConf{Name: "s", URL: rcv.URL, Extra: "    tables: [public.t]\n    actions: [insert]\n"})
	// Status updates go out every min(10 s, receive_timeout/3, heartbeat,
	// wal_sender_timeout/4): with receive_timeout 60 s and the shared
	// server's wal_sender_timeout of 60 s, only the heartbeat can make them
	// come sooner than every 10 s.
	editConfig(t, cfg, "receive_timeout: 5s", "receive_timeout: 60s")
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "fault_idle", d)
	exec1(t, conn, `INSERT INTO t VALUES (1, 0)`)
	rcv.WaitCount(t, 1, 30*time.Second)

	// Filtered and unpublished traffic only: the slot follows the WAL.
	writes := []string{
		`INSERT INTO other (v) SELECT 1 FROM generate_series(1, 50)`,
		`UPDATE t SET v = v + 1`,
		`INSERT INTO u SELECT coalesce(max(id), 0) + 1 FROM u`,
	}
	// A round takes about two heartbeats; the bound is generous, yet half
	// the 10 s a walhook whose status updates ignored the heartbeat would
	// need after the first round (each round starts just after an update).
	const bound = 25 * heartbeat
	var worst time.Duration
	for round := 0; round < 6; round++ {
		exec1(t, conn, writes[round%len(writes)])
		target := currentLSN(t, conn)
		start := time.Now()
		waitUntil(t, bound, fmt.Sprintf("confirmed_flush_lsn reaches %s (status updates must follow the heartbeat %v)", target, heartbeat), func() bool {
			return readSlot(t, conn, "fault_idle").confirmed >= target
		})
		worst = max(worst, time.Since(start))
	}
	t.Logf("confirmed_flush_lsn reached the WAL position after filtered writes within %v (heartbeat %v)", worst.Round(time.Millisecond), heartbeat)
	if n := len(rcv.Messages()); n != 1 {
		t.Fatalf("receiver got %d messages, want 1: the others are filtered out", n)
	}

	// One matching change the receiver refuses, with filtered traffic
	// around it: the slot may move up to it, never past it.
	rcv.SetFaults(webhooktest.Faults{Down: true})
	exec1(t, conn, `INSERT INTO t VALUES (2, 0)`)
	checkSlotHeld(t, conn, rcv, "fault_idle", 15, 1, func(i int) { exec1(t, conn, writes[i%len(writes)]) })
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestFaultSlotDropped drops walhook's slot while it runs (terminating its
// walsender first, as an operator would have to): walhook must exit 1
// naming the slot, what happened and how to recover, and must not create a
// new slot, then or on the next start.
func TestFaultSlotDropped(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "fault_dropped", "", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "fault_dropped", d)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	rcv.WaitCount(t, 1, 30*time.Second)

	waitUntil(t, 30*time.Second, "the slot to be dropped", func() bool {
		if s := readSlot(t, conn, "fault_dropped"); s.activePID != 0 {
			exec1(t, conn, `SELECT pg_terminate_backend($1)`, s.activePID)
		}
		_, err := conn.Exec(context.Background(), `SELECT pg_drop_replication_slot('fault_dropped')`)
		return err == nil // else walhook took it again before the drop: once more
	})
	code := d.wait(t, 60*time.Second)
	checkSlotLost(t, code, d.out.String(), "fault_dropped")
	if readSlot(t, conn, "fault_dropped").exists {
		t.Fatal("walhook created a new slot in place of the dropped one")
	}

	// The next start refuses too, and still creates nothing.
	code, out := runWalhook(t, "run", "--config", cfg)
	checkSlotLost(t, code, out, "fault_dropped")
	if readSlot(t, conn, "fault_dropped").exists {
		t.Fatal("walhook created a new slot in place of the dropped one on the next start")
	}
}

// TestFaultSlotInvalidated lets walhook's slot fall more than
// max_slot_wal_keep_size behind while the receiver is down, until the
// checkpointer invalidates it (wal_status = lost): walhook must exit 1
// naming the slot, what happened and how to recover, and leave the slot as
// it is; the next start refuses too.
func TestFaultSlotInvalidated(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgtest.Options{ExtraConf: []string{"max_slot_wal_keep_size = 1MB", "wal_keep_size = 0"}})
	dsn := srv.DSN("postgres")
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	exec1(t, conn, `CREATE TABLE filler (pad text)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "fault_lost", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "fault_lost", d)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	rcv.WaitCount(t, 1, 30*time.Second)

	// Hold the slot back with an undelivered change, then make WAL and
	// checkpoints until the slot is lost.
	rcv.SetFaults(webhooktest.Faults{Down: true})
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	waitUntil(t, 60*time.Second, "the slot to be invalidated", func() bool {
		exec1(t, conn, `INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 500)`)
		exec1(t, conn, `SELECT pg_switch_wal()`)
		exec1(t, conn, `CHECKPOINT`)
		return readSlot(t, conn, "fault_lost").walStatus == "lost"
	})
	code := d.wait(t, 60*time.Second)
	checkSlotLost(t, code, d.out.String(), "fault_lost")
	out := d.out.String()
	if !strings.Contains(out, "invalidated") {
		t.Errorf("walhook's error does not say the slot was invalidated; output:\n%s", out)
	}
	if s := readSlot(t, conn, "fault_lost"); !s.exists || s.walStatus != "lost" {
		t.Fatalf("got slot %+v after walhook exited, want the invalidated slot left as it was", s)
	}

	code, out = runWalhook(t, "run", "--config", cfg)
	checkSlotLost(t, code, out, "fault_lost")
	if !strings.Contains(out, "invalidated (wal_removed): it fell further behind than max_slot_wal_keep_size") {
		t.Errorf("walhook's error on the next start does not say the slot was invalidated, and why; output:\n%s", out)
	}
	if _, out := runWalhook(t, "check", "--config", cfg); !strings.Contains(out, `slot "fault_lost" is invalidated (wal_removed)`) {
		t.Errorf("walhook check does not say the slot was invalidated, and why; output:\n%s", out)
	}
	if s := readSlot(t, conn, "fault_lost"); !s.exists || s.walStatus != "lost" {
		t.Fatalf("got slot %+v after the next start, want the invalidated slot left as it was", s)
	}
}

// TestFaultPublicationDropped drops walhook's publication while it runs
// (PostgreSQL 15): walhook must exit 1 saying that the publication is
// missing, by name, never that the slot is lost nor to drop it, and leave
// the slot as it is. The next start creates the publication, but the
// change written while it was missing still cannot be decoded: walhook
// exits 1 again saying so and how to skip it; done as it says, walhook
// goes on from there.
func TestFaultPublicationDropped(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "fault_nopub", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "fault_nopub", d)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	rcv.WaitCount(t, 1, 30*time.Second)

	exec1(t, conn, `DROP PUBLICATION fault_nopub`)
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	code := d.wait(t, 60*time.Second)
	checkPublicationMissing(t, code, d.out.String(), `publication "fault_nopub" does not exist`, "CREATE PUBLICATION", "publish_via_partition_root = true")
	if s := readSlot(t, conn, "fault_nopub"); !s.exists || s.walStatus == "lost" {
		t.Fatalf("got slot %+v after walhook exited, want it left as it was", s)
	}

	code, out := runWalhook(t, "run", "--config", cfg)
	checkPublicationMissing(t, code, out, `publication "fault_nopub" did not exist when`, "pg_replication_slot_advance")

	// What the error says to do, once the walsender of the walhook that
	// just exited is gone too (PostgreSQL sees the exit a moment later).
	waitUntil(t, 30*time.Second, "the slot released", func() bool { return readSlot(t, conn, "fault_nopub").activePID == 0 })
	exec1(t, conn, `SELECT pg_replication_slot_advance('fault_nopub', pg_current_wal_lsn())`)
	d = startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "fault_nopub", d)
	exec1(t, conn, `INSERT INTO t VALUES (3)`)
	msgs := rcv.WaitFor(t, 30*time.Second, "row 3", func(ms []webhooktest.Message) bool {
		return slices.ContainsFunc(ms, func(m webhooktest.Message) bool { return string(m.Record) == `{"id":3}` })
	})
	for _, m := range msgs {
		if string(m.Record) == `{"id":2}` {
			t.Errorf("got row 2, written while the publication was missing: %s", m.Raw)
		}
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestFaultSlotInUse starts walhook while another process streams from its
// slot: walhook must wait, retrying with backoff and logging the holder's
// PID, and take the slot over once the holder goes away, losing nothing
// committed meanwhile. walhook reaches PostgreSQL through a proxy, which
// sees each of its tries at the slot (a replication connection).
func TestFaultSlotInUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pgtest.Shared()
	dsn := pgtest.NewDatabase(t, srv)
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	exec1(t, conn, `CREATE PUBLICATION fault_inuse FOR ALL TABLES`)
	exec1(t, conn, `SELECT pg_create_logical_replication_slot('fault_inuse', 'pgoutput')`)

	// The holder: a raw replication connection streaming from the slot.
	holder, err := pgconn.Connect(ctx, dsn+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	err = pglogrepl.StartReplication(ctx, holder, "fault_inuse", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'fault_inuse'"},
	})
	if err != nil {
		t.Fatal(err)
	}
	holderPID := int(holder.PID())
	if got := readSlot(t, conn, "fault_inuse").activePID; got != holderPID {
		t.Fatalf("slot held by PID %d, want the holder %d", got, holderPID)
	}

	proxy := startBlackhole(t, fmt.Sprintf("127.0.0.1:%d", srv.Port()))
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), proxy.DSN(t, dsn), "fault_inuse", "", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	replication := func(c proxyConn) bool { return c.Kind == "replication" }
	tries := waitConns(t, proxy, d, "tries at the held slot", connBackoffTries, replication, time.Minute)
	exec1(t, conn, `INSERT INTO t VALUES (1)`) // committed while walhook waits
	if got := readSlot(t, conn, "fault_inuse").activePID; got != holderPID {
		t.Fatalf("slot held by PID %d while walhook waits, want the holder %d", got, holderPID)
	}
	checkConnBackoff(t, "at the held slot", tries)
	// The operator is told why walhook waits and who holds the slot (the
	// message, not the timing, is the contract here).
	out := waitOutput(t, d, fmt.Sprintf("pid=%d", holderPID), 1, 30*time.Second)
	if !strings.Contains(firstLine(out, fmt.Sprintf("pid=%d", holderPID)), "in use by another process") {
		t.Errorf("walhook does not say why it waits; output:\n%s", out)
	}

	holder.Close(ctx)
	waitActive(t, conn, "fault_inuse", holderPID, d, 30*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	waitIDs(t, rcv, "t", []int{1, 2}, 30*time.Second)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestFaultGracefulShutdownUnderLoad stops walhook with SIGTERM while rows
// are committed continuously and deliveries are in flight: first with a
// slow receiver, where the drain delivers what is in flight, then with a
// receiver that never answers in time, where walhook gives up at the
// deadline. Both times walhook must exit 0 within --shutdown-timeout, and
// after a restart every committed row must have arrived.
func TestFaultGracefulShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	const deadline = 2 * time.Second
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "fault_shutdown", "", sinkConf{Name: "s", URL: rcv.URL,
		Extra: "    batch_size: 10\n    max_in_flight: 4\n    timeout: 30s\n"})
	start := func() *daemon {
		d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", deadline.String())
		waitStreaming(t, conn, "fault_shutdown", d)
		return d
	}
	// stop waits deadline + 10 s at most: a bound for a loaded machine,
	// yet shorter than the 30 s a hung request takes to time out, which a
	// walhook that ignored the deadline would wait for, and then retry.
	stop := func(d *daemon) time.Duration {
		t.Helper()
		at := time.Now()
		if code := d.stop(t, syscall.SIGTERM, deadline+10*time.Second); code != 0 {
			t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
		}
		return time.Since(at)
	}

	// A slow receiver: batches are in flight when the signal comes, and
	// the drain delivers them.
	rcv.SetFaults(webhooktest.Faults{Delay: 300 * time.Millisecond})
	d := start()
	w := startInserter(t, dsn, "t", 1, 2*time.Millisecond) // once the slot exists
	rcv.WaitCount(t, 20, 30*time.Second)
	before := len(rcv.Messages())
	took := stop(d)
	drained := len(rcv.Messages()) - before
	t.Logf("slow receiver: stopped in %v, %d messages delivered while draining", took.Round(time.Millisecond), drained)
	if drained == 0 {
		t.Errorf("nothing was delivered after SIGTERM: the batches in flight were not drained")
	}

	// A receiver that does not answer before the deadline: walhook gives
	// up on the drain at the deadline.
	rcv.SetFaults(webhooktest.Faults{Delay: time.Minute})
	requests, _, _, _ := rcv.Stats()
	d = start()
	waitUntil(t, 30*time.Second, "deliveries in flight", func() bool {
		n, _, _, _ := rcv.Stats()
		return n > requests
	})
	took = stop(d)
	t.Logf("hung receiver: stopped in %v", took.Round(time.Millisecond))
	// The drain gets the deadline less a reserve of a tenth: walhook
	// waits that long for the hung deliveries before it gives up.
	if took < deadline-deadline/10 {
		t.Errorf("walhook stopped %v after SIGTERM with deliveries in flight, want it to drain for --shutdown-timeout %v less its reserve", took.Round(time.Millisecond), deadline)
	}

	// Nothing is lost: after a restart with a working receiver, every
	// committed row arrives.
	rcv.SetFaults(webhooktest.Faults{})
	d = start()
	w.Stop()
	ids := committedIDs(t, conn, "t")
	c := waitIDs(t, rcv, "t", ids, 60*time.Second)
	t.Logf("%d rows committed under load across two graceful stops, all delivered, %d redelivered", len(ids), c.duplicates())
	stop(d)
}

// TestFaultSilentServer: a server that accepts connections and then never
// answers (a hung PostgreSQL, or a path blackholed after the handshake) is
// given up on after source.receive_timeout and tried again with backoff,
// at the first start and at a reconnect, like one that refuses: walhook
// must never wait on it forever. Once it answers, walhook streams and
// delivers what was committed meanwhile.
func TestFaultSilentServer(t *testing.T) {
	t.Parallel()
	const receiveTimeout = 5 * time.Second // writeConfig's source.receive_timeout
	srv, conn, proxy := startBehindProxy(t)
	proxy.Silence(true)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), proxy.DSN(t, srv.DSN("postgres")), "fault_hung", "", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	connection := func(c proxyConn) bool { return c.Kind == "startup" || c.Kind == "replication" }
	// tries waits for n more of walhook's connections after the first
	// seen the proxy saw.
	tries := func(seen, n int) {
		t.Helper()
		waitConns(t, proxy, d, "tries at the silent server", seen+n, connection, 4*receiveTimeout+30*time.Second)
	}
	// The first try is silent: a second one comes only if walhook gave up
	// on it.
	tries(0, 2)
	const retrying = `msg="cannot reach PostgreSQL; retrying"`
	if line := firstLine(waitOutput(t, d, retrying, 1, 30*time.Second), retrying); !strings.Contains(line, "timeout") {
		t.Errorf("the retry log line does not say the server did not answer in time: %s", line)
	}
	proxy.Silence(false)
	first := waitActive(t, conn, "fault_hung", 0, d, 60*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	rcv.WaitCount(t, 1, 30*time.Second)

	// Now the stream's connection goes quiet and so does every new one.
	proxy.Silence(true)
	seen := 0
	for _, c := range proxy.Conns() {
		if connection(c) {
			seen++
		}
	}
	proxy.Freeze()
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	tries(seen, 2)
	if !d.running() {
		t.Fatalf("walhook exited instead of trying again; output:\n%s", d.out.String())
	}
	proxy.Silence(false)
	rcv.WaitFor(t, 60*time.Second, "row 2 once the server answers", func(m []webhooktest.Message) bool {
		return len(m) > 0 && string(m[len(m)-1].Record) == `{"id":2}`
	})
	if second := readSlot(t, conn, "fault_hung").activePID; second == first || second == 0 {
		t.Fatalf("slot held by PID %d after the reconnect, want a new walsender (the first was %d)", second, first)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d, want 0", code)
	}
}

// TestFaultSilentConnection: a replication connection that goes silent
// without TCP saying so (a blackholed network) is declared dead after
// source.receive_timeout; walhook reconnects in the same process and what
// was committed meanwhile arrives. The server's wal_sender_timeout frees
// the slot from the dead walsender; walhook waits for that.
func TestFaultSilentConnection(t *testing.T) {
	t.Parallel()
	const receiveTimeout = 5 * time.Second // writeConfig's source.receive_timeout
	srv, conn, proxy := startBehindProxy(t)

	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), proxy.DSN(t, srv.DSN("postgres")), "fault_silent", "", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	first := waitActive(t, conn, "fault_silent", 0, d, 30*time.Second)
	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	rcv.WaitCount(t, 1, 30*time.Second)

	proxy.Freeze()
	frozen := time.Now()
	exec1(t, conn, `INSERT INTO t VALUES (2)`)
	msgs := rcv.WaitFor(t, 60*time.Second, "row 2 over a new connection", func(m []webhooktest.Message) bool {
		return len(m) > 0 && string(m[len(m)-1].Record) == `{"id":2}`
	})
	took := time.Since(frozen)
	if !d.running() {
		t.Fatalf("walhook exited instead of reconnecting; output:\n%s", d.out.String())
	}
	if second := readSlot(t, conn, "fault_silent").activePID; second == first || second == 0 {
		t.Fatalf("slot held by PID %d after the reconnect, want a new walsender (the first was %d)", second, first)
	}
	// Why walhook reconnected, from what the proxy saw: its next
	// replication connection came receive_timeout or more after the
	// silenced one last carried a byte from the server. Only walhook's own
	// timer can end a connection on which nothing arrives; had the freeze
	// let the server's close through, the reconnect would have come about
	// wal_sender_timeout (2 s) after the freeze. Both times lean the safe
	// way (the last byte is stamped before it is passed on, the new
	// connection after it was accepted); the second allowed is for a
	// message cut in two by the freeze.
	var silenced, next *proxyConn
	conns := proxy.Conns()
	for i, c := range conns {
		switch {
		case c.Kind != "replication":
		case c.Accepted.Before(frozen):
			silenced = &conns[i]
		case next == nil:
			next = &conns[i]
		}
	}
	if silenced == nil || next == nil || silenced.LastFromServer.IsZero() {
		t.Fatalf("the proxy saw replication connections %+v around the freeze at %v, want one before it that received data and one after", conns, frozen)
	}
	quiet := next.Accepted.Sub(silenced.LastFromServer)
	if quiet < receiveTimeout-time.Second {
		t.Fatalf("walhook opened a new replication connection %v after the silenced one last received anything, want at least receive_timeout (%v): it did not reconnect for the silence", quiet.Round(time.Millisecond), receiveTimeout)
	}
	t.Logf("silent connection replaced %v after its last byte; row 2 delivered %v after the freeze; %d messages", quiet.Round(time.Millisecond), took.Round(time.Millisecond), len(msgs))
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d, want 0", code)
	}
}
