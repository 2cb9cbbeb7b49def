package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/admintest"
	"github.com/walhook/walhook/server"
)

// testToken holds "hunter2", which no answer and no error may show.
const testToken = "hunter2-admin-token"

var sinks = []string{"orders", "audit.log"}

// answer is one HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// call sends one real request as walhook's CLI does; token "" sends no
// Authorization header. A request that may change state is sent as JSON,
// {} when body is "".
func call(t *testing.T, addr, method, path, token, body string) answer {
	t.Helper()
	changes := method != http.MethodGet && method != http.MethodHead
	if changes && body == "" {
		body = "{}"
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if changes {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// errorText returns the "error" of a JSON error answer, failing the test if
// the answer is not one.
func errorText(t *testing.T, a answer) string {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var e map[string]any
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("answer %d is not JSON: %v: %s", a.status, err, a.body)
	}
	msg, ok := e["error"].(string)
	if !ok || msg == "" || len(e) != 1 {
		t.Fatalf("answer %d: got %s, want {\"error\": \"...\"}", a.status, a.body)
	}
	return msg
}

// start serves a server with cfg in front of a fresh Fake.
func start(t *testing.T, cfg config.Server) (addr string, fake *admintest.Fake) {
	t.Helper()
	fake = admintest.NewFake(sinks...)
	return admintest.Start(t, server.New(cfg, fake.Options(sinks...))), fake
}

func TestAuth(t *testing.T) {
	addr, fake := start(t, config.Server{Listen: "127.0.0.1:0", Token: testToken})
	tests := []struct {
		name          string
		path          string
		header        string // Authorization; "" sends none
		want          int
		wantChallenge string // WWW-Authenticate
	}{
		{"no token", "/api/v1/status", "", 401, `Bearer realm="walhook"`},
		{"wrong token", "/api/v1/status", "Bearer hunter2-wrong", 401, `Bearer realm="walhook", error="invalid_token"`},
		{"token as a prefix", "/api/v1/status", "Bearer " + testToken + "x", 401, `Bearer realm="walhook", error="invalid_token"`},
		{"prefix of the token", "/api/v1/status", "Bearer " + testToken[:5], 401, `Bearer realm="walhook", error="invalid_token"`},
		{"basic scheme", "/api/v1/status", "Basic " + testToken, 401, `Bearer realm="walhook"`},
		{"scheme alone", "/api/v1/status", "Bearer", 401, `Bearer realm="walhook"`},
		{"unknown path without a token", "/api/v2/anything", "", 401, `Bearer realm="walhook"`},
		{"right token", "/api/v1/status", "Bearer " + testToken, 200, ""},
		{"scheme in lower case", "/api/v1/status", "bearer " + testToken, 200, ""},
		{"unknown path with the token", "/api/v2/anything", "Bearer " + testToken, 404, ""},
		{"health stays open", "/healthz", "", 200, ""},
		{"metrics stay open", "/metrics", "", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+addr+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			a := answer{resp.StatusCode, resp.Header, body}
			if a.status != tt.want {
				t.Fatalf("status: got %d, want %d: %s", a.status, tt.want, a.body)
			}
			if got := a.header.Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate: got %q, want %q", got, tt.wantChallenge)
			}
			if a.status == 401 || a.status == 404 {
				errorText(t, a)
			}
			if strings.Contains(string(a.body), "hunter2") || strings.Contains(fmt.Sprint(a.header), "hunter2") {
				t.Errorf("answer shows a token: %v %s", a.header, a.body)
			}
		})
	}
	// Only the two requests with the right token reached the status.
	if got := fake.Calls(); !reflect.DeepEqual(got, []string{"Status", "Status"}) {
		t.Errorf("calls: got %q, want two Status calls", got)
	}
}

func TestNoTokenOnLoopback(t *testing.T) {
	addr, _ := start(t, config.Server{Listen: "127.0.0.1:0"})
	if a := call(t, addr, "GET", "/api/v1/status", "", ""); a.status != 200 {
		t.Errorf("status without a configured token: got %d, want 200: %s", a.status, a.body)
	}
}

