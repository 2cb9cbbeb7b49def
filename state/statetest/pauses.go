package statetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/walhook/walhook/state"
)

// testPauses: pauses are saved, replaced, kept across a reopen and
// deleted, per sink.
func testPauses(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	check := func(s state.Store, want map[string]state.Pause) {
		t.Helper()
		got, err := s.Pauses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got\n%+v\nwant\n%+v", got, want)
		}
	}
	check(s, map[string]state.Pause{})
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 123456000, time.UTC)
	a := state.Pause{Reason: state.PausedOperator, At: t0}
	b := state.Pause{Reason: state.PausedGone, At: t0.Add(time.Second), Detail: "HTTP 410: endpoint disabled"}
	for sink, p := range map[string]state.Pause{"a": a, "b": b} {
		if err := s.SavePause(ctx, sink, p); err != nil {
			t.Fatal(err)
		}
	}
	check(s, map[string]state.Pause{"a": a, "b": b})
	s = reopen(t, h, s, loc)
	check(s, map[string]state.Pause{"a": a, "b": b})

	// Saving again replaces.
	a2 := state.Pause{Reason: state.PausedPauseAfter, At: t0.Add(time.Hour)}
	if err := s.SavePause(ctx, "a", a2); err != nil {
		t.Fatal(err)
	}
	check(s, map[string]state.Pause{"a": a2, "b": b})
	if err := s.DeletePause(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePause(ctx, "b"); err != nil {
		t.Errorf("deleting a pause again: %v, want nil", err)
	}
	if err := s.SavePause(ctx, "", a); err == nil {
		t.Error("a pause without a sink was saved")
	}
	s = reopen(t, h, s, loc)
	check(s, map[string]state.Pause{"a": a2})
}
