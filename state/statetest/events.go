package statetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/walhook/walhook/state"
)

// testEvents: the event queue keeps events in the order added, every
// field intact, across a reopen; a deleted event is gone and its Seq is
// never given out again.
func testEvents(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	if got, err := s.Events(ctx, 0); err != nil || len(got) != 0 {
		t.Fatalf("a new store's events: got %v, %v, want none", got, err)
	}
	t0 := time.Date(2026, 12, 7, 11, 0, 0, 123456000, time.UTC)
	var want []state.Event
	for i := range 3 {
		e := state.Event{ID: fmt.Sprintf("evt_%d", i), Created: t0.Add(time.Duration(i) * time.Second), Body: []byte(fmt.Sprintf(`{"type":"sink.paused","n":%d}`, i))}
		seq, err := s.AddEvent(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) > 0 && seq <= want[len(want)-1].Seq {
			t.Fatalf("event %d: got seq %d after %d, want it higher", i, seq, want[len(want)-1].Seq)
		}
		e.Seq = seq
		want = append(want, e)
	}
	check := func(s state.Store, max int, want ...state.Event) {
		t.Helper()
		got, err := s.Events(ctx, max)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("Events(%d): got\n%+v\nwant\n%+v", max, got, want)
		}
	}
	check(s, 0, want...)
	check(s, 2, want[:2]...)
	if err := s.DeleteEvent(ctx, want[2].Seq); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEvent(ctx, want[2].Seq); err != nil {
		t.Fatalf("deleting an event twice: %v, want nil", err)
	}
	s = reopen(t, h, s, loc)
	check(s, 0, want[:2]...)
	seq, err := s.AddEvent(ctx, state.Event{ID: "evt_3", Created: t0, Body: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if seq <= want[2].Seq {
		t.Errorf("after deleting the newest event: got seq %d, want above %d", seq, want[2].Seq)
	}
	for _, e := range want[:2] {
		if err := s.DeleteEvent(ctx, e.Seq); err != nil {
			t.Fatal(err)
		}
	}
	check(s, 0, state.Event{Seq: seq, ID: "evt_3", Created: t0, Body: []byte(`{}`)})
}
