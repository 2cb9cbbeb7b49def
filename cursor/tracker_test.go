package cursor

import (
	"context"

	"github.com/walhook/walhook/state/boltstore"
	"math/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
)

func pos(lsn, idx int) change.Position {
	return change.Position{CommitLSN: pglogrepl.LSN(lsn), Idx: uint32(idx)}
}

func TestTrackerContiguousPrefix(t *testing.T) {
	tr := NewTracker(change.Position{}, 10)
	// Transaction at 100 with three changes, ending at 120; transaction at
	// 200 with one change, ending at 220.
	tr.Add(pos(100, 0), 0)
	tr.Add(pos(100, 1), 0)
	tr.Add(pos(100, 2), 0)
	tr.Mark(120)
	tr.Add(pos(200, 0), 0)
	tr.Mark(220)

	steps := []struct {
		ack       change.Position
		wantAcked change.Position
		wantSafe  pglogrepl.LSN
	}{
		{pos(100, 1), change.Position{}, 10}, // out of order: nothing moves
		{pos(200, 0), change.Position{}, 10}, // later transaction first
		{pos(100, 0), pos(100, 1), 10},       // prefix reaches 100:1, transaction still open
		{pos(100, 2), pos(200, 0), 220},      // everything acknowledged
	}
	for i, s := range steps {
		if !tr.Ack(s.ack) {
			t.Fatalf("step %d: Ack(%v) = false, want true", i, s.ack)
		}
		acked, safe, _ := tr.State()
		if acked != s.wantAcked || safe != s.wantSafe {
			t.Fatalf("step %d: got acked %v safe %v, want %v %v", i, acked, safe, s.wantAcked, s.wantSafe)
		}
	}
	if tr.Ack(pos(100, 2)) {
		t.Fatal("second Ack of the same position = true, want false")
	}
	if tr.Ack(pos(300, 0)) {
		t.Fatal("Ack of a position never added = true, want false")
	}
}

func TestTrackerMarkWithNothingPending(t *testing.T) {
	tr := NewTracker(change.Position{}, 10)
	tr.Mark(50)
	if _, safe, _ := tr.State(); safe != 50 {
		t.Fatalf("got safe %v, want 50", safe)
	}
	tr.Mark(40) // never moves back
	if _, safe, _ := tr.State(); safe != 50 {
		t.Fatalf("got safe %v after a lower mark, want 50", safe)
	}
	tr.Add(pos(60, 0), 0)
	tr.Mark(70)
	tr.Mark(90) // idle position while 60:0 is in flight: must wait for it
	if _, safe, pending := tr.State(); safe != 50 || pending != 1 {
		t.Fatalf("got safe %v pending %d, want 50 1", safe, pending)
	}
	tr.Ack(pos(60, 0))
	if _, safe, pending := tr.State(); safe != 90 || pending != 0 {
		t.Fatalf("got safe %v pending %d, want 90 0", safe, pending)
	}
}

// TestTrackerRandomOrder acks many positions in random order and checks
// the invariant at every step: the cursor never passes an unacknowledged
// position, and the safe LSN never passes the end of a transaction with an
// unacknowledged change.
func TestTrackerRandomOrder(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	tr := NewTracker(change.Position{}, 0)
	type tx struct {
		lsn, end, n int
	}
	var txs []tx
	var all []change.Position
	lsn := 1000
	for i := 0; i < 300; i++ {
		n := 1 + rng.Intn(5)
		x := tx{lsn: lsn, end: lsn + 10, n: n}
		for j := 0; j < n; j++ {
			tr.Add(pos(lsn, j), 0)
			all = append(all, pos(lsn, j))
		}
		tr.Mark(pglogrepl.LSN(x.end))
		txs = append(txs, x)
		lsn += 100
	}
	acked := map[change.Position]bool{}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for _, p := range all {
		tr.Ack(p)
		acked[p] = true
		cur, safe, _ := tr.State()
		for _, x := range txs {
			for j := 0; j < x.n; j++ {
				q := pos(x.lsn, j)
				if !acked[q] && !cur.Less(q) {
					t.Fatalf("cursor %v passed unacknowledged %v", cur, q)
				}
				if !acked[q] && safe >= pglogrepl.LSN(x.end) {
					t.Fatalf("safe %v passed the end of transaction %d with unacknowledged %v", safe, x.lsn, q)
				}
			}
		}
	}
	cur, safe, pending := tr.State()
	last := txs[len(txs)-1]
	if cur != pos(last.lsn, last.n-1) || safe != pglogrepl.LSN(last.end) || pending != 0 {
		t.Fatalf("got %v %v %d, want %v %v 0", cur, safe, pending, pos(last.lsn, last.n-1), last.end)
	}
}

func TestStoreRoundTripAndLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "walhook.state")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Cursor{"a": {Acked: pos(100, 3)}, "b": {Acked: pos(200, 0)}}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSlot("walhook"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil {
		t.Fatal("second Open of a held state file succeeded, want ErrLocked")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"] != want["a"] || got["b"] != want["b"] {
		t.Fatalf("got %v, want %v", got, want)
	}
	if slot, _ := s.Slot(); slot != "walhook" {
		t.Fatalf("got slot %q, want walhook", slot)
	}
}

