package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/admintest"
	"github.com/walhook/walhook/server"
)

// browser is an HTTP client that keeps cookies, as a browser does, and
// does not follow redirects, so that a test sees them.
type browser struct {
	t      *testing.T
	addr   string
	client *http.Client
}

func newBrowser(t *testing.T, addr string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, addr: addr, client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// do sends a request with the given headers ("Host" sets the Host) and
// returns the answer.
func (b *browser) do(method, path string, form url.Values, headers ...string) answer {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, "http://"+b.addr+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// page GETs a console page, wanting 200, and returns its HTML.
func (b *browser) page(path string) string {
	b.t.Helper()
	a := b.do("GET", path, nil)
	if a.status != 200 {
		b.t.Fatalf("GET %s: got %d, want 200: %s", path, a.status, a.body)
	}
	return string(a.body)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of a page's forms.
func (b *browser) csrf(html string) string {
	b.t.Helper()
	m := csrfField.FindStringSubmatch(html)
	if m == nil {
		b.t.Fatalf("the page has no CSRF token:\n%s", html)
	}
	return m[1]
}

func TestConsolePages(t *testing.T) {
	fake := admintest.NewFake(sinks...)
	fake.Report.Sinks[0].State, fake.Report.Sinks[0].LastError = "failing", "POST http://receiver/hook: 503 Service Unavailable"
	fake.Report.Sinks[0].Type, fake.Report.Sinks[0].DeliveredPerSec = "webhook", 12.5
	fake.Report.LagBytes = 3 << 20
	hb := time.Now().Add(-4 * time.Second)
	fake.Report.LastHeartbeat = &hb
	fake.Settings = map[string][]server.Setting{"orders": {{Key: "url", Value: "http://receiver/hook"}, {Key: "secrets[0]", Value: "[redacted]"}}}
	for i := range 120 {
		fake.Dead["orders"] = append(fake.Dead["orders"], server.DeadLetter{ID: fmt.Sprintf("dl_%03d", i), Sink: "orders", Count: 1, Attempts: 3, Reason: "max_attempts", LastStatus: 422,
			Messages: []json.RawMessage{json.RawMessage(`{"action":"insert","record":{"id":1,"note":"<script>alert(1)</script>"}}`)}})
	}
	fake.Runs = []server.Backfill{{ID: "bf_1", Sink: "orders", State: "running", RowsDone: 250, RowsEstimate: 1000, RowsPerSec: 50,
		Tables: []server.TableProgress{{Table: "public.orders", RowsDone: 250, RowsEstimate: 1000}}}}
	fake.Report.Backfills = fake.Runs
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, fake.Options(sinks...)))
	b := newBrowser(t, addr)

	a := b.do("GET", "/", nil)
	if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: got %d %s", a.status, a.header.Get("Content-Type"))
	}
	if csp := a.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy: got %q", csp)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		cookie = c
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		t.Errorf("session cookie: got %+v, want HttpOnly, SameSite=Strict, Path=/", cookie)
	}
	home := string(a.body)
	for _, want := range []string{`data-sink="orders"`, `class="state state-failing"`, "503 Service Unavailable", "12.5/s", "3.0 MiB", `data-backfill="bf_1"`,
		`<progress data-f="progress" value="250" max="1000">`, "25%", "15 s" /* ETA: 750 rows at 50/s */, `src="/console/static/console.js"`} {
		if !strings.Contains(home, want) {
			t.Errorf("overview: %q missing", want)
		}
	}

	sink := b.page("/console/sinks/orders")
	for _, want := range []string{"http://receiver/hook", "secrets[0]", "[redacted]", `action="/console/sinks/orders/pause"`} {
		if !strings.Contains(sink, want) {
			t.Errorf("sink page: %q missing", want)
		}
	}
	list := b.page("/console/sinks/orders/dlq?page=3")
	if !strings.Contains(list, "showing 101–120") || !strings.Contains(list, "dl_119") || strings.Contains(list, "dl_099") || !strings.Contains(list, "page 3 of 3") {
		t.Errorf("dead letters, page 3: want 101 to 120 of 120:\n%s", list)
	}
	one := b.page("/console/sinks/orders/dlq/dl_007")
	if !strings.Contains(one, "&#34;note&#34;: &#34;\u0026lt;script\u0026gt;") || strings.Contains(one, "<script>alert") {
		t.Errorf("dead letter page: the message is not pretty-printed and escaped:\n%s", one)
	}
	if css := b.do("GET", "/console/static/style.css", nil); css.status != 200 || !bytes.Contains(css.body, []byte(".state-failing")) {
		t.Errorf("style.css: got %d", css.status)
	}
	if got := b.do("GET", "/console/static/", nil); got.status != 404 {
		t.Errorf("/console/static/: got %d, want 404 (no listing)", got.status)
	}
	if got := b.do("GET", "/console/sinks/nope", nil); got.status != 404 || !strings.Contains(string(got.body), "the configured sinks are orders, audit.log") {
		t.Errorf("unknown sink: got %d %s", got.status, got.body)
	}
}

