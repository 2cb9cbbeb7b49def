package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// chromium is the browser the console tests drive (Debian's package
// chromium; make test installs it).
const chromium = "/usr/bin/chromium"

// newBrowser starts a headless Chromium for the test, with the names in
// mapTo127 resolving to 127.0.0.1 (as a rebound DNS name would). Without
// the browser the test is skipped, except in CI, where it fails.
func newBrowser(t *testing.T, mapTo127 ...string) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: make test installs the Debian package chromium", chromium)
		}
		t.Skipf("%s is missing (install the Debian package chromium, or run make test)", chromium)
	}
	rules := make([]string, 0, len(mapTo127))
	for _, name := range mapTo127 {
		rules = append(rules, "MAP "+name+" 127.0.0.1")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("host-resolver-rules", strings.Join(rules, ",")),
		chromedp.WindowSize(1400, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 6*time.Minute) // a bound: a loaded full run needed more than 90 s
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromium, err)
	}
	return ctx
}

// do runs browser steps, failing the test with what was being done.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// text is the text of the first element sel matches.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("browser: text of %s: %v", sel, err)
	}
	return s
}

// waitText waits until the text of sel (as the page's script refreshes
// it, without a reload) is want.
func waitText(t *testing.T, ctx context.Context, sel, want string, timeout time.Duration) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e !== null && e.textContent.trim() === %q; })()`, sel, want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {textContent: "(none)"}).textContent`, sel)))
		t.Fatalf("browser: %s never showed %q (it shows %q): %v", sel, want, got, err)
	}
}

