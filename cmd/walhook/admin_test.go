package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/testport"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

const testToken = "t0ken-for-the-admin-api"

// freeAddr returns a loopback address nothing listens on, which no other
// test's server takes before walhook binds it (see testport).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// adminGet does a GET on the admin server, with the token unless it is "".
func adminGet(t *testing.T, addr, path, token string) (int, []byte) {
	t.Helper()
	code, body, err := tryAdminGet(addr, path, token)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return code, body
}

// tryAdminGet is adminGet for a server that may not listen yet.
func tryAdminGet(addr, path, token string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body, nil
}

// waitAdminUp waits until a (re)started walhook's admin server answers:
// after a kill -9 the slot may still look streaming to the old process for
// a moment, before the new one listens.
func waitAdminUp(t *testing.T, addr string) {
	t.Helper()
	waitUntil(t, 30*time.Second, "the admin server at "+addr, func() bool {
		_, _, err := tryAdminGet(addr, "/healthz", "")
		return err == nil
	})
}

// metrics scrapes /metrics into "name{labels}" -> value.
func metrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := adminGet(t, addr, "/metrics", "")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestAdminAPIAndMetrics runs walhook with its admin server and checks the
// endpoints, the token rule, and that the metrics move as deliveries,
// failures and lag do.
func TestAdminAPIAndMetrics(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY)`)
	rcv := webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "adm_api", "  tables: [public.t]\n", sinkConf{Name: "s", URL: rcv.URL})
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q\n  token: %q", addr, testToken))
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "adm_api", d)

	if code, _ := adminGet(t, addr, "/healthz", ""); code != 200 {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	waitUntil(t, 30*time.Second, "/readyz answers 200", func() bool { code, _ := adminGet(t, addr, "/readyz", ""); return code == 200 })
	for _, tok := range []string{"", "wrong"} {
		if code, body := adminGet(t, addr, "/api/v1/status", tok); code != 401 || !json.Valid(body) {
			t.Errorf("/api/v1/status with token %q: got %d %s, want 401 with a JSON error", tok, code, body)
		}
	}
	code, body := adminGet(t, addr, "/api/v1/status", testToken)
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil || st.Slot != "adm_api" || !st.Connected || len(st.Sinks) != 1 {
		t.Fatalf("/api/v1/status: got %d %s", code, body)
	}
	if strings.Contains(string(body), testToken) {
		t.Errorf("status shows the token: %s", body)
	}

	// Deliveries move delivered and received.
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(1, 10) i`)
	rcv.WaitCount(t, 10, 30*time.Second)
	waitUntil(t, 10*time.Second, "delivered metric at 10", func() bool {
		m := metrics(t, addr)
		return m[`walhook_messages_delivered_total{sink="s"}`] == 10 && m["walhook_messages_received_total"] == 10
	})
	waitUntil(t, 10*time.Second, "a heartbeat in the metrics", func() bool {
		_, ok := metrics(t, addr)["walhook_last_heartbeat_timestamp_seconds"]
		return ok
	})
	m := metrics(t, addr)
	for _, name := range []string{`walhook_delivery_duration_seconds_count{sink="s"}`, `walhook_delivery_attempts_total{outcome="success",sink="s"}`,
		"walhook_last_heartbeat_timestamp_seconds", "walhook_replication_lag_bytes", `walhook_sink_lag_bytes{sink="s"}`,
		`walhook_sink_lag_seconds{sink="s"}`, `walhook_dead_letters{sink="s"}`, "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// An outage: error attempts count up, the sink lags in bytes and in
	// seconds; after it, the lag falls back.
	rcv.SetFaults(webhooktest.Faults{FailRatio: 1})
	exec1(t, conn, `INSERT INTO t VALUES (11)`)
	waitUntil(t, 30*time.Second, "error attempts, sink lag and a failing state", func() bool {
		m := metrics(t, addr)
		_, body := adminGet(t, addr, "/api/v1/status", testToken)
		var st server.StatusReport
		_ = json.Unmarshal(body, &st)
		return m[`walhook_delivery_attempts_total{outcome="error",sink="s"}`] >= 2 && m[`walhook_sink_lag_bytes{sink="s"}`] > 0 &&
			m[`walhook_sink_lag_seconds{sink="s"}`] > 0 && len(st.Sinks) == 1 && st.Sinks[0].State == "failing" && st.Sinks[0].LastError != ""
	})
	rcv.SetFaults(webhooktest.Faults{})
	rcv.WaitCount(t, 11, 30*time.Second)
	waitUntil(t, 30*time.Second, "sink lag back to 0", func() bool {
		m := metrics(t, addr)
		return m[`walhook_sink_lag_seconds{sink="s"}`] == 0 && m[`walhook_sink_lag_bytes{sink="s"}`] < 1<<20
	})

	// The CLI: status as a table and as JSON.
	if code, out := runWalhook(t, "status", "--config", cfg); code != 0 || !strings.Contains(out, "SINK") || !strings.Contains(out, "adm_api") {
		t.Errorf("walhook status: exit %d:\n%s", code, out)
	}
	if code, out := runWalhook(t, "status", "--json", "--config", cfg); code != 0 || !json.Valid([]byte(out)) {
		t.Errorf("walhook status --json: exit %d:\n%s", code, out)
	}
	if code, out := runWalhook(t, "pause", "--sink", "nope", "--config", cfg); code != 2 {
		t.Errorf("pause of an unknown sink: exit %d, want 2:\n%s", code, out)
	}

	// Pause through the CLI: nothing is delivered while paused; resume
	// delivers everything.
	if code, out := runWalhook(t, "pause", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook pause: exit %d:\n%s", code, out)
	}
	exec1(t, conn, `INSERT INTO t SELECT i FROM generate_series(12, 31) i`)
	waitUntil(t, 30*time.Second, "the paused sink holds the 20 rows written meanwhile", func() bool {
		_, body := adminGet(t, addr, "/api/v1/status", testToken)
		var st server.StatusReport
		return json.Unmarshal(body, &st) == nil && len(st.Sinks) == 1 && st.Sinks[0].Queued == 20
	})
	// An absence can only be watched for a while: unpaused, an idle lane
	// sends at once, well within this.
	time.Sleep(300 * time.Millisecond)
	if n := len(rcv.Messages()); n != 11 {
		t.Fatalf("the receiver got %d messages while the sink was paused, want 11", n)
	}
	_, body = adminGet(t, addr, "/api/v1/status", testToken)
	if !strings.Contains(string(body), `"state":"paused"`) {
		t.Errorf("status of a paused sink: %s", body)
	}
	if code, out := runWalhook(t, "resume", "--sink", "s", "--config", cfg); code != 0 {
		t.Fatalf("walhook resume: exit %d:\n%s", code, out)
	}
	ids := make([]int, 31)
	for i := range ids {
		ids[i] = i + 1
	}
	waitIDs(t, rcv, "t", ids, 30*time.Second)

	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
	// The daemon is gone: status says so in one line and exits 1.
	code, out := runWalhook(t, "status", "--config", cfg)
	if code != 1 || !strings.Contains(out, "not running") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("status without a daemon: exit %d:\n%s", code, out)
	}
}