// TestConsoleLoginAndCSRF: with server.token, the console asks for the
// token once and keeps a session cookie, which the API accepts for GETs
// only; every action needs the session's CSRF token, from the server's
// own origin, and without it nothing is called.
func TestConsoleLoginAndCSRF(t *testing.T) {
	fake := admintest.NewFake(sinks...)
	fake.Dead["orders"] = deadLetters()
	var logs bytes.Buffer
	opts := fake.Options(sinks...)
	opts.Log = slog.New(slog.NewTextHandler(&logs, nil))
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0", Token: testToken}, opts))
	b := newBrowser(t, addr)

	if a := b.do("GET", "/console/sinks/orders", nil); a.status != 303 || a.header.Get("Location") != "/console/login?next=%2Fconsole%2Fsinks%2Forders" {
		t.Fatalf("a page without a session: got %d to %q, want 303 to the login form", a.status, a.header.Get("Location"))
	}
	if a := b.do("GET", "/api/v1/status", nil); a.status != 401 {
		t.Fatalf("the API without a session: got %d, want 401", a.status)
	}
	if a := b.do("POST", "/console/login", url.Values{"token": {"hunter2-wrong"}, "next": {"/console/sinks/orders"}}); a.status != 401 || !strings.Contains(string(a.body), "not this walhook&#39;s token") {
		t.Fatalf("a wrong token: got %d %s", a.status, a.body)
	}
	if a := b.do("POST", "/console/login", url.Values{"token": {testToken}, "next": {"//evil.example/x"}}); a.status != 303 || a.header.Get("Location") != "/" {
		t.Fatalf("login with next on another site: got %d to %q, want 303 to /", a.status, a.header.Get("Location"))
	}
	page := b.page("/console/sinks/orders")
	csrf := b.csrf(page)
	if a := b.do("GET", "/api/v1/status", nil); a.status != 200 {
		t.Fatalf("the API's status with the session cookie: got %d, want 200: %s", a.status, a.body)
	}
	// The cookie does not open the API's state changes: those need the
	// bearer token.
	if a := b.do("POST", "/api/v1/sinks/orders/pause", nil, "Content-Type", "application/json"); a.status != 401 {
		t.Errorf("the API's pause with the session cookie only: got %d, want 401", a.status)
	}

	pause := "/console/sinks/orders/pause"
	for _, tt := range []struct {
		name    string
		form    url.Values
		headers []string
		want    int
	}{
		{"no CSRF token", url.Values{}, nil, 403},
		{"a wrong CSRF token", url.Values{"csrf": {csrf + "x"}}, nil, 403},
		{"a foreign Origin", url.Values{"csrf": {csrf}}, []string{"Origin", "http://evil.example"}, 403},
		{"cross-site", url.Values{"csrf": {csrf}}, []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"another browser's session", url.Values{"csrf": {csrf}}, []string{"Cookie", "walhook_console=forged.value"}, 403},
	} {
		c := b
		if tt.name == "another browser's session" {
			c = newBrowser(t, addr)
		}
		if a := c.do("POST", pause, tt.form, tt.headers...); a.status != tt.want {
			t.Errorf("%s: got %d, want %d: %s", tt.name, a.status, tt.want, a.body)
		}
	}
	if calls := callsOf(fake, "PauseSink"); len(calls) != 0 {
		t.Fatalf("refused posts called %q", calls)
	}
	a := b.do("POST", pause, url.Values{"csrf": {csrf}}, "Origin", "http://"+addr, "Sec-Fetch-Site", "same-origin")
	if a.status != 303 || a.header.Get("Location") != "/console/sinks/orders?done=paused" || !fake.Paused("orders") {
		t.Fatalf("pause with the CSRF token: got %d to %q, paused %v", a.status, a.header.Get("Location"), fake.Paused("orders"))
	}
	if !strings.Contains(b.page("/console/sinks/orders?done=paused"), "The sink is paused") {
		t.Errorf("the sink page after a pause does not say so")
	}

	// Dead letters: the confirmation step changes nothing; the confirmed
	// post does.
	confirm := b.do("POST", "/console/sinks/orders/dlq/confirm", url.Values{"csrf": {csrf}, "action": {"drop"}, "id": {"dl_1"}})
	if confirm.status != 200 || !strings.Contains(string(confirm.body), "Drop 1 dead letter of orders?") || len(callsOf(fake, "DropDeadLetter")) != 0 {
		t.Fatalf("confirm drop: got %d, calls %q: %s", confirm.status, fake.Calls(), confirm.body)
	}
	if a := b.do("POST", "/console/sinks/orders/dlq/drop", url.Values{"csrf": {b.csrf(string(confirm.body))}, "id": {"dl_1"}}); a.status != 303 || a.header.Get("Location") != "/console/sinks/orders/dlq?done=dropped&n=1" {
		t.Fatalf("drop: got %d to %q", a.status, a.header.Get("Location"))
	}
	if a := b.do("POST", "/console/sinks/orders/dlq/replay", url.Values{"csrf": {csrf}, "all": {"1"}}); a.status != 303 || a.header.Get("Location") != "/console/sinks/orders/dlq?done=replayed&n=1" {
		t.Fatalf("replay all: got %d to %q", a.status, a.header.Get("Location"))
	}
	if got, want := callsOf(fake, "DropDeadLetter", "ReplayDeadLetters"), []string{"DropDeadLetter orders dl_1", "ReplayDeadLetters orders"}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls: got %q, want %q", got, want)
	}

	// Backfills: a bad table is shown with the form as it was; a good
	// start is called with the tables parsed.
	bad := b.do("POST", "/console/backfills", url.Values{"csrf": {csrf}, "sink": {"orders"}, "tables": {"a.b.c"}, "where": {"id > 1"}})
	if bad.status != 400 || !strings.Contains(string(bad.body), "write schema.table") || !strings.Contains(string(bad.body), `value="id &gt; 1"`) {
		t.Errorf("a bad table: got %d %s", bad.status, bad.body)
	}
	start := b.do("POST", "/console/backfills", url.Values{"csrf": {csrf}, "sink": {"orders"}, "tables": {"orders\r\n\"Sales\".\"Order, Items\""}, "where": {" id > 1 "}})
	if start.status != 303 || start.header.Get("Location") != "/console/backfills?done=started" {
		t.Fatalf("start a backfill: got %d to %q: %s", start.status, start.header.Get("Location"), start.body)
	}
	if a := b.do("POST", "/console/backfills/bf_1/cancel", url.Values{"csrf": {csrf}}); a.status != 303 {
		t.Errorf("cancel: got %d", a.status)
	}
	if got, want := callsOf(fake, "StartBackfill", "CancelBackfill"), []string{`StartBackfill orders "public"."orders" "Sales"."Order, Items" where id > 1`, "CancelBackfill bf_1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls: got %q, want %q", got, want)
	}

	// Logging out ends the session in this browser.
	if a := b.do("POST", "/console/logout", url.Values{"csrf": {csrf}}); a.status != 303 || a.header.Get("Location") != "/console/login" {
		t.Errorf("logout: got %d to %q", a.status, a.header.Get("Location"))
	}
	if a := b.do("GET", "/", nil); a.status != 303 {
		t.Errorf("a page after logout: got %d, want 303 to the login form", a.status)
	}
	if strings.Contains(logs.String(), "hunter2") {
		t.Errorf("the log holds the token:\n%s", logs.String())
	}
}

