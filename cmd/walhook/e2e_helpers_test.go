package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/rabbittest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// walhookBin is the binary under test, built once by TestMain.
var walhookBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	defer rabbittest.StopLazy()
	// make test's version matrix builds walhook once for every version's
	// run, with the race detector like the suite's own.
	if bin := os.Getenv("WALHOOK_TEST_BIN"); bin != "" {
		walhookBin = bin
		return pgtest.Run(m)
	}
	dir, err := os.MkdirTemp("", "walhook-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	walhookBin = filepath.Join(dir, "walhook")
	build := exec.Command("go", "build", "-race", "-o", walhookBin, ".")
	if os.Getenv("WALHOOK_TEST_NORACE") != "" {
		build = exec.Command("go", "build", "-o", walhookBin, ".")
	}
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build walhook: %v\n%s", err, out)
		return 1
	}
	return pgtest.Run(m)
}

// soak skips a long-running test under -short, for a developer's quick
// run; make test and CI run everything.
func soak(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("a soak of half a minute or more: skipped under -short")
	}
}

// syncBuffer is a bytes.Buffer safe for a process's output and a test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemon is a running walhook process.
type daemon struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	err     error
	started time.Time // just before the process started
}

// startWalhook runs the binary with args; the process is killed when the
// test ends if it still runs, and its output is logged if the test failed.
func startWalhook(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{out: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(walhookBin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.Env = append(os.Environ(), "WALHOOK_CONFIG=")
	d.started = time.Now()
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// The race detector sleeps 1 s at exit by default, which tests
		// of shutdown deadlines would count; it still reports races.
		d.cmd.Env = append(d.cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start walhook: %v", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			if t.Failed() {
				// Where every goroutine waits (the runtime's dump on
				// SIGQUIT): what shows a wedge.
				_ = d.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-d.done:
				case <-time.After(5 * time.Second):
				}
			}
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			log, dump := splitDump(d.out.String())
			if dump != "" {
				t.Logf("walhook %s goroutines at SIGQUIT, grouped, walhook's frames only:\n%s", strings.Join(args, " "), dump)
			}
			t.Logf("walhook %s output:\n%s", strings.Join(args, " "), log)
		}
	})
	return d
}

// splitDump parses the runtime's goroutine dump at the end of out, if
// there is one, into the output before it and the dump in short: one line
// per distinct stack holding a frame of walhook's, with how many
// goroutines share it: the innermost call outside the runtime, then
// walhook's frames. A CI log keeps only part of a
// failure's output; the whole dump of a wedged walhook does not fit in it,
// and its first goroutines are the runtime's own.
func splitDump(out string) (log, dump string) {
	at := strings.Index(out, "SIGQUIT: quit")
	if at < 0 {
		return out, ""
	}
	log = out[:at]
	var order []string
	count := map[string]int{}
	for _, g := range strings.Split(out[at:], "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		state := lines[0]
		if i := strings.Index(state, "["); i >= 0 {
			state = state[i:]
		}
		var frames []string
		ours := false
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "created by ") {
				continue
			}
			fn := l
			if i := strings.LastIndex(fn, "("); i > 0 {
				fn = fn[:i]
			}
			switch {
			case strings.Contains(fn, "walhook/walhook"):
				ours = true
				fn = strings.TrimPrefix(fn, "github.com/walhook/walhook/")
			case len(frames) > 0 || strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/"):
				continue // the innermost call outside the runtime, then walhook's own frames
			}
			frames = append(frames, fn)
		}
		if !ours {
			continue
		}
		sig := state + " " + strings.Join(frames, " < ")
		if count[sig] == 0 {
			order = append(order, sig)
		}
		count[sig]++
	}
	var b strings.Builder
	for _, sig := range order {
		fmt.Fprintf(&b, "%d× %s\n", count[sig], sig)
	}
	return log, b.String()
}

// stop sends sig and waits for the exit code.
func (d *daemon) stop(t *testing.T, sig syscall.Signal, timeout time.Duration) int {
	t.Helper()
	_ = d.cmd.Process.Signal(sig)
	return d.wait(t, timeout)
}

// wait waits for the process to exit and returns its exit code.
func (d *daemon) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("walhook did not exit within %v; output:\n%s", timeout, d.out.String())
	}
	return d.cmd.ProcessState.ExitCode()
}

// runWalhook runs the binary to completion and returns its exit code and
// combined output.
func runWalhook(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, walhookBin, args...)
	cmd.Env = append(os.Environ(), "WALHOOK_CONFIG=")
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}

// sinkConf is the part of a test configuration that varies per sink.
type sinkConf struct {
	Name, URL, Secret string
	Retry             string // the retry schedule; default "{initial: 20ms, max: 200ms}"
	Extra             string // more YAML lines for the sink, indented by four spaces
}

// slotOwners maps the slots of the shared server to the test that named
// them: slots are per cluster, and the tests run in parallel.
var slotOwners sync.Map

// claimSlot fails the test if another test already named slot on the
// shared server, where parallel tests would take each other's slot (a
// server of the test's own is free to reuse names).
func claimSlot(t testing.TB, dsn, slot string) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil || pgtest.Shared() == nil || int(cfg.Port) != pgtest.Shared().Port() {
		return
	}
	test, _, _ := strings.Cut(t.Name(), "/") // subtests run one after another
	if owner, _ := slotOwners.LoadOrStore(slot, test); owner != test {
		t.Fatalf("slot %q is already %s's on the shared server: slots are per cluster and the tests run in parallel; name one of this test's own", slot, owner)
	}
}

