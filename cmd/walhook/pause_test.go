package main

// Pauses that last: a pause (by the operator, a 410, or pause_after) is
// kept in the state store and holds across kill -9, restarts and HA
// takeovers until the operator resumes the sink.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// heldCommit returns the commit LSN of row id's first delivery: a slot
// whose confirmed flush passed it, while the row was held, had passed a
// transaction not delivered (PostgreSQL decodes a transaction at its
// commit record, so the slot may pass the row's own WAL, which other
// databases' transactions can follow, but not its commit).
func heldCommit(t *testing.T, rcv *webhooktest.Receiver, id int) pglogrepl.LSN {
	t.Helper()
	for _, m := range rcv.Messages() {
		if m.Metadata.TableName == "t" && rowID(t, m) == id {
			lsn, err := pglogrepl.ParseLSN(m.Metadata.CommitLSN)
			if err != nil {
				t.Fatal(err)
			}
			return lsn
		}
	}
	t.Fatalf("row %d was never delivered", id)
	return 0
}

// checkPaused checks a sink's status as the contract has it: state paused,
// the reason, paused_at in RFC 3339 not after now.
func checkPaused(t *testing.T, s server.SinkStatus, reason string) {
	t.Helper()
	if s.State != "paused" || s.PausedReason != reason || s.PausedAt == nil || s.PausedAt.After(time.Now()) {
		t.Fatalf("sink %s: state %q, paused_reason %q, paused_at %v; want paused, %q and a time", s.Name, s.State, s.PausedReason, s.PausedAt, reason)
	}
}

// TestPauseSurvivesKill: paused through the CLI, walhook is killed (-9)
// and restarted: the sink is still paused (status, metric), gets nothing,
// and the slot does not pass its rows; resumed, it gets everything.
func TestPauseSurvivesKill(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "pause_kill", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "pause_kill", d)
	waitAdminUp(t, addr)
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(1, 5) i`)
	waitIDs(t, rcv, "t", idRange(1, 5), 30*time.Second)

	if code, out := runWalhook(t, "pause", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook pause: exit %d:\n%s", code, out)
	}
	checkPaused(t, sinkStatus(t, addr, "s"), "operator")
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(6, 25) i`)
	waitUntil(t, 30*time.Second, "the paused sink holds the 20 rows", func() bool { return sinkStatus(t, addr, "s").Queued == 20 })
	d.kill(t)

	d = startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "pause_kill", d)
	waitAdminUp(t, addr)
	waitUntil(t, 30*time.Second, "the restarted walhook holds the 20 rows again", func() bool {
		code, body := adminGet(t, addr, "/api/v1/status", testToken)
		return code == http.StatusOK && strings.Contains(string(body), `"queued":20`)
	})
	s := sinkStatus(t, addr, "s")
	checkPaused(t, s, "operator")
	if m := metrics(t, addr); m[`walhook_sink_paused{reason="operator",sink="s"}`] != 1 {
		t.Errorf("walhook_sink_paused after the restart: %v", m)
	}
	if code, out := runWalhook(t, "status", "--config", cfg); code != 0 || !strings.Contains(out, "paused") || !strings.Contains(out, "operator") {
		t.Errorf("walhook status: exit %d, want the sink paused by the operator:\n%s", code, out)
	}
	// An absence can only be watched for a while: unpaused, an idle lane
	// sends at once, well within this.
	time.Sleep(300 * time.Millisecond)
	if n := len(rcv.Messages()); n != 5 {
		t.Fatalf("the receiver got %d messages while the sink was paused, want 5", n)
	}
	confirmed := readSlot(t, conn, "pause_kill").confirmed

	if code, out := runWalhook(t, "resume", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook resume: exit %d:\n%s", code, out)
	}
	waitIDs(t, rcv, "t", idRange(1, 25), 30*time.Second)
	if held := heldCommit(t, rcv, 6); confirmed > held {
		t.Errorf("while the sink was paused the slot confirmed %s, past the commit of its rows (%s)", confirmed, held)
	}
	if s := sinkStatus(t, addr, "s"); s.State == "paused" || s.PausedReason != "" || s.PausedAt != nil {
		t.Errorf("resumed sink: state %q, paused_reason %q, paused_at %v", s.State, s.PausedReason, s.PausedAt)
	}
	// Resumed is stored too: a restart does not pause the sink again.
	d.kill(t)
	d = startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "pause_kill", d)
	waitAdminUp(t, addr)
	exec1(t, conn, `INSERT INTO t VALUES (26)`)
	waitIDs(t, rcv, "t", idRange(1, 26), 30*time.Second)
}