// TestConsoleWithoutToken: without server.token the console needs no
// login, but only answers a loopback Host, and its actions still need the
// session's CSRF token.
func TestConsoleWithoutToken(t *testing.T) {
	fake := admintest.NewFake(sinks...)
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, fake.Options(sinks...)))
	b := newBrowser(t, addr)
	csrf := b.csrf(b.page("/console/sinks/orders"))
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	if a := b.do("GET", "/", nil, "Host", "evil.example:"+port); a.status != 421 {
		t.Errorf("a foreign Host: got %d, want 421", a.status)
	}
	if a := b.do("POST", "/console/sinks/orders/pause", url.Values{"csrf": {csrf}}, "Host", "evil.example:"+port); a.status != 421 {
		t.Errorf("a post with a foreign Host: got %d, want 421", a.status)
	}
	if a := b.do("POST", "/console/sinks/orders/pause", url.Values{}); a.status != 403 {
		t.Errorf("a post without the CSRF token: got %d, want 403", a.status)
	}
	if calls := callsOf(fake, "PauseSink"); len(calls) != 0 {
		t.Fatalf("refused posts called %q", calls)
	}
	if a := b.do("POST", "/console/sinks/orders/pause", url.Values{"csrf": {csrf}}); a.status != 303 || !fake.Paused("orders") {
		t.Errorf("a post with the CSRF token: got %d, paused %v", a.status, fake.Paused("orders"))
	}
	if a := b.do("GET", "/console/login", nil); a.status != 303 || a.header.Get("Location") != "/" {
		t.Errorf("the login form without a token: got %d to %q, want 303 to /", a.status, a.header.Get("Location"))
	}
}

