package statetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
)

// The crash cases. A child process (the test binary again) opens the store
// and writes in a loop from several goroutines: each of three sinks appends
// transactions of 1 to 23 entries, trims and moves its oldest transaction to
// the dead letters, while another goroutine saves all cursors every
// millisecond. After each write returns, the child reports it over a pipe.
// The parent SIGKILLs the child at a random moment, reopens the store and
// checks that every reported write is there whole, that nothing is there in
// part, and that nothing is there that was not attempted.

const crashEnv = "STATETEST_CRASH_LOC"

var crashSinks = []string{"a", "b", "c"}

const crashSlot = "crash_slot"

func childLoc() string { return os.Getenv(crashEnv) }

// InChild reports whether this process is a crash case's child. A
// TestMain that sets up something the child does not need (a database
// server: the child reaches the parent's through the location it is given)
// can skip it.
func InChild() bool { return childLoc() != "" }

// txLen is how many entries the child's transaction lsn of sink i has.
func txLen(i int, lsn uint64) int { return 1 + int((lsn*7+uint64(i)*3)%23) }

func crashChild(t *testing.T, h Harness, loc string) {
	reports := os.NewFile(3, "reports")
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintf(reports, format+"\n", args...); err != nil {
			os.Exit(0) // the parent is gone
		}
	}
	s, err := h.Open(t, loc)
	if err != nil {
		report("E open: %v", err)
		return
	}
	ctx := context.Background()
	if err := s.SetSlot(ctx, crashSlot); err != nil {
		report("E set slot: %v", err)
		return
	}
	report("S")
	for i, sink := range crashSinks {
		go func() {
			b := s.Backlog(sink)
			for lsn := uint64(1); ; lsn++ {
				if err := b.Append(ctx, batch(sink, lsn, txLen(i, lsn))); err != nil {
					report("E %s: append %d: %v", sink, lsn, err)
					return
				}
				report("A %s %d", sink, lsn)
				if lsn%4 == 0 {
					report("t %s %d", sink, lsn-3)
					if err := b.Trim(ctx, pos(lsn-3, 1<<32-1)); err != nil {
						report("E %s: trim: %v", sink, err)
						return
					}
					report("T %s %d", sink, lsn-3)
				}
				if lsn%6 == 0 {
					oldest, err := b.Read(ctx, change.Position{}, 1, 0)
					if err != nil || len(oldest) != 1 || oldest[0].Msg.Pos.Idx != 0 {
						report("E %s: oldest entry %v, %v: want the start of a transaction", sink, oldest, err)
						return
					}
					olsn := uint64(oldest[0].Msg.Pos.CommitLSN)
					d, err := b.MoveToDeadLetters(ctx, txLen(i, olsn), 0, state.DeadLetter{Reason: state.ReasonBacklogFull, Attempts: int(olsn)})
					if err != nil || len(d.Entries) != txLen(i, olsn) {
						report("E %s: move %d: %d entries, %v", sink, olsn, len(d.Entries), err)
						return
					}
					report("M %s %d %s", sink, olsn, d.ID)
				}
			}
		}()
	}
	go func() {
		for j := uint64(1); ; j++ {
			c := map[string]state.Cursor{}
			for _, sink := range crashSinks {
				c[sink] = state.Cursor{Acked: pos(j, 0)}
			}
			report("c %d", j)
			if err := s.SaveCursors(ctx, c); err != nil {
				report("E save cursors: %v", err)
				return
			}
			report("C %d", j)
			time.Sleep(time.Millisecond)
		}
	}()
	// The parent kills the child long before this.
	time.Sleep(time.Minute)
	report("E not killed after a minute")
}

// testPattern is the -test.run pattern that selects exactly the test named.
func testPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

func testCrash(t *testing.T, h Harness) {
	for round := range 3 {
		loc := h.New(t)
		// Kill after 20 to 400 reports, and at a random moment after that.
		lines := runChild(t, loc, 20+rand.IntN(380), time.Duration(rand.IntN(3000))*time.Microsecond)
		checkCrash(t, h, loc, round, lines)
		if t.Failed() {
			return
		}
	}
}

// runChild starts the child on loc, kills it once it has sent after
// reports and then waited delay, and returns every report it sent.
func runChild(t *testing.T, loc string, after int, delay time.Duration) []string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run="+testPattern(t.Name()), "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashEnv+"="+loc)
	cmd.ExtraFiles = []*os.File{w}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		w.Close()
		t.Fatal(err)
	}
	w.Close()
	guard := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer guard.Stop()

	var lines []string
	killed := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.HasPrefix(sc.Text(), "E ") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the child failed: %s\n%s", sc.Text(), out.String())
		}
		if !killed && len(lines) >= after {
			time.Sleep(delay)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("the child ended (%v) after %d reports, before it was killed:\n%s", err, len(lines), out.String())
	}
	return lines
}