func TestProtectMetrics(t *testing.T) {
	for _, protect := range []bool{false, true} {
		t.Run(fmt.Sprintf("protect_metrics=%v", protect), func(t *testing.T) {
			addr, _ := start(t, config.Server{Listen: "127.0.0.1:0", Token: testToken, ProtectMetrics: protect})
			for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
				want := 200
				if protect {
					want = 401
				}
				a := call(t, addr, "GET", path, "", "")
				if a.status != want {
					t.Errorf("%s without a token: got %d, want %d", path, a.status, want)
				}
				if a.status == 401 {
					errorText(t, a)
				}
				if a := call(t, addr, "GET", path, testToken, ""); a.status != 200 {
					t.Errorf("%s with the token: got %d, want 200", path, a.status)
				}
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	delivered := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "walhook_test_delivered_total",
		Help: "Messages delivered, for the test.",
	}, []string{"sink"})
	reg.MustRegister(delivered)
	delivered.WithLabelValues("orders").Add(42)

	opts := admintest.NewFake().Options()
	opts.Metrics = reg
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, opts))

	a := call(t, addr, "GET", "/metrics", "", "")
	if a.status != 200 {
		t.Fatalf("status: got %d, want 200", a.status)
	}
	body := string(a.body)
	for _, want := range []string{
		"\ngo_goroutines ",
		"\ngo_memstats_alloc_bytes ",
		"\nprocess_cpu_seconds_total ",
		"\nprocess_resident_memory_bytes ",
		"\nwalhook_test_delivered_total{sink=\"orders\"} 42\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}
}