// writeConfig writes a configuration for dsn with the given sinks into the
// test's temp dir and returns its path.
func writeConfig(t testing.TB, dir, dsn, slot string, source string, sinks ...sinkConf) string {
	t.Helper()
	claimSlot(t, dsn, slot)
	var b strings.Builder
	fmt.Fprintf(&b, "source:\n  url: %q\n  slot: %s\n  publication: %s\n  heartbeat: 200ms\n  receive_timeout: 5s\n%s", dsn, slot, slot, source)
	fmt.Fprintf(&b, "state:\n  path: %q\n", filepath.Join(dir, "walhook.state"))
	fmt.Fprintf(&b, "server:\n  listen: \"\"\nlog:\n  format: text\n  level: debug\nsinks:\n")
	for _, s := range sinks {
		retry := s.Retry
		if retry == "" {
			retry = "{initial: 20ms, max: 200ms}"
		}
		fmt.Fprintf(&b, "  - name: %s\n    url: %q\n    batch_wait: 5ms\n    retry: %s\n", s.Name, s.URL, retry)
		if s.Secret != "" {
			fmt.Fprintf(&b, "    secret: %q\n", s.Secret)
		}
		b.WriteString(s.Extra)
	}
	path := filepath.Join(dir, "walhook.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec1(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// waitUntil polls cond until it holds or fails the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStreaming waits until walhook holds the slot.
func waitStreaming(t *testing.T, conn *pgx.Conn, slot string, d *daemon) {
	t.Helper()
	logSlotOnFailure(t, conn.Config().ConnString(), slot)
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A walsender that began before d did is a killed predecessor's
		// that PostgreSQL has not noticed yet: d is not streaming (and may
		// not have set up its signal handlers yet).
		if pid := readSlot(t, conn, slot).activePID; pid != 0 && walsenderSince(t, conn, pid, d.started) {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("walhook exited before streaming: %v\n%s", d.err, d.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("walhook did not start streaming within 30s:\n%s", d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func currentLSN(t *testing.T, conn *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// checkSlotHeld keeps WAL moving with write while the receiver fails, and
// samples the slot until the receiver has failed failures times. Then it
// lets the receiver answer and checks that no sample passed the commit of
// message held (0-based, in arrival order), which the receiver refused the
// whole time, and that the slot catches up to the WAL end afterwards.
func checkSlotHeld(t *testing.T, conn *pgx.Conn, rcv *webhooktest.Receiver, slot string, failures int, held int, write func(i int)) {
	t.Helper()
	var samples []pglogrepl.LSN
	waitUntil(t, 30*time.Second, fmt.Sprintf("%d failed deliveries", failures), func() bool {
		write(len(samples))
		samples = append(samples, readSlot(t, conn, slot).confirmed)
		_, n, _, _ := rcv.Stats()
		return n >= failures
	})
	if n := len(rcv.Messages()); n > held {
		t.Fatalf("receiver accepted %d messages while failing, want at most %d", n, held)
	}
	rcv.SetFaults(webhooktest.Faults{})
	msgs := rcv.WaitCount(t, held+1, 30*time.Second)
	commit, err := pglogrepl.ParseLSN(msgs[held].Metadata.CommitLSN)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		if s > commit {
			t.Fatalf("slot confirmed %s while the transaction committed at %s was undelivered", s, commit)
		}
	}
	target := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "the slot catches up to "+target.String(), func() bool {
		return readSlot(t, conn, slot).confirmed >= target
	})
}

// slotsLogged holds, per (test, slot), whether logSlotOnFailure logged it.
var slotsLogged sync.Map

// logSlotOnFailure logs, if the test fails, where the slot and its
// walsender stand against the server's WAL, while the walhook processes
// the test started still run (cleanups run last first): it tells a
// walsender still reading the WAL after a restart from changes lost. A
// test that streams several times logs it once, from the cleanup that runs
// first, before its last walhook is killed.
func logSlotOnFailure(t *testing.T, dsn, slot string) {
	key := fmt.Sprintf("%p/%s", t, slot)
	if _, seen := slotsLogged.LoadOrStore(key, false); !seen {
		t.Cleanup(func() { slotsLogged.Delete(key) }) // runs last: another test may get t's address
	}
	t.Cleanup(func() {
		if !t.Failed() || !slotsLogged.CompareAndSwap(key, false, true) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Logf("slot %s: %v", slot, err)
			return
		}
		defer conn.Close(ctx)
		var row string
		err = conn.QueryRow(ctx, `SELECT format('wal %s; slot restart %s, confirmed %s, active pid %s; walsender sent %s, flush %s, state %s',
			pg_current_wal_lsn(), s.restart_lsn, s.confirmed_flush_lsn, s.active_pid, r.sent_lsn, r.flush_lsn, r.state)
			FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1`, slot).Scan(&row)
		if err != nil {
			t.Logf("slot %s: %v", slot, err)
			return
		}
		t.Logf("slot %s at the failure: %s", slot, row)
	})
}