// checkCrash opens the store the killed child wrote and compares it with
// the child's reports.
func checkCrash(t *testing.T, h Harness, loc string, round int, lines []string) {
	t.Helper()
	type sinkReports struct {
		appended   uint64            // the last transaction reported appended
		trimIntent uint64            // the highest trim begun
		trimDone   uint64            // the highest trim reported
		moved      map[uint64]string // transaction → dead letter, as reported
	}
	reps := map[string]*sinkReports{}
	for _, sink := range crashSinks {
		reps[sink] = &sinkReports{moved: map[uint64]string{}}
	}
	var saveIntent, saveDone uint64
	slotSet := false
	for _, l := range lines {
		var (
			kind, sink, id string
			n              uint64
		)
		switch l[0] {
		case 'S':
			slotSet = true
			continue
		case 'c', 'C':
			if _, err := fmt.Sscanf(l, "%s %d", &kind, &n); err != nil {
				t.Fatalf("report %q: %v", l, err)
			}
			if kind == "c" {
				saveIntent = n
			} else {
				saveDone = n
			}
			continue
		case 'M':
			if _, err := fmt.Sscanf(l, "%s %s %d %s", &kind, &sink, &n, &id); err != nil {
				t.Fatalf("report %q: %v", l, err)
			}
		default:
			if _, err := fmt.Sscanf(l, "%s %s %d", &kind, &sink, &n); err != nil {
				t.Fatalf("report %q: %v", l, err)
			}
		}
		r := reps[sink]
		switch kind {
		case "A":
			r.appended = n
		case "t":
			r.trimIntent = max(r.trimIntent, n)
		case "T":
			r.trimDone = max(r.trimDone, n)
		case "M":
			r.moved[n] = id
		}
	}
	t.Logf("round %d: killed after %d reports (%d cursor saves; appends a %d, b %d, c %d)", round, len(lines), saveDone,
		reps["a"].appended, reps["b"].appended, reps["c"].appended)

	ctx := context.Background()
	s := open(t, h, loc)
	if slot, err := s.Slot(ctx); err != nil || (slotSet && slot != crashSlot) || (slot != "" && slot != crashSlot) {
		t.Errorf("slot: got %q, %v, want %q", slot, err, crashSlot)
	}
	cursors, err := s.Cursors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cursors) > 0 || saveDone > 0 {
		j := cursors[crashSinks[0]].Acked.CommitLSN
		for _, sink := range crashSinks {
			if c, ok := cursors[sink]; !ok || c.Acked != pos(uint64(j), 0) {
				t.Errorf("cursors %v: not one whole save", cursors)
				break
			}
		}
		if uint64(j) < saveDone || uint64(j) > saveIntent {
			t.Errorf("cursors at %d: want a save from %d (the last reported) to %d (the last begun)", j, saveDone, saveIntent)
		}
	}

	for i, sink := range crashSinks {
		r := reps[sink]
		b := s.Backlog(sink)
		entries := readAll(t, b)
		checkStats(t, sink+" after the crash", b, entries)
		// Whole transactions, in order, each as it was appended.
		inBacklog := map[uint64]bool{}
		for k := 0; k < len(entries); {
			lsn := uint64(entries[k].Msg.Pos.CommitLSN)
			n := txLen(i, lsn)
			if k+n > len(entries) {
				t.Fatalf("%s: transaction %d: %d of its %d entries are in the backlog", sink, lsn, len(entries)-k, n)
			}
			checkEntries(t, fmt.Sprintf("%s: transaction %d", sink, lsn), entries[k:k+n], batch(sink, lsn, n))
			if inBacklog[lsn] {
				t.Fatalf("%s: transaction %d twice", sink, lsn)
			}
			inBacklog[lsn] = true
			k += n
			if lsn <= r.trimDone {
				t.Errorf("%s: transaction %d is in the backlog after the trim to %d returned", sink, lsn, r.trimDone)
			}
			if lsn > r.appended+1 {
				t.Errorf("%s: transaction %d is in the backlog, but only %d were appended", sink, lsn, r.appended+1)
			}
		}
		dls := s.DeadLetters(sink)
		list, err := dls.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := dls.Count(ctx); err != nil || n != len(list) {
			t.Errorf("%s: count %d, %v, but %d listed", sink, n, err, len(list))
		}
		inDL := map[uint64]string{}
		for _, head := range list {
			d, err := dls.Get(ctx, head.ID)
			if err != nil {
				t.Fatal(err)
			}
			lsn := uint64(d.First.CommitLSN)
			checkEntries(t, fmt.Sprintf("%s: dead letter %s", sink, d.ID), d.Entries, batch(sink, lsn, txLen(i, lsn)))
			if d.Attempts != int(lsn) {
				t.Errorf("%s: dead letter %s: got attempts %d, want %d", sink, d.ID, d.Attempts, lsn)
			}
			if _, ok := inDL[lsn]; ok {
				t.Errorf("%s: transaction %d is in two dead letters", sink, lsn)
			}
			inDL[lsn] = d.ID
			if inBacklog[lsn] {
				t.Errorf("%s: transaction %d is both in the backlog and in dead letter %s", sink, lsn, d.ID)
			}
			if lsn > r.appended+1 {
				t.Errorf("%s: transaction %d is a dead letter, but only %d were appended", sink, lsn, r.appended+1)
			}
		}
		for lsn, id := range r.moved {
			if inDL[lsn] != id {
				t.Errorf("%s: transaction %d was reported moved to dead letter %s, got %q", sink, lsn, id, inDL[lsn])
			}
		}
		for lsn := uint64(1); lsn <= r.appended; lsn++ {
			if _, ok := inDL[lsn]; !ok && !inBacklog[lsn] && lsn > r.trimIntent {
				t.Errorf("%s: transaction %d was reported appended, and is neither in the backlog nor a dead letter nor trimmed (to %d)", sink, lsn, r.trimIntent)
			}
		}
		// The store goes on from where the child was.
		next := r.appended + 2
		if err := b.Append(ctx, batch(sink, next, 2)); err != nil {
			t.Errorf("%s: append after the crash: %v", sink, err)
		}
		if !reflect.DeepEqual(b.Stats().Last, pos(next, 1)) {
			t.Errorf("%s: got last %s after an append, want %s", sink, b.Stats().Last, pos(next, 1))
		}
	}
}