func TestMetricsWithoutGatherer(t *testing.T) {
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, server.Options{}))
	a := call(t, addr, "GET", "/metrics", "", "")
	if a.status != 200 || !strings.Contains(string(a.body), "\ngo_goroutines ") {
		t.Errorf("got %d without go_goroutines, want 200 with the Go metrics:\n%.300s", a.status, a.body)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	fake := admintest.NewFake(sinks...)
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, fake.Options(sinks...)))
	noHealth := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, server.Options{}))

	if a := call(t, addr, "GET", "/healthz", "", ""); a.status != 200 || string(a.body) != "{\"status\":\"ok\"}\n" {
		t.Errorf("healthz: got %d %s, want 200 {\"status\":\"ok\"}", a.status, a.body)
	}
	tests := []struct {
		name       string
		addr       string
		readiness  server.Readiness
		wantStatus int
		want       server.Readiness
	}{
		{"ready", addr, server.Readiness{Ready: true, Role: "active"}, 200, server.Readiness{Ready: true, Role: "active"}},
		{"sink paused by an error", addr,
			server.Readiness{Role: "active", Reason: `sink "orders" is paused: the receiver answered 410 Gone`}, 503,
			server.Readiness{Role: "active", Reason: `sink "orders" is paused: the receiver answered 410 Gone`}},
		{"standby", addr, server.Readiness{Role: "standby", Reason: "standing by: another walhook holds the slot"}, 503,
			server.Readiness{Role: "standby", Reason: "standing by: another walhook holds the slot"}},
		{"not ready without a reason", addr, server.Readiness{Role: "active"}, 503, server.Readiness{Role: "active", Reason: "not ready"}},
		{"no Health", noHealth, server.Readiness{}, 503, server.Readiness{Reason: "readiness is not reported by this walhook"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake.Lock()
			fake.Readiness = tt.readiness
			fake.Unlock()
			a := call(t, tt.addr, "GET", "/readyz", "", "")
			if a.status != tt.wantStatus {
				t.Errorf("status: got %d, want %d", a.status, tt.wantStatus)
			}
			var got server.Readiness
			if err := json.Unmarshal(a.body, &got); err != nil {
				t.Fatalf("body %s: %v", a.body, err)
			}
			if got != tt.want {
				t.Errorf("body: got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// deadLetters are the fake's dead letters of sink orders.
func deadLetters() []server.DeadLetter {
	at := time.Date(2026, 11, 26, 11, 20, 0, 0, time.UTC)
	return []server.DeadLetter{
		{ID: "dl_1", Sink: "orders", Count: 1, First: "0/16B3748:0", Last: "0/16B3748:0", Attempts: 5, LastStatus: 500,
			LastError: "500 Internal Server Error", FirstAttemptAt: at, LastAttemptAt: at.Add(time.Minute),
			Messages: []json.RawMessage{json.RawMessage(`{"action":"insert"}`)}},
		{ID: "dl/2", Sink: "orders", Count: 2, Attempts: 5, FirstAttemptAt: at, LastAttemptAt: at},
	}
}

func TestEndpoints(t *testing.T) {
	tests := []struct {
		method, path, body string
		wantStatus         int
		wantBody           string // JSON the answer must equal (compared as values); "" for no body
		wantCalls          []string
	}{
		{"GET", "/api/v1/status", "", 200,
			`{"ready":true,"role":"active","slot":"walhook","connected":false,"lag_bytes":0,"lag_seconds":0,"reconnects":0,"sinks":[` +
				`{"name":"orders","state":"running","lag_bytes":0,"lag_seconds":0,"queued":0,"in_flight":0,"delivered":0,"delivered_per_sec":0,"failed_attempts":0,"dead_letters":0,"backlog_count":0,"backlog_bytes":0,"filter_errors":0},` +
				`{"name":"audit.log","state":"running","lag_bytes":0,"lag_seconds":0,"queued":0,"in_flight":0,"delivered":0,"delivered_per_sec":0,"failed_attempts":0,"dead_letters":0,"backlog_count":0,"backlog_bytes":0,"filter_errors":0}]}`,
			[]string{"Status"}},
		{"POST", "/api/v1/sinks/orders/pause", "", 200, `{"sink":"orders","paused":true}`, []string{"PauseSink orders"}},
		{"POST", "/api/v1/sinks/audit.log/resume", "", 200, `{"sink":"audit.log","paused":false}`, []string{"ResumeSink audit.log"}},
		{"GET", "/api/v1/sinks/orders/dlq", "", 200,
			`{"sink":"orders","dead_letters":[` +
				`{"id":"dl_1","sink":"orders","count":1,"first":"0/16B3748:0","last":"0/16B3748:0","attempts":5,"last_status":500,"last_error":"500 Internal Server Error","first_attempt_at":"2026-11-26T11:20:00Z","last_attempt_at":"2026-11-26T11:21:00Z"},` +
				`{"id":"dl/2","sink":"orders","count":2,"attempts":5,"last_status":0,"first_attempt_at":"2026-11-26T11:20:00Z","last_attempt_at":"2026-11-26T11:20:00Z"}]}`,
			[]string{"ListDeadLetters orders"}},
		{"GET", "/api/v1/sinks/audit.log/dlq", "", 200, `{"sink":"audit.log","dead_letters":[]}`, []string{"ListDeadLetters audit.log"}},
		{"GET", "/api/v1/sinks/orders/dlq/dl_1", "", 200,
			`{"id":"dl_1","sink":"orders","count":1,"first":"0/16B3748:0","last":"0/16B3748:0","attempts":5,"last_status":500,"last_error":"500 Internal Server Error","first_attempt_at":"2026-11-26T11:20:00Z","last_attempt_at":"2026-11-26T11:21:00Z","messages":[{"action":"insert"}]}`,
			[]string{"DeadLetter orders dl_1"}},
		{"GET", "/api/v1/sinks/orders/dlq/dl%2F2", "", 200,
			`{"id":"dl/2","sink":"orders","count":2,"attempts":5,"last_status":0,"first_attempt_at":"2026-11-26T11:20:00Z","last_attempt_at":"2026-11-26T11:20:00Z"}`,
			[]string{"DeadLetter orders dl/2"}},
		{"GET", "/api/v1/sinks/orders/dlq/dl_9", "", 404, `{"error":"sink \"orders\" has no dead letter \"dl_9\": not found"}`, []string{"DeadLetter orders dl_9"}},
		{"DELETE", "/api/v1/sinks/orders/dlq/dl_1", "", 204, "", []string{"DropDeadLetter orders dl_1"}},
		{"POST", "/api/v1/sinks/orders/dlq/replay", "", 202, `{"sink":"orders","replaying":["dl_1","dl/2"]}`, []string{"ReplayDeadLetters orders"}},
		{"POST", "/api/v1/sinks/orders/dlq/replay", `{"ids":["dl/2"]}`, 202, `{"sink":"orders","replaying":["dl/2"]}`, []string{"ReplayDeadLetters orders dl/2"}},
		{"POST", "/api/v1/sinks/orders/backfills", `{"tables":["orders","\"Sales\".\"Order Items\""],"where":" id > 100 "}`, 202,
			`{"id":"bf_1","sink":"orders","state":"running","where":"id > 100","tables":[` +
				`{"table":"public.orders","rows_done":0,"rows_estimate":0,"done":false},{"table":"Sales.Order Items","rows_done":0,"rows_estimate":0,"done":false}],` +
				`"rows_done":0,"rows_estimate":0,"rows_per_sec":0,"started_at":"2026-11-26T11:20:00Z"}`,
			[]string{`StartBackfill orders "public"."orders" "Sales"."Order Items" where id > 100`}},
		{"POST", "/api/v1/sinks/audit.log/backfills", "", 202,
			`{"id":"bf_1","sink":"audit.log","state":"running","tables":[],"rows_done":0,"rows_estimate":0,"rows_per_sec":0,"started_at":"2026-11-26T11:20:00Z"}`,
			[]string{"StartBackfill audit.log"}},
		{"GET", "/api/v1/backfills", "", 200, `{"backfills":[]}`, []string{"Backfills"}},
		{"DELETE", "/api/v1/backfills/bf_9", "", 404, `{"error":"no backfill \"bf_9\": not found"}`, []string{"CancelBackfill bf_9"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			fake := admintest.NewFake(sinks...)
			fake.Dead["orders"] = deadLetters()
			addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0", Token: testToken}, fake.Options(sinks...)))

			a := call(t, addr, tt.method, tt.path, testToken, tt.body)
			if a.status != tt.wantStatus {
				t.Errorf("status: got %d, want %d: %s", a.status, tt.wantStatus, a.body)
			}
			if tt.wantBody == "" {
				if len(a.body) != 0 {
					t.Errorf("body: got %s, want none", a.body)
				}
			} else {
				assertJSON(t, withoutInstance(t, a.body), tt.wantBody)
			}
			if got := fake.Calls(); !reflect.DeepEqual(got, tt.wantCalls) {
				t.Errorf("calls: got %q, want %q", got, tt.wantCalls)
			}
		})
	}
}

// withoutInstance checks a status's "instance" (this process) and returns
// the body without it; any other body as it is.
func withoutInstance(t *testing.T, body []byte) []byte {
	t.Helper()
	var m map[string]any
	if json.Unmarshal(body, &m) != nil || m["instance"] == nil {
		return body
	}
	inst, _ := m["instance"].(map[string]any)
	host, _ := os.Hostname()
	if inst["pid"] != float64(os.Getpid()) || inst["host"] != host || inst["since"] == nil {
		t.Errorf("instance: got %v, want this process (host %q, pid %d) and since", inst, host, os.Getpid())
	}
	delete(m, "instance")
	out, _ := json.Marshal(m)
	return out
}

// assertJSON compares two JSON documents as values.
func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad test: want is not JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("body:\n got %s\nwant %s", strings.TrimSpace(string(got)), want)
	}
}

func TestStatusChanges(t *testing.T) {
	fake := admintest.NewFake(sinks...)
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, fake.Options(sinks...)))
	call(t, addr, "POST", "/api/v1/sinks/orders/pause", "", "")
	fake.Lock()
	fake.Readiness = server.Readiness{Role: "standby", Reason: "standing by"}
	fake.Unlock()

	var got server.StatusReport
	if err := json.Unmarshal(call(t, addr, "GET", "/api/v1/status", "", "").body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Ready || got.Role != "standby" || got.Reason != "standing by" {
		t.Errorf("readiness in status: got %v %q %q, want false standby \"standing by\"", got.Ready, got.Role, got.Reason)
	}
	if got.Sinks[0].State != "paused" || got.Sinks[1].State != "running" {
		t.Errorf("sink states: got %s, %s; want paused, running", got.Sinks[0].State, got.Sinks[1].State)
	}
	if !fake.Paused("orders") {
		t.Error("orders not paused")
	}
}

func TestBadRequests(t *testing.T) {
	addr, fake := start(t, config.Server{Listen: "127.0.0.1:0"})
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantError                string // substring of the error
		wantAllow                string
	}{
		{"unknown sink", "POST", "/api/v1/sinks/nope/pause", "", 404, `unknown sink "nope"; the configured sinks are orders, audit.log`, ""},
		{"unknown sink for dead letters", "GET", "/api/v1/sinks/nope/dlq/dl_1", "", 404, `unknown sink "nope"`, ""},
		{"unknown sink for backfill", "POST", "/api/v1/sinks/nope/backfills", `{}`, 404, `unknown sink "nope"`, ""},
		{"not JSON", "POST", "/api/v1/sinks/orders/backfills", `orders`, 400, "request body is not valid JSON (at byte 1: invalid character 'o' looking for beginning of value)", ""},
		{"cut short", "POST", "/api/v1/sinks/orders/backfills", `{"tables": ["orders"`, 400, "request body is cut short", ""},
		{"unknown field", "POST", "/api/v1/sinks/orders/backfills", `{"table": ["orders"]}`, 400, `request body has unknown field "table"; send an object such as {"tables": ["public.orders"]`, ""},
		{"wrong type", "POST", "/api/v1/sinks/orders/backfills", `{"tables": "orders"}`, 400, "request body: tables is a JSON string, want an array", ""},
		{"not an object", "POST", "/api/v1/sinks/orders/dlq/replay", `["dl_1"]`, 400, "request body is a JSON array, want an object such as {\"ids\"", ""},
		{"two values", "POST", "/api/v1/sinks/orders/dlq/replay", `{} {}`, 400, "more than one JSON value", ""},
		{"bad table name", "POST", "/api/v1/sinks/orders/backfills", `{"tables": ["a.b.c"]}`, 400, `tables[0]: invalid table name "a.b.c": 3 dotted parts`, ""},
		{"table twice", "POST", "/api/v1/sinks/orders/backfills", `{"tables": ["orders", "public.orders"]}`, 400, "tables[1]: public.orders is listed twice", ""},
		{"empty id", "POST", "/api/v1/sinks/orders/dlq/replay", `{"ids": ["dl_1", ""]}`, 400, "ids[1] is empty", ""},
		{"id twice", "POST", "/api/v1/sinks/orders/dlq/replay", `{"ids": ["dl_1", "dl_1"]}`, 400, `ids[1]: "dl_1" is listed twice`, ""},
		{"unknown route", "GET", "/api/v1/nothing", "", 404, "no such endpoint: GET /api/v1/nothing", ""},
		{"unknown root route", "GET", "/status", "", 404, "no such endpoint: GET /status; the admin API is under /api/v1", ""},
		{"wrong method", "GET", "/api/v1/sinks/orders/pause", "", 405, "GET is not allowed on /api/v1/sinks/orders/pause; use POST", "POST"},
		{"wrong method on a dead letter", "POST", "/api/v1/sinks/orders/dlq/dl_1", "", 405, "use GET or DELETE", "GET, DELETE"},
		{"wrong method on health", "POST", "/healthz", "", 405, "use GET", "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := call(t, addr, tt.method, tt.path, "", tt.body)
			if a.status != tt.wantStatus {
				t.Errorf("status: got %d, want %d: %s", a.status, tt.wantStatus, a.body)
			}
			if msg := errorText(t, a); !strings.Contains(msg, tt.wantError) {
				t.Errorf("error:\n got %s\nwant substring %s", msg, tt.wantError)
			}
			if got := a.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow: got %q, want %q", got, tt.wantAllow)
			}
		})
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Errorf("bad requests reached the interfaces: %q", calls)
	}
}

