package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/lease"
)

// onTerminal runs walhook with a pseudo-terminal as its standard input
// and output (script(1)), typing input, and returns its exit code and
// output.
func onTerminal(t *testing.T, input string, args ...string) (int, string) {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) is not installed (Debian's bsdutils)")
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qec", walhookBin+" "+strings.Join(quoted, " "), "/dev/null")
	cmd.Env = append(os.Environ(), "WALHOOK_CONFIG=")
	cmd.Stdin = strings.NewReader(input)
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}

func slotExists(t *testing.T, dsn, slot string) bool {
	t.Helper()
	var n int
	if err := connect(t, dsn).QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestSlotDrop: walhook slot drop asks for --yes off a terminal, refuses
// while a walhook streams from the slot, drops it, and the state forgets
// it: the next run makes a new slot and relays again.
func TestSlotDrop(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	admin := connect(t, dsn)
	exec1(t, admin, "CREATE TABLE t (id int PRIMARY KEY)")
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "dropme", "  tables: [t]\n", sinkConf{Name: "s", URL: rcv.URL})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, admin, "dropme", d)

	code, out := runWalhook(t, "slot", "drop", "--config", cfg)
	if code != 2 || !strings.Contains(out, "standard input is not a terminal; pass --yes") {
		t.Errorf("slot drop without --yes off a terminal: exit code %d, want 2 asking for --yes:\n%s", code, out)
	}
	code, out = runWalhook(t, "slot", "drop", "--yes", "--config", cfg)
	if code != 1 || !strings.Contains(out, `slot "dropme" is in use by the process with PID`) {
		t.Errorf("slot drop while walhook streams: exit code %d, want 1 saying the slot is in use:\n%s", code, out)
	}
	if !slotExists(t, dsn, "dropme") {
		t.Fatal("the slot is gone after a refused drop")
	}
	d.stop(t, syscall.SIGTERM, 30*time.Second)

	// On a terminal it asks; a wrong answer keeps the slot, the slot's name
	// drops it.
	code, out = onTerminal(t, "no\n", "slot", "drop", "--config", cfg)
	if code != 2 || !strings.Contains(out, "Type the slot's name") || !strings.Contains(out, "not confirmed") || !slotExists(t, dsn, "dropme") {
		t.Errorf("slot drop answered no on a terminal: exit code %d, want 2 with the slot kept:\n%s", code, out)
	}
	code, out = onTerminal(t, "dropme\n", "slot", "drop", "--config", cfg)
	if code != 0 || !strings.Contains(out, `dropped slot "dropme"`) {
		t.Fatalf("slot drop confirmed on a terminal: exit code %d, want 0:\n%s", code, out)
	}
	if slotExists(t, dsn, "dropme") {
		t.Fatal("the slot is still there")
	}
	code, out = runWalhook(t, "slot", "drop", "--yes", "--config", cfg)
	if code != 0 || !strings.Contains(out, `slot "dropme" does not exist; the state no longer names it`) {
		t.Errorf("dropping a missing slot: exit code %d, want 0 saying the state forgets it:\n%s", code, out)
	}

	d = startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, admin, "dropme", d)
	exec1(t, admin, "INSERT INTO t VALUES (1)")
	rcv.WaitCount(t, 1, 30*time.Second)
}

// TestSlotDropLease: with state.url, slot drop refuses while another
// walhook holds the slot's lease, naming it.
func TestSlotDropLease(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	admin := connect(t, dsn)
	exec1(t, admin, "CREATE TABLE t (id int PRIMARY KEY)")
	exec1(t, admin, "SELECT pg_create_logical_replication_slot('leased', 'pgoutput')")
	cfg := writeConfig(t, t.TempDir(), dsn, "leased", "  tables: [t]\n", sinkConf{Name: "s", URL: "http://127.0.0.1:1/"})
	useStateURL(t, cfg, dsn)
	// Nobody active: dropped (and the schema walhook made).
	if code, out := runWalhook(t, "slot", "drop", "--yes", "--config", cfg); code != 0 {
		t.Fatalf("slot drop with nobody active: exit code %d, want 0:\n%s", code, out)
	}
	// The lease held as an active walhook holds it.
	exec1(t, admin, "SELECT pg_create_logical_replication_slot('leased', 'pgoutput')")
	c := lease.NewCandidate(dsn, "leased", slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer c.Close()
	l, err := c.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	code, out := runWalhook(t, "slot", "drop", "--yes", "--config", cfg)
	if code != 1 || !strings.Contains(out, "holds the slot's lease") || !strings.Contains(out, "stop it first") {
		t.Errorf("slot drop while the lease is held: exit code %d, want 1 naming the holder:\n%s", code, out)
	}
	if !slotExists(t, dsn, "leased") {
		t.Error("the slot is gone after a refused drop")
	}
}