// screenshot saves the whole page as name.png in the test's artifact
// directory (kept with go test -artifacts).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleInBrowser drives the console in headless Chromium against the
// real binary, PostgreSQL and a receiver: log in with the token, see the
// failing sink turn red with its last error, pause and resume it, open its
// dead letter and replay it until it is delivered and gone, start a
// backfill and watch it reach done. A form posted by a page of another
// origin, and a page under a rebound name, change nothing.
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, "evil.test")
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, note text)`)
	exec1(t, conn, `INSERT INTO t SELECT i, 'old' FROM generate_series(1000, 2999) i`)
	exec1(t, conn, `ANALYZE t`) // the backfill's estimate

	var failing atomic.Bool
	failing.Store(true)
	holdReads := make(chan struct{})
	rcv := webhooktest.New(t, "")
	rcv.SetFaults(webhooktest.Faults{Reject: func(batch []webhooktest.Message) int {
		for _, m := range batch {
			if m.Action == "read" {
				select { // the backfill stays running until the test has seen it
				case <-holdReads:
				case <-time.After(20 * time.Second):
				}
			} else if failing.Load() && rowID(t, m) == 1 {
				return 503
			}
		}
		return 0
	}})
	const token = "console-test-token-0123"
	cfg := writeConfig(t, t.TempDir(), dsn, "console_e2e", "  tables: [public.t]\n", sinkConf{Name: "orders", URL: rcv.URL,
		Retry: "{initial: 50ms, max: 200ms, max_attempts: 3}", Secret: "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4",
		Extra: "    batch_size: 1\n    headers: {Authorization: \"Bearer header-credential-987\"}\n"})
	addr := freeAddr(t)
	editConfig(t, cfg, `listen: ""`, fmt.Sprintf("listen: %q\n  token: %q", addr, token))
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "console_e2e", d)
	base := "http://" + addr

	// Log in: the console asks for the token once.
	do(t, ctx, "open the console", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#login")))
	screenshot(t, ctx, "1-login")
	do(t, ctx, "log in",
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), token),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#sinks")))

	// A failing sink turns red, with its last error, without a reload.
	exec1(t, conn, `INSERT INTO t VALUES (1, 'refused')`)
	state := `[data-sink="orders"] [data-f="state"]`
	waitText(t, ctx, state, "failing", 20*time.Second)
	if bg, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`getComputedStyle(document.querySelector(%q)).backgroundColor`, state))); err != nil || bg != "rgb(198, 40, 40)" {
		t.Errorf("the failing state's colour: got %q (%v), want red rgb(198, 40, 40)", bg, err)
	}
	if e := text(t, ctx, `[data-sink="orders"] [data-f="last_error"]`); !strings.Contains(e, "503") {
		t.Errorf("last error: got %q, want the receiver's 503", e)
	}
	screenshot(t, ctx, "2-overview-failing")

	// The batch becomes a dead letter; the receiver mends, and the next
	// row brings the sink back to running.
	waitUntil(t, 20*time.Second, "row 1 a dead letter", func() bool {
		code, body := adminGet(t, addr, "/api/v1/sinks/orders/dlq", token)
		var l server.DeadLetterList
		return code == 200 && json.Unmarshal(body, &l) == nil && len(l.DeadLetters) == 1
	})
	failing.Store(false)
	exec1(t, conn, `INSERT INTO t VALUES (2, 'fine')`)
	waitText(t, ctx, state, "running", 20*time.Second)
	waitText(t, ctx, `[data-sink="orders"] [data-f="dead_letters"]`, "1", 10*time.Second)
	// What the status gained for the overview, from the real binary.
	code, body := adminGet(t, addr, "/api/v1/status", token)
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil || len(st.Sinks) != 1 {
		t.Fatalf("/api/v1/status: got %d %s", code, body)
	}
	if st.Instance == nil || st.Instance.PID != d.cmd.Process.Pid || st.HeartbeatAgeSeconds == nil || *st.HeartbeatAgeSeconds > 10 ||
		st.Sinks[0].Type != "webhook" || st.Sinks[0].DeliveredPerSec <= 0 {
		t.Errorf("status: got instance %+v, heartbeat age %v, sink type %q, delivered/s %v; want walhook's pid, a recent heartbeat, webhook and a rate",
			st.Instance, st.HeartbeatAgeSeconds, st.Sinks[0].Type, st.Sinks[0].DeliveredPerSec)
	}

	// The sink's page: its configuration with secrets masked; pause and
	// resume.
	do(t, ctx, "open the sink", chromedp.Click(chromedp.CSS(`a[href="/console/sinks/orders"]`)), chromedp.WaitVisible(chromedp.CSS("#pause")))
	page, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"c2VjcmV0LXNpZ25pbmcta2V5", "header-credential-987", token} {
		if strings.Contains(page, secret) {
			t.Errorf("the sink page shows a secret (%s)", secret)
		}
	}
	if !strings.Contains(page, "[redacted]") || !strings.Contains(page, "max_attempts") {
		t.Errorf("the sink page does not show the configuration, masked")
	}
	screenshot(t, ctx, "3-sink")
	do(t, ctx, "pause", chromedp.Click(chromedp.CSS("#pause")), chromedp.WaitVisible(chromedp.CSS("#resume")))
	waitText(t, ctx, `h1 [data-f="state"]`, "paused", 5*time.Second)
	if s := sinkStateWithToken(t, addr, token); s != "paused" {
		t.Fatalf("after pause the API says %q", s)
	}
	screenshot(t, ctx, "4-sink-paused")
	do(t, ctx, "resume", chromedp.Click(chromedp.CSS("#resume")), chromedp.WaitVisible(chromedp.CSS("#pause")))
	if s := sinkStateWithToken(t, addr, token); s == "paused" {
		t.Fatalf("after resume the API says %q", s)
	}

	// The dead letter: open it, replay it, confirm; it is delivered and
	// gone.
	do(t, ctx, "open the dead letters", chromedp.Navigate(base+"/console/sinks/orders/dlq"), chromedp.WaitVisible(chromedp.CSS(`[data-dead-letter]`)))
	screenshot(t, ctx, "5-dead-letters")
	do(t, ctx, "open the dead letter", chromedp.Click(chromedp.CSS(`[data-dead-letter] a`)), chromedp.WaitVisible(chromedp.CSS("pre.json")))
	if msg := text(t, ctx, "pre.json"); !strings.Contains(msg, `"note": "refused"`) {
		t.Errorf("the dead letter's message, pretty-printed: got %s", msg)
	}
	screenshot(t, ctx, "6-dead-letter")
	do(t, ctx, "replay it", chromedp.Click(chromedp.CSS("#replay")), chromedp.WaitVisible(chromedp.CSS("#confirm")))
	screenshot(t, ctx, "7-confirm")
	do(t, ctx, "confirm", chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#flash")))
	waitIDs(t, rcv, "t", []int{1, 2}, 20*time.Second)
	waitUntil(t, 20*time.Second, "the dead letter gone", func() bool {
		do(t, ctx, "reload the list", chromedp.Navigate(base+"/console/sinks/orders/dlq"), chromedp.WaitVisible(chromedp.CSS("main p")))
		return strings.HasPrefix(text(t, ctx, "main h1 + p"), "0 dead letters")
	})

	// A backfill: start it from the form, see it running, watch it reach
	// done without a reload.
	do(t, ctx, "open the backfills", chromedp.Navigate(base+"/console/backfills"), chromedp.WaitVisible(chromedp.CSS("#start")),
		chromedp.SetValue(chromedp.CSS(`select[name="sink"]`), "orders"),
		chromedp.SendKeys(chromedp.CSS(`textarea[name="tables"]`), "public.t"),
		chromedp.SendKeys(chromedp.CSS(`input[name="where"]`), "id >= 1000"),
		chromedp.Click(chromedp.CSS("#start")),
		chromedp.WaitVisible(chromedp.CSS("[data-backfill]")))
	bfState := `[data-backfill] [data-f="state"]`
	if s := text(t, ctx, bfState); s != "running" {
		t.Fatalf("the new backfill shows %q, want running", s)
	}
	// reltuples after ANALYZE, scaled by the condition's selectivity: an
	// estimate, about 2,000 (it was 2,001 in one run), shown with its
	// thousands separator.
	est := text(t, ctx, `[data-backfill] [data-f="rows_estimate"]`)
	if n, err := strconv.Atoi(strings.ReplaceAll(est, ",", "")); err != nil || !strings.Contains(est, ",") || n < 1900 || n > 2100 {
		t.Errorf("the backfill's estimate: got %q, want about 2,000 (1,900 to 2,100)", est)
	}
	screenshot(t, ctx, "8-backfill-running")
	close(holdReads)
	// A bound, not a speed: 2,000 reads one a request, signed, take a
	// race-built walhook and receiver 35 s in a loaded run.
	waitText(t, ctx, bfState, "done", 2*time.Minute)
	waitText(t, ctx, `[data-backfill] [data-f="rows_done"]`, "2,000", 5*time.Second)
	if hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector("[data-backfill] form.cancel").hidden`)); err != nil || !hidden {
		t.Errorf("the finished backfill's cancel button: hidden %v (%v), want hidden", hidden, err)
	}
	screenshot(t, ctx, "9-backfill-done")
	do(t, ctx, "open the overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#sinks")))
	screenshot(t, ctx, "10-overview")

	// Another origin's page posts a form to the console: the browser sends
	// no session cookie (SameSite=Strict) and a foreign Origin; refused,
	// the sink runs on.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form id="f" method="post" action="%s/console/sinks/orders/pause"><input name="csrf" value="guess"></form><script>document.getElementById("f").submit()</script>`, base)
	}))
	t.Cleanup(evil.Close)
	do(t, ctx, "visit another origin's page", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("body")))
	waitUntil(t, 10*time.Second, "the cross-site post answered", func() bool {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && strings.HasPrefix(loc, base)
	})
	if body := text(t, ctx, "body"); !strings.Contains(body, "cross-") {
		t.Errorf("the cross-site post: got %q, want a cross-site refusal", body)
	}
	// A page under another name that resolves to the server (DNS
	// rebinding) is its own origin: the session cookie is not its, so it
	// gets the login form, and its own posts are refused.
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	do(t, ctx, "visit the rebound name", chromedp.Navigate("http://evil.test:"+port+"/"), chromedp.WaitVisible(chromedp.CSS("#login")))
	codes, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`Promise.all([
		fetch("/console/sinks/orders/pause", {method: "POST", body: new URLSearchParams({csrf: "guess"})}).then(r => r.status),
		fetch("/api/v1/status").then(r => r.status)])`, chromedp.EvalAwaitPromise))
	if err != nil || len(codes) != 2 || codes[0] != 403 || codes[1] != 401 {
		t.Errorf("the rebound page's pause and status: got %v (%v), want [403 401]", codes, err)
	}
	if s := sinkStateWithToken(t, addr, token); s == "paused" {
		t.Errorf("a cross-site page paused the sink")
	}
}

// sinkStateWithToken is the state of the only sink, as the API says.
func sinkStateWithToken(t *testing.T, addr, token string) string {
	t.Helper()
	code, body := adminGet(t, addr, "/api/v1/status", token)
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil || len(st.Sinks) != 1 {
		t.Fatalf("/api/v1/status: got %d %s", code, body)
	}
	return st.Sinks[0].State
}