func TestSetFlushIsMinimumOfSinks(t *testing.T) {
	ctx := context.Background()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "walhook.state"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	set, err := NewSet(ctx, s, []string{"a", "b"}, 50)
	if err != nil {
		t.Fatal(err)
	}
	a, b := set.Tracker("a"), set.Tracker("b")
	a.Add(pos(100, 0), 0)
	b.Add(pos(100, 0), 0)
	a.Mark(120)
	b.Mark(120)
	a.Ack(pos(100, 0))
	if err := set.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	if got := set.Flush(); got != 50 {
		t.Fatalf("got flush %v with sink b behind, want 50", got)
	}
	b.Ack(pos(100, 0))
	if got := set.Flush(); got != 50 {
		t.Fatalf("got flush %v before Persist, want 50: flush must follow the disk", got)
	}
	if err := set.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	if got := set.Flush(); got != 120 {
		t.Fatalf("got flush %v, want 120", got)
	}
	loaded, _ := s.Cursors(ctx)
	if loaded["b"].Acked != pos(100, 0) {
		t.Fatalf("got saved %v, want 100:0", loaded["b"].Acked)
	}

	// A floor raises a sink's safe LSN (its backlog holds the rest); a sink
	// added later starts at the current flush; a removed one holds nothing.
	a.Add(pos(200, 0), 0)
	a.Mark(220)
	b.Mark(220)
	set.RaiseFloor("a", 220)
	if err := set.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	if got := set.Flush(); got != 220 {
		t.Fatalf("got flush %v with a's undelivered message under its floor, want 220", got)
	}
	c := set.Add("c", pos(200, 0))
	if _, safe, _ := c.State(); safe != 220 {
		t.Fatalf("a sink added at flush 220 starts safe at %v", safe)
	}
	c.Add(pos(300, 0), 0)
	c.Mark(320)
	a.Mark(320)
	b.Mark(320)
	set.RaiseFloor("a", 320)
	if err := set.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	if got := set.Flush(); got != 220 {
		t.Fatalf("got flush %v with c behind, want 220", got)
	}
	set.Remove("c")
	if err := set.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	if got := set.Flush(); got != 320 {
		t.Fatalf("got flush %v after c was removed, want 320", got)
	}
}

// TestTrackerWindow: a head that is never acknowledged stops the window at
// its message limit however many later messages are acknowledged, and the
// byte limit counts only messages not yet acknowledged.
func TestTrackerWindow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr := NewTracker(change.Position{}, 0)
	tr.Add(pos(100, 0), 10) // the stuck head
	for i := 1; i < 4; i++ {
		if err := tr.Wait(ctx, 4, 1000); err != nil {
			t.Fatalf("message %d: Wait: %v, want room", i, err)
		}
		tr.Add(pos(100, i), 10)
		tr.Ack(pos(100, i))
	}
	if n, b := tr.Window(); n != 4 || b != 10 {
		t.Fatalf("got window %d messages %d bytes, want 4 and 10", n, b)
	}
	full, cancelFull := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelFull()
	if err := tr.Wait(full, 4, 1000); err == nil {
		t.Fatal("Wait with 4 messages behind a stuck head found room, want none")
	}
	waited := make(chan error, 1)
	go func() { waited <- tr.Wait(ctx, 4, 1000) }()
	tr.Ack(pos(100, 0))
	if err := <-waited; err != nil {
		t.Fatalf("Wait after the head's Ack: %v, want room", err)
	}

	// Bytes: one message larger than the limit goes alone, then waits.
	tr = NewTracker(change.Position{}, 0)
	if err := tr.Wait(ctx, 0, 100); err != nil {
		t.Fatal(err)
	}
	tr.Add(pos(200, 0), 500)
	full2, cancelFull2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelFull2()
	if err := tr.Wait(full2, 0, 100); err == nil {
		t.Fatal("Wait with 500 unacknowledged bytes and a limit of 100 found room, want none")
	}
	tr.Ack(pos(200, 0))
	if err := tr.Wait(ctx, 0, 100); err != nil {
		t.Fatalf("Wait once everything is acknowledged: %v", err)
	}
}

// TestDecodeLegacyCursor: a state file written before cursor records had
// a version byte still loads.
func TestDecodeLegacyCursor(t *testing.T) {
	legacy := []byte{0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 1, 0x20}
	c, err := decodeCursor(legacy)
	if err != nil || c.Acked != pos(0x100, 7) {
		t.Fatalf("got %v, %v; want %v", c, err, pos(0x100, 7))
	}
	if back, err := decodeCursor(encodeCursor(c)); err != nil || back != c {
		t.Fatalf("round trip: got %v, %v; want %v", back, err, c)
	}
	if _, err := decodeCursor([]byte{9, 1, 2}); err == nil {
		t.Fatal("a record of an unknown version decoded, want an error")
	}
}

