package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// sinkStatus returns the named sink's status from the admin API.
func sinkStatus(t *testing.T, addr, name string) server.SinkStatus {
	t.Helper()
	code, body := adminGet(t, addr, "/api/v1/status", testToken)
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("status: %d %s", code, body)
	}
	for _, s := range st.Sinks {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("status has no sink %s: %s", name, body)
	return server.SinkStatus{}
}

// withAdmin turns on the admin server of a test configuration.
func withAdmin(t *testing.T, cfg string) string {
	t.Helper()
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q\n  token: %q", addr, testToken))
	return addr
}

// TestOneSinkDownOthersGoOn: with one sink down, the other gets every row
// while the down sink's messages go to its backlog on disk and the slot
// moves on; walhook is killed meanwhile; once the receiver is back, the
// down sink catches up from its backlog, every row in order per key.
func TestOneSinkDownOthersGoOn(t *testing.T) {
	soak(t)
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v int, pad text)`)
	up, down := webhooktest.New(t, ""), webhooktest.New(t, "")
	down.SetFaults(webhooktest.Faults{Down: true})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "bl_down", "  tables: [public.t]\n",
		sinkConf{Name: "up", URL: up.URL, Extra: "    batch_size: 500\n"},
		sinkConf{Name: "down", URL: down.URL, Extra: "    batch_size: 500\n"})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "bl_down", d)

	// 100k rows of about 200 bytes, then an update of every tenth row: the
	// down sink must deliver each row's insert before its update.
	const rows = 100_000
	for first := 1; first <= rows; first += 10_000 {
		exec1(t, conn, `INSERT INTO t SELECT i, 0, repeat('p', 180) FROM generate_series($1::int, $2::int) i`, first, first+9_999)
	}
	exec1(t, conn, `UPDATE t SET v = 1 WHERE id % 10 = 0`)
	wantMsgs := rows + rows/10
	up.WaitFor(t, 120*time.Second, "every message at the healthy sink", func(m []webhooktest.Message) bool { return len(m) >= wantMsgs })
	peak := procStatusKB(t, d.cmd.Process.Pid, "VmHWM")
	t.Logf("healthy sink got %d messages; peak RSS %d MiB (now anon %d MiB, file %d MiB)", len(up.Messages()), peak>>10,
		procStatusKB(t, d.cmd.Process.Pid, "RssAnon")>>10, procStatusKB(t, d.cmd.Process.Pid, "RssFile")>>10)
	if limit := rssLimitMiB(150); peak > limit<<10 {
		t.Errorf("peak RSS %d MiB, want under %d MiB", peak>>10, limit)
	}
	s := sinkStatus(t, addr, "down")
	if s.BacklogCount == 0 || s.State != "failing" && s.State != "backlogged" {
		t.Fatalf("down sink: %+v, want a backlog", s)
	}
	// The slot moved past rows the down sink never delivered.
	last := up.Messages()[len(up.Messages())-1]
	lastLSN, err := pglogrepl.ParseLSN(last.Metadata.CommitLSN)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the slot past the update the down sink holds in its backlog", func() bool {
		return readSlot(t, conn, "bl_down").confirmed > lastLSN
	})

	// kill -9 while the sink is still down; start again; then it comes back.
	d.kill(t)
	d = startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "bl_down", d)
	exec1(t, conn, `INSERT INTO t VALUES (0, 0, 'after the restart')`)
	up.WaitFor(t, 30*time.Second, "the row written after the restart", func(m []webhooktest.Message) bool {
		return len(m) > 0 && string(m[len(m)-1].Record) != "" && rowID(t, m[len(m)-1]) == 0
	})
	down.SetFaults(webhooktest.Faults{})
	// A bound: a loaded full run had 92% of the backlog delivered after 2 minutes.
	got := down.WaitFor(t, 5*time.Minute, "the down sink catches up", func(m []webhooktest.Message) bool {
		return distinctAtLeast(m, wantMsgs+1)
	})
	checkRowOrder(t, got)
	seen := map[int]int{}
	for _, m := range firstDeliveries(got) {
		seen[rowID(t, m)]++
	}
	var missing []int
	for i := 0; i <= rows; i++ {
		want := 1
		if i > 0 && i%10 == 0 {
			want = 2
		}
		if seen[i] != want {
			missing = append(missing, i)
		}
	}
	sort.Ints(missing)
	if len(missing) > 0 {
		t.Fatalf("%d rows not delivered as often as changed by the recovered sink, e.g. %v", len(missing), missing[:min(10, len(missing))])
	}
	waitUntil(t, 30*time.Second, "the backlog emptied", func() bool { return sinkStatus(t, addr, "down").BacklogCount == 0 })
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestBacklogFullBlocks: when a down sink's backlog reaches max_size with
// when_full: block, walhook stops reading the slot: the slot stops moving
// and the healthy sink waits too; nothing is lost once the sink is back.
func TestBacklogFullBlocks(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, pad text)`)
	up, down := webhooktest.New(t, ""), webhooktest.New(t, "")
	down.SetFaults(webhooktest.Faults{Down: true})
	dir := t.TempDir()
	small := "    window: {messages: 100}\n    backlog: {max_size: 64KiB, when_full: block}\n"
	cfg := writeConfig(t, dir, dsn, "bl_full", "  tables: [public.t]\n",
		sinkConf{Name: "up", URL: up.URL}, sinkConf{Name: "down", URL: down.URL, Extra: small})
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "bl_full", d)

	const rows = 3000
	for i := 1; i <= rows; i += 100 {
		exec1(t, conn, `INSERT INTO t SELECT i, repeat('p', 100) FROM generate_series($1::int, $2::int) i`, i, i+99)
	}
	// The backlog holds about 64 KiB (some 200 messages): the healthy sink
	// gets that far and stops; the slot stops short of the end.
	var got int
	stableSince := time.Now()
	waitUntil(t, 60*time.Second, "the healthy sink to stop", func() bool {
		if n := len(up.Messages()); n != got {
			got, stableSince = n, time.Now()
		}
		return got > 0 && time.Since(stableSince) > 2*time.Second
	})
	if got >= rows {
		t.Fatalf("the healthy sink got all %d rows while the other sink's backlog was full, want walhook to stop reading", got)
	}
	end := currentLSN(t, conn)
	if c := readSlot(t, conn, "bl_full").confirmed; c >= end {
		t.Fatalf("slot confirmed %s, the WAL end, while the down sink's backlog was full", c)
	}
	t.Logf("the healthy sink stopped at %d of %d rows", got, rows)
	down.SetFaults(webhooktest.Faults{})
	ids := make([]int, rows)
	for i := range ids {
		ids[i] = i + 1
	}
	waitIDs(t, up, "t", ids, 60*time.Second)
	waitIDs(t, down, "t", ids, 60*time.Second)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// rssLimitMiB scales a memory bound for the binary under test: the race
// detector multiplies what a process holds (its shadow memory; Go's
// documentation says 5 to 10 times), so a race build gets four times the
// bound. WALHOOK_TEST_NORACE=1 checks the plain build against the bound
// itself (83 MiB for TestOneSinkDownOthersGoOn on the development machine).
func rssLimitMiB(plain int64) int64 {
	if os.Getenv("WALHOOK_TEST_NORACE") != "" {
		return plain
	}
	return 4 * plain
}
