package main

// An active/passive member steps down whatever happens to it: cut off from
// the state database in the middle of a write, frozen and resumed, or cut
// off from its source while the state database answers.

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// cutActiveMidWrite starts a (state through a proxy) and b, lets a deliver,
// and cuts a's state connections at the first statement of a write, so
// that the write waits for an answer that never comes. It returns when the
// cut happened.
func cutActiveMidWrite(t *testing.T) (a, b *haInstance, rcv *haReceiver, proxy *partition, w *inserter, dsn string) {
	t.Helper()
	dsn, slot := haSetup(t)
	proxy = startPartition(t, fmt.Sprintf("127.0.0.1:%d", pgtest.Shared().Port()))
	rcv = newHAReceiver(t)
	a = startHA(t, "a", dsn, replaceHost(t, dsn, proxy.ln.Addr().String()), slot, rcv.url)
	a.waitRole(t, "active", 90*time.Second)
	b = startHA(t, "b", dsn, dsn, slot, rcv.url)
	b.waitRole(t, "standby", 30*time.Second)
	w = startInserter(t, dsn, "t", 1, 2*time.Millisecond)
	waitUntil(t, 20*time.Second, "a delivers", func() bool { _, _, n := rcv.span("a"); return n > 20 })
	proxy.CutInTransaction()
	waitUntil(t, 10*time.Second, "a's next write is cut", func() bool { return !proxy.CutAt().IsZero() })
	return a, b, rcv, proxy, w, dsn
}

// TestHAPartitionMidWrite: the active's state connection goes silent in
// the middle of a write (a cursor save waits for an answer). The write
// fails at the lease's deadline, the active stops delivering and stands by
// again (it does not hang); the standby takes over within 10 s; after the
// partition heals the old active stays a standby.
func TestHAPartitionMidWrite(t *testing.T) {
	t.Parallel()
	a, b, rcv, proxy, w, dsn := cutActiveMidWrite(t)
	cut := proxy.CutAt()
	a.waitRole(t, "standby", 15*time.Second)
	t.Logf("a is a standby again %v after the cut", time.Since(cut).Round(time.Millisecond))
	waitUntil(t, 15*time.Second, "b delivers", func() bool { _, _, n := rcv.span("b"); return n > 0 })
	firstB, _, _ := rcv.span("b")
	t.Logf("takeover: b's first request %v after the cut", firstB.Sub(cut).Round(time.Millisecond))
	if firstB.Sub(cut) > 10*time.Second {
		t.Errorf("b took over %v after the cut, want within 10s", firstB.Sub(cut))
	}
	proxy.Heal()
	// Healed, a reaches the state database again, and finds b holding the
	// lease.
	waitUntil(t, 15*time.Second, "a sees b as the active", func() bool {
		st := a.status(t)
		active, _ := st["active"].(map[string]any)
		return active != nil && int(active["pid"].(float64)) == b.d.cmd.Process.Pid
	})
	a.waitRole(t, "standby", time.Second)
	w.Stop()
	ids := committedIDs(t, connect(t, dsn), "t")
	tally := waitHAIDs(t, rcv, ids)
	_, lastA, nA := rcv.span("a")
	t.Logf("a's last request %v after the cut (%d in all); %d rows, %d duplicates",
		lastA.Sub(cut).Round(time.Millisecond), nA, len(ids), tally.duplicates())
	if !lastA.Before(firstB) {
		t.Errorf("a request of the cut-off instance arrived %v after the standby's first", lastA.Sub(firstB))
	}
}

// TestHASIGTERMInPartition: SIGTERM to an active whose state connection
// went silent in the middle of a write ends the process within 10 s.
func TestHASIGTERMInPartition(t *testing.T) {
	t.Parallel()
	a, _, _, _, _, _ := cutActiveMidWrite(t)
	sent := time.Now()
	if err := a.d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.d.done:
		t.Logf("a exited %v after SIGTERM, exit code %d", time.Since(sent).Round(time.Millisecond), a.d.cmd.ProcessState.ExitCode())
	case <-time.After(10 * time.Second):
		t.Fatalf("a still runs 10s after SIGTERM during the partition")
	}
}