func TestErrorKinds(t *testing.T) {
	tests := []struct {
		err        error
		wantStatus int
	}{
		{fmt.Errorf("sink %q: %w", "orders", server.ErrNotFound), 404},
		{fmt.Errorf("backfill bf_1 is done: %w", server.ErrConflict), 409},
		{fmt.Errorf("table public.t has no primary key: %w", server.ErrInvalid), 400},
		{fmt.Errorf("%w: this walhook is a standby", server.ErrUnavailable), 503},
		{errors.New("state file: disk full"), 500},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			fake := admintest.NewFake(sinks...)
			fake.Err = tt.err
			addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, fake.Options(sinks...)))
			for _, r := range []struct{ method, path string }{
				{"POST", "/api/v1/sinks/orders/pause"},
				{"GET", "/api/v1/sinks/orders/dlq"},
				{"POST", "/api/v1/sinks/orders/backfills"},
				{"DELETE", "/api/v1/backfills/bf_1"},
			} {
				a := call(t, addr, r.method, r.path, "", "")
				if a.status != tt.wantStatus {
					t.Errorf("%s %s: got %d, want %d", r.method, r.path, a.status, tt.wantStatus)
				}
				if msg := errorText(t, a); !strings.Contains(msg, tt.err.Error()) {
					t.Errorf("%s %s: error %q does not hold %q", r.method, r.path, msg, tt.err)
				}
			}
		})
	}
}

