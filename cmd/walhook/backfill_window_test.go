package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	conn := connect(t, dsn)
	admin := connect(t, dsn)
	var pid int
	if err := conn.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	exec1(t, conn, `SET synchronous_commit = on`)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), sql)
		done <- err
	}()
	waitUntil(t, 10*time.Second, "the commit waits for the standby", func() bool {
		var n int
		_ = admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'`, pid).Scan(&n)
		return n == 1
	})
	return func() {
		exec1(t, admin, `SELECT pg_cancel_backend($1)`, pid)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("the waiting commit: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the waiting commit did not return after its cancel")
		}
	}
}

// replayByPosition rebuilds a sink's rows from the first delivery of each
// idempotency key, per row in position order (commit LSN, index): what a
// receiver that dedupes and orders by position keeps. A record column
// left out and named in unchanged_toast_columns keeps its earlier value.
func replayByPosition(t *testing.T, msgs []webhooktest.Message) map[int]map[string]any {
	t.Helper()
	type at struct {
		lsn pglogrepl.LSN
		idx uint32
		m   webhooktest.Message
	}
	perRow := map[int][]at{}
	for _, m := range firstDeliveries(msgs) {
		lsn, err := pglogrepl.ParseLSN(m.Metadata.CommitLSN)
		if err != nil {
			t.Fatalf("commit_lsn %q: %v", m.Metadata.CommitLSN, err)
		}
		id := rowID(t, m)
		perRow[id] = append(perRow[id], at{lsn, m.Metadata.CommitIdx, m})
	}
	rows := map[int]map[string]any{}
	for id, ms := range perRow {
		slices.SortStableFunc(ms, func(a, b at) int {
			if a.lsn != b.lsn {
				return cmpLSN(a.lsn, b.lsn)
			}
			return int(a.idx) - int(b.idx)
		})
		var row map[string]any
		for _, x := range ms {
			var rec map[string]any
			if err := json.Unmarshal(x.m.Record, &rec); err != nil {
				t.Fatalf("record %s: %v", x.m.Record, err)
			}
			switch x.m.Action {
			case "insert", "read":
				row = rec
			case "update":
				for _, c := range x.m.Metadata.UnchangedToastColumns {
					if v, ok := row[c]; ok {
						rec[c] = v
					}
				}
				row = rec
			case "delete":
				row = nil
			}
		}
		if row != nil {
			rows[id] = row
		}
	}
	return rows
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

// tableAsJSON reads the table's rows as walhook would encode them (via
// to_jsonb: integers and text come out alike), keyed by id; where is a
// condition on the rows, "" for all.
func tableAsJSON(t *testing.T, conn *pgx.Conn, table, where string) map[int]map[string]any {
	t.Helper()
	q := fmt.Sprintf(`SELECT id, to_jsonb(x)::text FROM %s x`, table)
	if where != "" {
		q += " WHERE " + where
	}
	rs, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]map[string]any{}
	var id int
	var js string
	_, err = pgx.ForEachRow(rs, []any{&id, &js}, func() error {
		var row map[string]any
		if err := json.Unmarshal([]byte(js), &row); err != nil {
			return err
		}
		out[id] = row
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffRows describes how got differs from want, in a few lines.
func diffRows(got, want map[int]map[string]any) string {
	var b strings.Builder
	n := 0
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[id]; !ok || fmt.Sprint(g) != fmt.Sprint(want[id]) {
			if n++; n <= 5 {
				fmt.Fprintf(&b, "\n  row %d: got %.120v, want %.120v", id, g, want[id])
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
	waitReplay(t, e.rcv, "the table", tableAsJSON(t, e.conn, "t", ""))
}

// waitReplay waits until replaying what rcv accepted gives want: every
// message of a finished backfill is delivered soon after it is done.
func waitReplay(t *testing.T, rcv *webhooktest.Receiver, what string, want map[int]map[string]any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := diffRows(replayByPosition(t, rcv.Messages()), want)
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replaying the receiver does not give %s:%s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