// TestPauseAfter: pause_after: 3s with a receiver answering 500: the sink
// is paused with reason pause_after about 3 s after its first failed
// attempt, and stays paused across a restart; resumed, it delivers.
func TestPauseAfter(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "pause_after", "  tables: [public.t]\n",
		sinkConf{Name: "s", URL: rcv.URL, Retry: "{initial: 100ms, max: 10s}", Extra: "    pause_after: 3s\n"})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "pause_after", d)
	waitAdminUp(t, addr)
	rcv.SetFaults(webhooktest.Faults{FailRatio: 1})
	// No attempt starts before the rows' commit, so walhook's clock starts
	// after this.
	inserting := time.Now()
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(1, 5) i`)
	waitUntil(t, 30*time.Second, "a failed attempt", func() bool { return len(rcv.Requests()) > 0 })
	first := rcv.Requests()[0].Time
	waitUntil(t, 30*time.Second, "the sink's pause recorded", func() bool { return sinkStatus(t, addr, "s").PausedAt != nil })
	s := sinkStatus(t, addr, "s")
	checkPaused(t, s, "pause_after")
	after, early := s.PausedAt.Sub(first), s.PausedAt.Sub(inserting)
	t.Logf("paused %v after the first failed attempt reached the receiver, %v after the insert began",
		after.Round(time.Millisecond), early.Round(time.Millisecond))
	// Not early: walhook's clock starts as the first attempt starts, after
	// the insert began. The receiver's stamp is no bound for that: on a
	// loaded machine it came 101 ms, and once 940 ms, after the attempt
	// began (paused 2.065 s after it, 3.0 s after the attempt's start).
	if early < 3*time.Second-10*time.Millisecond {
		t.Errorf("paused %v after the insert began, before pause_after (3 s) could have passed", early)
	}
	// On time: not long after the failures began.
	if after > 5*time.Second {
		t.Errorf("paused %v after the first failed attempt, want about 3 s", after)
	}
	if m := metrics(t, addr); m[`walhook_sink_paused{reason="pause_after",sink="s"}`] != 1 {
		t.Errorf("walhook_sink_paused: %v", m)
	}
	if code, _ := adminGet(t, addr, "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz of a sink paused by pause_after: %d, want 503", code)
	}

	d.kill(t)
	rcv.SetFaults(webhooktest.Faults{})
	d = startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "pause_after", d)
	waitAdminUp(t, addr)
	waitUntil(t, 30*time.Second, "the restarted walhook reports the sink", func() bool {
		code, body := adminGet(t, addr, "/api/v1/status", testToken)
		return code == http.StatusOK && strings.Contains(string(body), `"name":"s"`)
	})
	checkPaused(t, sinkStatus(t, addr, "s"), "pause_after")
	if code, out := runWalhook(t, "resume", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook resume: exit %d:\n%s", code, out)
	}
	waitIDs(t, rcv, "t", idRange(1, 5), 30*time.Second)
}

// TestGonePausePersists: a 410 Gone pauses the sink with reason gone, and
// the pause outlasts kill -9.
func TestGonePausePersists(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "pause_gone", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "pause_gone", d)
	waitAdminUp(t, addr)
	rcv.SetFaults(webhooktest.Faults{Reject: func([]webhooktest.Message) int { return http.StatusGone }})
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(1, 5) i`)
	waitUntil(t, 30*time.Second, "the sink's pause recorded", func() bool { return sinkStatus(t, addr, "s").PausedAt != nil })
	checkPaused(t, sinkStatus(t, addr, "s"), "gone")
	d.kill(t)
	rcv.SetFaults(webhooktest.Faults{})
	d = startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "pause_gone", d)
	waitAdminUp(t, addr)
	waitUntil(t, 30*time.Second, "the restarted walhook reports the sink", func() bool {
		code, body := adminGet(t, addr, "/api/v1/status", testToken)
		return code == http.StatusOK && strings.Contains(string(body), `"name":"s"`)
	})
	checkPaused(t, sinkStatus(t, addr, "s"), "gone")
	time.Sleep(300 * time.Millisecond)
	if n := len(rcv.Messages()); n != 0 {
		t.Fatalf("the receiver got %d messages while the sink was paused, want 0", n)
	}
	if code, out := runWalhook(t, "resume", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook resume: exit %d:\n%s", code, out)
	}
	waitIDs(t, rcv, "t", idRange(1, 5), 30*time.Second)
}

// TestHAPauseSurvivesTakeover: paused on the active, which is then killed:
// the standby that takes over (sharing state.url) keeps the sink paused
// and delivers nothing; resumed there, it delivers everything.
func TestHAPauseSurvivesTakeover(t *testing.T) {
	t.Parallel()
	dsn, slot := haSetup(t)
	rcv := newHAReceiver(t)
	a := startHA(t, "a", dsn, dsn, slot, rcv.url)
	a.waitRole(t, "active", 90*time.Second)
	b := startHA(t, "b", dsn, dsn, slot, rcv.url)
	b.waitRole(t, "standby", 30*time.Second)
	conn := connect(t, dsn)
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(1, 5) i`)
	waitHAIDs(t, rcv, idRange(1, 5))

	if code, body := a.do(t, "POST", "/api/v1/sinks/s/pause", ""); code != http.StatusOK {
		t.Fatalf("pause on the active: %d %s", code, body)
	}
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(6, 25) i`)
	a.d.kill(t)
	waitUntil(t, 30*time.Second, "b active with the sink paused", func() bool {
		code, body := b.readiness()
		if code == 0 || body["role"] != "active" {
			return false
		}
		st := b.status(t)
		sinks, _ := st["sinks"].([]any)
		return len(sinks) == 1
	})
	st := b.status(t)
	s := st["sinks"].([]any)[0].(map[string]any)
	if s["state"] != "paused" || s["paused_reason"] != "operator" {
		t.Fatalf("the sink on the new active: state %v, paused_reason %v; want paused by the operator", s["state"], s["paused_reason"])
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(s["paused_at"])); err != nil {
		t.Errorf("paused_at %v: %v", s["paused_at"], err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, _, n := rcv.span("b"); n != 0 {
		t.Fatalf("b sent %d requests for a paused sink", n)
	}
	if code, body := b.do(t, "POST", "/api/v1/sinks/s/resume", ""); code != http.StatusOK {
		t.Fatalf("resume on b: %d %s", code, body)
	}
	waitHAIDs(t, rcv, idRange(1, 25))
}
