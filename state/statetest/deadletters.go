package statetest

import (
	"context"
	"errors"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/state"
)

func deadLetter(sink string, lsn uint64, n int) state.DeadLetter {
	return state.DeadLetter{
		Entries:      batch(sink, lsn, n),
		Attempts:     int(lsn),
		LastStatus:   503,
		LastError:    "503 Service Unavailable: upstream down",
		FirstAttempt: epoch.Add(time.Duration(lsn) * time.Second),
		LastAttempt:  epoch.Add(time.Duration(lsn)*time.Second + 1500*time.Microsecond),
		Created:      epoch.Add(time.Duration(lsn)*time.Second + 2*time.Second + 7*time.Nanosecond),
		Reason:       state.ReasonMaxAttempts,
	}
}

// stored is d as Get returns it.
func stored(t *testing.T, d state.DeadLetter, id string) state.DeadLetter {
	t.Helper()
	d, err := state.PrepareDeadLetter(d, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d.ID = id
	return d
}

func testDeadLetters(t *testing.T, h Harness) {
	ctx := context.Background()
	s, _ := fresh(t, h)
	dls := s.DeadLetters("a")
	if n, err := dls.Count(ctx); err != nil || n != 0 {
		t.Fatalf("a new store: got %d dead letters, %v, want none", n, err)
	}
	if list, err := dls.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("a new store: got list %v, %v, want none", list, err)
	}
	if _, err := dls.Add(ctx, state.DeadLetter{Reason: state.ReasonMaxAttempts}); err == nil {
		t.Error("adding a dead letter without messages: no error")
	}
	bad := deadLetter("a", 1, 2)
	bad.Entries[1], bad.Entries[0] = bad.Entries[0], bad.Entries[1]
	if _, err := dls.Add(ctx, bad); err == nil {
		t.Error("adding a dead letter with its messages out of order: no error")
	}
	var want []state.DeadLetter
	for lsn := uint64(1); lsn <= 12; lsn++ {
		d := deadLetter("a", lsn, int(lsn%4)+1)
		if lsn == 3 {
			d.Created = time.Time{}
			d.FirstAttempt, d.LastAttempt, d.LastStatus = time.Time{}, time.Time{}, 0
			d.Reason, d.LastError = state.ReasonMaxLag, ""
		}
		if lsn == 4 {
			d.LastError = strings.Repeat("x", state.MaxErrorLen+100)
		}
		before := time.Now()
		id, err := dls.Add(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if id == "" || url.PathEscape(id) != id {
			t.Fatalf("ID %q is not URL-safe", id)
		}
		w := stored(t, d, id)
		if lsn == 3 {
			got, err := dls.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Created.Before(before.Add(-time.Second)) || got.Created.After(time.Now().Add(time.Second)) {
				t.Errorf("a dead letter without a creation time: got created %v, want about now", got.Created)
			}
			w.Created = got.Created
		}
		want = append(want, w)
	}
	if len(want[3].LastError) != state.MaxErrorLen {
		t.Errorf("a long error: kept %d bytes, want %d", len(want[3].LastError), state.MaxErrorLen)
	}
	checkDeadLetters(t, dls, want)
	// IDs sort in creation order, as strings.
	if !sort.SliceIsSorted(want, func(i, j int) bool { return want[i].ID < want[j].ID }) {
		t.Errorf("IDs do not sort in creation order: %v", ids(want))
	}
	// Delete some, from the ends and the middle.
	for _, i := range []int{11, 0, 5} {
		if err := dls.Delete(ctx, want[i].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := dls.Get(ctx, want[i].ID); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("a deleted dead letter: got %v, want ErrNotFound", err)
		}
		if err := dls.Delete(ctx, want[i].ID); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("deleting twice: got %v, want ErrNotFound", err)
		}
	}
	want = append(want[1:5:5], want[6:11]...)
	checkDeadLetters(t, dls, want)
	// An ID is never given again, even after the newest was deleted.
	id, err := dls.Add(ctx, deadLetter("a", 20, 1))
	if err != nil {
		t.Fatal(err)
	}
	if id <= want[len(want)-1].ID {
		t.Errorf("got ID %q after %q: IDs must grow", id, want[len(want)-1].ID)
	}
	// Sinks have their own dead letters.
	if n, _ := s.DeadLetters("b").Count(ctx); n != 0 {
		t.Errorf("sink b: got %d dead letters, want none", n)
	}
	if _, err := s.DeadLetters("b").Get(ctx, want[0].ID); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("sink a's dead letter through sink b: got %v, want ErrNotFound", err)
	}
}

func testDeadLettersReopen(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	want := map[string][]state.DeadLetter{}
	for _, sink := range []string{"a", "b"} {
		for lsn := uint64(1); lsn <= 3; lsn++ {
			d := deadLetter(sink, lsn, 2)
			id, err := s.DeadLetters(sink).Add(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			want[sink] = append(want[sink], stored(t, d, id))
		}
	}
	if err := s.DeadLetters("b").Delete(ctx, want["b"][1].ID); err != nil {
		t.Fatal(err)
	}
	want["b"] = append(want["b"][:1:1], want["b"][2])
	s = reopen(t, h, s, loc)
	for sink, ds := range want {
		checkDeadLetters(t, s.DeadLetters(sink), ds)
	}
	id, err := s.DeadLetters("b").Add(ctx, deadLetter("b", 9, 1))
	if err != nil {
		t.Fatal(err)
	}
	if id <= want["b"][1].ID {
		t.Errorf("after reopen: got ID %q after %q: IDs must grow", id, want["b"][1].ID)
	}
}

func testDeadLetterNotFound(t *testing.T, h Harness) {
	ctx := context.Background()
	s, _ := fresh(t, h)
	dls := s.DeadLetters("a")
	id, err := dls.Add(ctx, deadLetter("a", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "nope", "../" + id, id + "0", strings.ToUpper(id) + "X", state.FormatID(1 << 40)} {
		if _, err := dls.Get(ctx, bad); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("Get(%q): got %v, want ErrNotFound", bad, err)
		}
		if err := dls.Delete(ctx, bad); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("Delete(%q): got %v, want ErrNotFound", bad, err)
		}
	}
	if n, _ := dls.Count(ctx); n != 1 {
		t.Errorf("got %d dead letters, want 1", n)
	}
}

// checkDeadLetters compares a sink's dead letters with want: List without
// entries, Get with them, and Count.
func checkDeadLetters(t *testing.T, dls state.DeadLetters, want []state.DeadLetter) {
	t.Helper()
	ctx := context.Background()
	if n, err := dls.Count(ctx); err != nil || n != len(want) {
		t.Errorf("count: got %d, %v, want %d", n, err, len(want))
	}
	list, err := dls.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(want) {
		t.Fatalf("list: got %v, want %v", ids(list), ids(want))
	}
	for i, w := range want {
		head := w
		head.Entries = nil
		if !reflect.DeepEqual(list[i], head) {
			t.Errorf("list item %d: got %+v, want %+v", i, list[i], head)
		}
		got, err := dls.Get(ctx, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("get %s: got %+v, want %+v", w.ID, got, w)
		}
	}
}