// TestTrackerAckAll: a batch acknowledged at once moves the tracker as the
// same positions acknowledged one by one would, whatever their order, and
// ignores what is not in flight.
func TestTrackerAckAll(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	one, all := NewTracker(change.Position{}, 0), NewTracker(change.Position{}, 0)
	var ps []change.Position
	for lsn := 1000; lsn < 1000+200*100; lsn += 100 {
		for j := 0; j < 1+rng.Intn(4); j++ {
			ps = append(ps, pos(lsn, j))
			one.Add(pos(lsn, j), 10)
			all.Add(pos(lsn, j), 10)
		}
		one.Mark(pglogrepl.LSN(lsn + 10))
		all.Mark(pglogrepl.LSN(lsn + 10))
	}
	// Batches of up to 20 positions: mostly increasing runs (a lane's
	// batch), some shuffled, some with a duplicate or a stranger.
	rest := append([]change.Position{}, ps...)
	rng.Shuffle(len(rest)/20, func(i, j int) {
		for k := 0; k < 20; k++ {
			rest[i*20+k], rest[j*20+k] = rest[j*20+k], rest[i*20+k]
		}
	})
	for len(rest) > 0 {
		n := min(len(rest), 1+rng.Intn(20))
		batch := append([]change.Position{}, rest[:n]...)
		rest = rest[n:]
		if rng.Intn(4) == 0 {
			rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		}
		wantIgnored := 0
		if rng.Intn(5) == 0 {
			batch = append(batch, batch[0], pos(999, 0)) // acknowledged in this batch already; never added
			wantIgnored = 2
		}
		ignored := 0
		for _, p := range batch {
			if !one.Ack(p) {
				ignored++
			}
		}
		if got := all.AckAll(batch); got != ignored || got != wantIgnored {
			t.Fatalf("AckAll(%v) ignored %d, one by one %d, want %d", batch, got, ignored, wantIgnored)
		}
		a1, s1, p1 := one.State()
		a2, s2, p2 := all.State()
		m1, b1 := one.Window()
		m2, b2 := all.Window()
		if a1 != a2 || s1 != s2 || p1 != p2 || m1 != m2 || b1 != b2 {
			t.Fatalf("after %v: AckAll gives %v %v %d %d %d, Ack one by one %v %v %d %d %d", batch, a2, s2, p2, m2, b2, a1, s1, p1, m1, b1)
		}
	}
	if _, _, p := all.State(); p != 0 {
		t.Fatalf("%d positions still pending", p)
	}
}

// TestTrackerWholeTransactions: under WholeTransactions the cursor stops
// before a transaction acknowledged in part, and moves to its last message
// once a mark or another transaction's message says it ended, while the
// window frees as before.
func TestTrackerWholeTransactions(t *testing.T) {
	tr := NewTracker(pos(50, 0), 10)
	tr.WholeTransactions()
	tr.Add(pos(100, 0), 1)
	tr.Add(pos(100, 1), 1)
	tr.AckAll([]change.Position{pos(100, 0), pos(100, 1)})
	if acked, _, _ := tr.State(); acked != pos(50, 0) {
		t.Fatalf("part of 100 acknowledged, its end unknown: got cursor %v, want 50:0", acked)
	}
	if n, _ := tr.Window(); n != 0 {
		t.Fatalf("got window %d, want 0: acknowledged messages leave it", n)
	}
	tr.Add(pos(100, 2), 1) // the transaction goes on
	if acked, _, _ := tr.State(); acked != pos(50, 0) {
		t.Fatalf("100 goes on: got cursor %v, want 50:0", acked)
	}
	tr.Ack(pos(100, 2))
	tr.Mark(120) // it ended
	if acked, safe, _ := tr.State(); acked != pos(100, 2) || safe != 120 {
		t.Fatalf("100 ended: got cursor %v safe %v, want 100:2 120", acked, safe)
	}

	tr.Add(pos(200, 0), 1)
	tr.Add(pos(200, 1), 1)
	tr.Ack(pos(200, 0))
	if acked, _, _ := tr.State(); acked != pos(100, 2) {
		t.Fatalf("200:0 of 200:0-1 acknowledged: got cursor %v, want 100:2", acked)
	}
	tr.Ack(pos(200, 1))
	tr.Add(pos(300, 0), 1) // a message of another transaction: 200 ended
	if acked, _, _ := tr.State(); acked != pos(200, 1) {
		t.Fatalf("300 began: got cursor %v, want 200:1", acked)
	}
	tr.Add(pos(300, 1), 1)
	tr.Add(pos(400, 0), 1)
	tr.AckAll([]change.Position{pos(300, 0), pos(300, 1), pos(400, 0)})
	if acked, _, _ := tr.State(); acked != pos(300, 1) {
		t.Fatalf("300 and 400:0 acknowledged, 400 may go on: got cursor %v, want 300:1", acked)
	}
}
