package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// backfillEnv is a walhook with its admin server on a database of its own.
type backfillEnv struct {
	dsn, cfg, addr, slot string
	conn                 *pgx.Conn
	rcv                  *webhooktest.Receiver
	d                    *daemon
}

// startBackfillEnv creates the tables with setup, then runs walhook with
// one sink s (extra: more of its YAML) on source tables source.
func startBackfillEnv(t *testing.T, slot, setup, source, extra string) *backfillEnv {
	t.Helper()
	e := &backfillEnv{dsn: pgtest.NewDatabase(t, pgtest.Shared()), slot: slot}
	e.conn = connect(t, e.dsn)
	exec1(t, e.conn, setup)
	e.rcv = webhooktest.New(t, "")
	e.cfg = writeConfig(t, t.TempDir(), e.dsn, slot, source, sinkConf{Name: "s", URL: e.rcv.URL, Extra: extra})
	e.addr = freeAddr(t)
	editConfig(t, e.cfg, `listen: ""`, fmt.Sprintf("listen: %q", e.addr))
	e.start(t)
	return e
}

func (e *backfillEnv) start(t *testing.T) {
	t.Helper()
	e.d = startWalhook(t, "run", "--config", e.cfg)
	waitStreaming(t, e.conn, e.slot, e.d)
	waitUntil(t, 30*time.Second, "the admin API answers", func() bool {
		code, _ := adminGet(t, e.addr, "/api/v1/backfills", "")
		return code == 200
	})
}

// backfills lists the daemon's backfills.
func (e *backfillEnv) backfills(t *testing.T) []server.Backfill {
	t.Helper()
	code, body := adminGet(t, e.addr, "/api/v1/backfills", "")
	var list server.BackfillList
	if code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("GET /api/v1/backfills: %d %s", code, body)
	}
	return list.Backfills
}

// waitBackfill waits until backfill id is in state want.
func (e *backfillEnv) waitBackfill(t *testing.T, id, want string, timeout time.Duration) server.Backfill {
	t.Helper()
	var got server.Backfill
	waitUntil(t, timeout, "backfill "+id+" "+want, func() bool {
		b, ok := findBackfill(e.backfills(t), id)
		got = b
		return ok && b.State == want
	})
	return got
}

// readMsg is a delivered message with what a backfill adds.
type readMsg struct {
	webhooktest.Message
	BackfillID string
}

func withBackfillID(msgs []webhooktest.Message) []readMsg {
	out := make([]readMsg, len(msgs))
	for i, m := range msgs {
		var md struct {
			Metadata struct {
				BackfillID string `json:"backfill_id"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(m.Raw, &md)
		out[i] = readMsg{m, md.Metadata.BackfillID}
	}
	return out
}

// TestBackfillCLI: walhook backfill --wait sends every existing row once
// as a read with the backfill's ID and a key of its own, and exits 0; the
// status shows it done; the metrics count its rows.
func TestBackfillCLI(t *testing.T) {
	e := startBackfillEnv(t, "bf_cli", `CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, at timestamptz, j jsonb);
		INSERT INTO t SELECT i, 'v' || i, i / 3.0, '2026-01-01'::timestamptz + i * interval '1 s', jsonb_build_object('i', i) FROM generate_series(1, 3000) i;
		ANALYZE t`, "  tables: [public.t]\n", "")
	code, out := runWalhook(t, "backfill", "--sink", "s", "--wait", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "done: 3000 of ~3000 rows") {
		t.Fatalf("backfill --wait: exit %d, output:\n%s", code, out)
	}
	msgs := withBackfillID(e.rcv.WaitCount(t, 3000, 30*time.Second))
	keys := map[string]bool{}
	ids := map[string]bool{}
	for _, m := range msgs {
		if m.Action != "read" || m.BackfillID == "" || !strings.HasPrefix(m.Metadata.IdempotencyKey, m.BackfillID+":") {
			t.Fatalf("got %s", m.Raw)
		}
		keys[m.Metadata.IdempotencyKey] = true
		ids[string(m.Record)] = true
	}
	if len(keys) != 3000 || len(ids) != 3000 {
		t.Errorf("got %d distinct keys and %d distinct records in %d messages, want 3000", len(keys), len(ids), len(msgs))
	}
	// The same value, streamed: same JSON.
	exec1(t, e.conn, `UPDATE t SET v = v WHERE id = 7`)
	upd := e.rcv.WaitFor(t, 30*time.Second, "the update", func(ms []webhooktest.Message) bool { return ms[len(ms)-1].Action == "update" })
	var read7 string
	for _, m := range msgs {
		if strings.HasPrefix(string(m.Record), `{"id":7,`) {
			read7 = string(m.Record)
		}
	}
	if got := string(upd[len(upd)-1].Record); got != read7 {
		t.Errorf("streamed record %s, backfilled %s: want the same JSON", got, read7)
	}

	code, body := adminGet(t, e.addr, "/api/v1/status", "")
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil || len(st.Backfills) != 1 || st.Backfills[0].State != "done" ||
		st.Backfills[0].RowsDone != 3000 || st.Backfills[0].Tables[0].RowsEstimate != 3000 {
		t.Errorf("status: %d %s", code, body)
	}
	code, out = runWalhook(t, "status", "--config", e.cfg)
	if code != 0 || !strings.Contains(out, "public.t") || !strings.Contains(out, "3000") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	if m := metrics(t, e.addr); m[`walhook_backfill_rows_total{sink="s",table="public.t"}`] != 3000 || m["walhook_backfills_running"] != 0 {
		t.Errorf("metrics: rows %v, running %v", m[`walhook_backfill_rows_total{sink="s",table="public.t"}`], m["walhook_backfills_running"])
	}
	e.d.stop(t, syscall.SIGTERM, 30*time.Second)
}
