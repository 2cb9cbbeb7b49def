package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// browserRequest sends what a web page could make a browser send to the
// admin server on addr: method and path with a Host, an Origin and a
// Content-Type ("" leaves each out, Host then being addr).
func browserRequest(t *testing.T, addr, method, path, host, origin, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var e server.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

// sinkState is the state of the only sink in the status.
func sinkState(t *testing.T, addr string) string {
	t.Helper()
	code, body := adminGet(t, addr, "/api/v1/status", "")
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil || len(st.Sinks) != 1 {
		t.Fatalf("/api/v1/status: got %d %s", code, body)
	}
	return st.Sinks[0].State
}

// TestAdminCLIUnderCrossSiteRules: with the default admin server (loopback,
// no token), what a web page could send is refused by the real binary
// (a text/plain POST, a foreign Origin, a foreign Host) and changes
// nothing, while every CLI command that goes through the API still works:
// healthcheck, pause, resume, dlq list, show, replay and drop, backfill.
func TestAdminCLIUnderCrossSiteRules(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	var refuse atomic.Bool
	refuse.Store(true)
	rcv.SetFaults(webhooktest.Faults{Reject: func(batch []webhooktest.Message) int {
		for _, m := range batch {
			if id := rowID(t, m); refuse.Load() && m.Action != "read" && (id == 2 || id == 4) {
				return 422
			}
		}
		return 0
	}})
	cfg := writeConfig(t, t.TempDir(), dsn, "adm_xsite", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL,
		Retry: "{initial: 20ms, max: 100ms, max_attempts: 1}", Extra: "    batch_size: 1\n"})
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q", addr))
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "adm_xsite", d)

	if code, out := runWalhook(t, "healthcheck", "--config", cfg); code != 0 {
		t.Fatalf("walhook healthcheck: exit %d:\n%s", code, out)
	}

	// What a web page could send: refused, and the sink goes on.
	pause := "/api/v1/sinks/s/pause"
	for _, tt := range []struct {
		name, method, path, host, origin, contentType string
		want                                          int
		wantError                                     string
	}{
		{"text/plain POST", "POST", pause, "", "", "text/plain", 415, `needs Content-Type: application/json, not "text/plain"`},
		{"form POST", "POST", "/api/v1/sinks/s/backfills", "", "", "application/x-www-form-urlencoded", 415, "needs Content-Type: application/json"},
		{"body-less POST", "POST", pause, "", "", "", 415, "has no Content-Type"},
		{"foreign Origin", "POST", pause, "", "http://evil.example", "application/json", 403, `Origin "http://evil.example" is not this server's own origin`},
		{"another port of 127.0.0.1", "GET", "/api/v1/sinks/s/dlq", "", "http://127.0.0.1:1", "", 403, "cross-origin request refused"},
		{"rebound name", "GET", "/api/v1/sinks/s/dlq", "evil.example:" + addr[strings.LastIndexByte(addr, ':')+1:], "", "", 421, "is not an address of this server"},
	} {
		if code, msg := browserRequest(t, addr, tt.method, tt.path, tt.host, tt.origin, tt.contentType, "{}"); code != tt.want || !strings.Contains(msg, tt.wantError) {
			t.Errorf("%s: got %d %q, want %d %q", tt.name, code, msg, tt.want, tt.wantError)
		}
	}

	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(1, 3) i`)
	waitIDs(t, rcv, "t", []int{1, 3}, 30*time.Second)
	var list []server.DeadLetter
	waitUntil(t, 30*time.Second, "row 2 a dead letter", func() bool {
		code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg)
		return code == 0 && json.Unmarshal([]byte(out), &list) == nil && len(list) == 1
	})
	if state := sinkState(t, addr); state == "paused" {
		t.Fatalf("the sink is paused after the refused requests")
	}

	// pause and resume.
	if code, out := runWalhook(t, "pause", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook pause: exit %d:\n%s", code, out)
	}
	if state := sinkState(t, addr); state != "paused" {
		t.Fatalf("after walhook pause the sink is %s, want paused", state)
	}
	if code, out := runWalhook(t, "resume", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook resume: exit %d:\n%s", code, out)
	}
	if state := sinkState(t, addr); state == "paused" {
		t.Fatalf("after walhook resume the sink is still paused")
	}

	// dlq show and replay: row 2 arrives, the dead letter goes.
	if code, out := runWalhook(t, "dlq", "show", list[0].ID, "--sink", "s", "--config", cfg); code != 0 || !strings.Contains(strings.Join(strings.Fields(out), ""), `"record":{"id":2}`) {
		t.Fatalf("walhook dlq show: exit %d:\n%s", code, out)
	}
	refuse.Store(false)
	if code, out := runWalhook(t, "dlq", "replay", list[0].ID, "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook dlq replay: exit %d:\n%s", code, out)
	}
	waitIDs(t, rcv, "t", []int{1, 2, 3}, 30*time.Second)
	waitUntil(t, 30*time.Second, "the replayed dead letter removed", func() bool {
		code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg)
		return code == 0 && json.Unmarshal([]byte(out), &list) == nil && len(list) == 0
	})

	// dlq drop: row 4 becomes a dead letter and is dropped.
	refuse.Store(true)
	exec1(t, conn, `INSERT INTO t VALUES (4)`)
	waitUntil(t, 30*time.Second, "row 4 a dead letter", func() bool {
		code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg)
		return code == 0 && json.Unmarshal([]byte(out), &list) == nil && len(list) == 1
	})
	if code, out := runWalhook(t, "dlq", "drop", list[0].ID, "--sink", "s", "--config", cfg); code != 0 || !strings.Contains(out, "dropped 1 dead letters") {
		t.Fatalf("walhook dlq drop: exit %d:\n%s", code, out)
	}
	if code, out := runWalhook(t, "dlq", "list", "--sink", "s", "--json", "--config", cfg); code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 0 {
		t.Fatalf("after dlq drop, dlq list: exit %d:\n%s", code, out)
	}

	// backfill: every row of the table, as reads.
	if code, out := runWalhook(t, "backfill", "--sink", "s", "--wait", "--config", cfg); code != 0 {
		t.Fatalf("walhook backfill --wait: exit %d:\n%s", code, out)
	}
	rcv.WaitFor(t, 30*time.Second, "a read of each of the 4 rows", func(msgs []webhooktest.Message) bool {
		reads := map[int]bool{}
		for _, m := range msgs {
			if m.Action == "read" {
				reads[rowID(t, m)] = true
			}
		}
		return len(reads) == 4
	})
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestReadyzHidesTheReceiversAnswer: a receiver answers 410 Gone with a
// body that echoes the sink's credential and holds row data. The sink
// pauses; /readyz, open to anyone who can reach the admin server, says so
// without the body, and the status (behind the token) masks the
// credential. Resumed, the sink delivers the row.
func TestReadyzHidesTheReceiversAnswer(t *testing.T) {
	t.Parallel()
	const (
		credential = "hdr-cr3dential-410"
		rowData    = "ssn 078-05-1120"
	)
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	var gone atomic.Bool
	gone.Store(true)
	rcv := webhooktest.New(t, "")
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gone.Load() {
			http.Error(w, "endpoint removed; you sent "+r.Header.Get("Authorization")+"; last row: "+rowData, http.StatusGone)
			return
		}
		rcv.ServeHTTP(w, r)
	}))
	defer front.Close()
	cfg := writeConfig(t, t.TempDir(), dsn, "adm_gone", "  tables: [public.t]\n", sinkConf{Name: "s", URL: front.URL,
		Extra: fmt.Sprintf("    headers: {Authorization: %q}\n", "Bearer "+credential)})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "adm_gone", d)
	waitUntil(t, 30*time.Second, "/readyz answers 200", func() bool { code, _ := adminGet(t, addr, "/readyz", ""); return code == 200 })

	exec1(t, conn, `INSERT INTO t VALUES (1)`)
	var ready []byte
	waitUntil(t, 30*time.Second, "/readyz answers 503 for the paused sink", func() bool {
		var code int
		code, ready = adminGet(t, addr, "/readyz", "")
		return code == 503
	})
	var rd server.Readiness
	if err := json.Unmarshal(ready, &rd); err != nil || !strings.Contains(rd.Reason, `sink "s" is paused`) {
		t.Errorf("/readyz: got %s, want the reason to name the paused sink", ready)
	}
	_, status := adminGet(t, addr, "/api/v1/status", testToken)
	_, cliStatus := runWalhook(t, "status", "--config", cfg)
	for what, out := range map[string]string{"/readyz": string(ready), "/api/v1/status": string(status), "walhook status": cliStatus} {
		if strings.Contains(out, credential) {
			t.Errorf("%s shows the sink's credential:\n%s", what, out)
		}
	}
	for _, s := range []string{rowData, "endpoint removed"} {
		if strings.Contains(string(ready), s) {
			t.Errorf("/readyz shows the receiver's answer (%q): %s", s, ready)
		}
	}
	if !strings.Contains(string(status), "[redacted]") {
		t.Errorf("the status never masked the echoed credential; the test did not exercise redaction: %s", status)
	}

	gone.Store(false)
	if code, out := runWalhook(t, "resume", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook resume: exit %d:\n%s", code, out)
	}
	waitIDs(t, rcv, "t", []int{1}, 30*time.Second)
	waitUntil(t, 30*time.Second, "/readyz answers 200 again", func() bool { code, _ := adminGet(t, addr, "/readyz", ""); return code == 200 })
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}