// callsOf returns the fake's calls of the named methods, in order.
func callsOf(f *admintest.Fake, methods ...string) []string {
	var out []string
	for _, c := range f.Calls() {
		m, _, _ := strings.Cut(c, " ")
		for _, want := range methods {
			if m == want {
				out = append(out, c)
			}
		}
	}
	return out
}

// TestStatusFilledInByServer: the status carries this process, the
// heartbeat's age and the slot's lag in seconds (the oldest sink's).
func TestStatusFilledInByServer(t *testing.T) {
	fake := admintest.NewFake(sinks...)
	hb := time.Now().Add(-4 * time.Second)
	fake.Report.LastHeartbeat = &hb
	fake.Report.Sinks[0].LagSeconds, fake.Report.Sinks[1].LagSeconds = 3, 7
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, fake.Options(sinks...)))
	a := call(t, addr, "GET", "/api/v1/status", "", "")
	var st server.StatusReport
	if a.status != 200 || json.Unmarshal(a.body, &st) != nil {
		t.Fatalf("status: got %d %s", a.status, a.body)
	}
	if st.HeartbeatAgeSeconds == nil || *st.HeartbeatAgeSeconds < 4 || *st.HeartbeatAgeSeconds > 30 {
		t.Errorf("heartbeat_age_seconds: got %v, want about 4", st.HeartbeatAgeSeconds)
	}
	if st.LagSeconds != 7 {
		t.Errorf("lag_seconds: got %v, want 7 (the largest of the sinks')", st.LagSeconds)
	}
	if st.Instance == nil || st.Instance.PID != os.Getpid() {
		t.Errorf("instance: got %+v, want this process", st.Instance)
	}
}

// TestConsoleForgedSession: a session cookie opens the console only if
// this server signed it: one whose payload was changed (a later expiry)
// with its signature kept, one of the right shape signed by nobody, and
// one that another walhook with the same token signed are all refused, on
// the pages (the login form) and on the API (401), and a post with one
// calls nothing.
func TestConsoleForgedSession(t *testing.T) {
	fake := admintest.NewFake(sinks...)
	cfg := config.Server{Listen: "127.0.0.1:0", Token: testToken}
	addr := admintest.Start(t, server.New(cfg, fake.Options(sinks...)))
	other := admintest.Start(t, server.New(cfg, admintest.NewFake(sinks...).Options(sinks...)))

	login := func(addr string) string {
		t.Helper()
		a := newBrowser(t, addr).do("POST", "/console/login", url.Values{"token": {testToken}, "next": {"/"}})
		for _, c := range (&http.Response{Header: a.header}).Cookies() {
			if c.Name == "walhook_console" && c.Value != "" {
				return c.Value
			}
		}
		t.Fatalf("login to %s: got %d and no session cookie", addr, a.status)
		return ""
	}
	own := login(addr)
	payload, mac, ok := strings.Cut(own, ".")
	if !ok {
		t.Fatalf("session cookie %q is not payload.signature", own)
	}
	p, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	p[0] ^= 0x01 // the expiry, years away
	later := base64.RawURLEncoding.EncodeToString(p) + "." + mac
	unsigned := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, len(p))) + "." + mac

	// The real cookie opens both; that is what makes the refusals below
	// mean something.
	b := newBrowser(t, addr)
	if a := b.do("GET", "/console/sinks/orders", nil, "Cookie", "walhook_console="+own); a.status != 200 {
		t.Fatalf("the page with this server's cookie: got %d, want 200", a.status)
	}
	csrf := b.csrf(string(b.do("GET", "/console/sinks/orders", nil, "Cookie", "walhook_console="+own).body))
	for name, cookie := range map[string]string{
		"payload changed, signature kept": later,
		"signed by nobody":                unsigned,
		"signed by another walhook":       login(other),
	} {
		t.Run(name, func(t *testing.T) {
			b := newBrowser(t, addr)
			if a := b.do("GET", "/console/sinks/orders", nil, "Cookie", "walhook_console="+cookie); a.status != 303 || !strings.HasPrefix(a.header.Get("Location"), "/console/login") {
				t.Errorf("a page: got %d to %q, want 303 to the login form", a.status, a.header.Get("Location"))
			}
			if a := b.do("GET", "/api/v1/status", nil, "Cookie", "walhook_console="+cookie); a.status != 401 {
				t.Errorf("the API's status: got %d, want 401", a.status)
			}
			if a := b.do("POST", "/console/sinks/orders/pause", url.Values{"csrf": {csrf}}, "Cookie", "walhook_console="+cookie); a.status != 403 && a.status != 303 {
				t.Errorf("a pause: got %d, want a refusal", a.status)
			}
			if calls := callsOf(fake, "PauseSink"); len(calls) != 0 {
				t.Errorf("a forged session called %q", calls)
			}
		})
	}
}