func TestNotImplemented(t *testing.T) {
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, server.Options{SinkNames: sinks}))
	for _, r := range []struct{ method, path, want string }{
		{"GET", "/api/v1/status", "status is not available"},
		{"POST", "/api/v1/sinks/orders/pause", "pausing and resuming sinks is not available"},
		{"POST", "/api/v1/sinks/orders/resume", "pausing and resuming sinks is not available"},
		{"GET", "/api/v1/sinks/orders/dlq", "the dead-letter store is not available"},
		{"GET", "/api/v1/sinks/orders/dlq/dl_1", "the dead-letter store is not available"},
		{"DELETE", "/api/v1/sinks/orders/dlq/dl_1", "the dead-letter store is not available"},
		{"POST", "/api/v1/sinks/orders/dlq/replay", "the dead-letter store is not available"},
		{"POST", "/api/v1/sinks/orders/backfills", "backfill is not available"},
		{"GET", "/api/v1/backfills", "backfill is not available"},
		{"DELETE", "/api/v1/backfills/bf_1", "backfill is not available"},
	} {
		a := call(t, addr, r.method, r.path, "", "")
		if a.status != 501 {
			t.Errorf("%s %s: got %d, want 501", r.method, r.path, a.status)
		}
		if msg := errorText(t, a); !strings.Contains(msg, r.want) {
			t.Errorf("%s %s: got error %q, want %q", r.method, r.path, msg, r.want)
		}
	}
}

func TestRunAddressInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	err = server.New(config.Server{Listen: addr}, server.Options{}).Run(context.Background())
	if err == nil {
		t.Fatalf("Run on a taken address: got nil error, want one")
	}
	for _, want := range []string{addr, "server.listen", "already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestRunOff(t *testing.T) {
	// With the server off, Run returns at once, whatever ctx does.
	if err := server.New(config.Server{}, server.Options{}).Run(context.Background()); err != nil {
		t.Errorf("Run with server.listen \"\": got %v, want nil", err)
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	// Run listens itself; find a port it can have by asking for one from a
	// listener that Run will replace. A failure here would be another
	// process taking the port in between, which Run reports.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(config.Server{Listen: addr}, server.Options{}).Run(ctx) }()

	// Wait until it answers, then stop it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run ended early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer on %s: %v", addr, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: got %v, want nil", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Errorf("%s still accepts connections after Run returned", addr)
	}
}