// TestHAFrozenActive: the active is frozen (SIGSTOP) with batches waiting
// for a retry, past the lease's validity; the standby takes over; the old
// one is resumed (SIGCONT). The receiver gets no request from the old
// active after the new one's first: before each attempt a lane asks the
// lease, which counts its validity by the clock.
func TestHAFrozenActive(t *testing.T) {
	t.Parallel()
	dsn, slot := haSetup(t)
	rcv := newHAReceiver(t)
	a := startHA(t, "a", dsn, dsn, slot, rcv.url)
	a.waitRole(t, "active", 90*time.Second)
	b := startHA(t, "b", dsn, dsn, slot, rcv.url)
	b.waitRole(t, "standby", 30*time.Second)
	w := startInserter(t, dsn, "t", 1, 2*time.Millisecond)
	waitUntil(t, 20*time.Second, "a delivers", func() bool { _, _, n := rcv.span("a"); return n > 20 })

	// The receiver fails for a while: a's lanes wait to retry, with timers
	// that all fire at once when it is resumed.
	rcv.rcv.SetFaults(webhooktest.Faults{Down: true})
	_, _, before := rcv.span("a")
	waitUntil(t, 10*time.Second, "a retries", func() bool { _, _, n := rcv.span("a"); return n > before+10 })
	if err := a.d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	t.Cleanup(func() { _ = a.d.cmd.Process.Signal(syscall.SIGCONT) })
	rcv.rcv.SetFaults(webhooktest.Faults{})
	waitUntil(t, 20*time.Second, "b delivers", func() bool { _, _, n := rcv.span("b"); return n > 0 })
	firstB, _, _ := rcv.span("b")
	t.Logf("takeover: b's first request %v after a was frozen", firstB.Sub(frozen).Round(time.Millisecond))
	if err := a.d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	a.waitRole(t, "standby", 15*time.Second)
	w.Stop()
	ids := committedIDs(t, connect(t, dsn), "t")
	waitHAIDs(t, rcv, ids)
	_, lastA, nA := rcv.span("a")
	t.Logf("a's last request %v after it was frozen (%d in all)", lastA.Sub(frozen).Round(time.Millisecond), nA)
	// A lane asks the lease just before it makes a request: a process
	// frozen between the two sends that one request on resume, which only
	// a receiver-side fencing token could stop (docs/design.md). Such a
	// request was made before the freeze (its webhook-timestamp says so);
	// any made after it is a lane that went on without asking.
	for _, r := range rcv.since("a", firstB) {
		if r.made > frozen.Unix() {
			t.Errorf("the resumed old active sent a request made %ds after it was frozen, %v after the new active's first", r.made-frozen.Unix(), r.at.Sub(firstB).Round(time.Millisecond))
		} else {
			t.Logf("the resumed old active sent a request it had made before the freeze, %v after the new active's first: the gap between the lease check and the send", r.at.Sub(firstB).Round(time.Millisecond))
		}
	}
}

// TestHASourceLost: the active loses its source (a silent network in front
// of it) while the state database answers. Once the source has not been
// streamed for source.receive_timeout (5 s here) after the stream gave it
// up (itself after receive_timeout), the active releases the lease and the
// standby, whose source works, takes over; nothing is lost.
func TestHASourceLost(t *testing.T) {
	t.Parallel()
	dsn, slot := haSetup(t)
	proxy := startPartition(t, fmt.Sprintf("127.0.0.1:%d", pgtest.Shared().Port()))
	rcv := newHAReceiver(t)
	a := startHA(t, "a", replaceHost(t, dsn, proxy.ln.Addr().String()), dsn, slot, rcv.url)
	a.waitRole(t, "active", 90*time.Second)
	b := startHA(t, "b", dsn, dsn, slot, rcv.url)
	b.waitRole(t, "standby", 30*time.Second)
	w := startInserter(t, dsn, "t", 1, 2*time.Millisecond)
	waitUntil(t, 20*time.Second, "a delivers", func() bool { _, _, n := rcv.span("a"); return n > 20 })
	cut := time.Now()
	proxy.Cut()
	// receive_timeout to give the stream up, receive_timeout more to give
	// the lease up, then b's poll (1 s) and setup: 10 s for these, since
	// b's setup (ending a's cut-off walsender, connecting) took 3.5 s in a
	// loaded run. An active that did not watch its source would keep the
	// lease for ever.
	const bound = 2*5*time.Second + 10*time.Second
	waitUntil(t, bound+10*time.Second, "b delivers", func() bool { _, _, n := rcv.span("b"); return n > 0 })
	firstB, _, _ := rcv.span("b")
	t.Logf("takeover: b's first request %v after a lost its source", firstB.Sub(cut).Round(time.Millisecond))
	if firstB.Sub(cut) > bound {
		t.Errorf("b took over %v after a lost its source, want within %v", firstB.Sub(cut), bound)
	}
	b.waitRole(t, "active", 10*time.Second)
	a.waitRole(t, "standby", 10*time.Second)
	w.Stop()
	ids := committedIDs(t, connect(t, dsn), "t")
	tally := waitHAIDs(t, rcv, ids)
	t.Logf("%d rows, %d duplicates", len(ids), tally.duplicates())
	checkActive(t, a, b.d.cmd.Process.Pid)
}
