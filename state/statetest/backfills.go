package statetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/walhook/walhook/state"
)

func backfill(id string, created time.Time) state.Backfill {
	return state.Backfill{
		ID:    id,
		Sink:  "a",
		Where: "id > 10",
		Tables: []state.BackfillTable{
			{Table: `"public"."orders"`, Key: []byte{1, 2, 3}, Rows: 1000, Estimate: 5000},
			{Table: `"Sales"."Order Items"`, Key: nil, Rows: 0, Estimate: -1},
			{Table: `"public"."done"`, Key: []byte{}, Rows: 7, Estimate: 7, Done: true},
		},
		State:   state.BackfillRunning,
		Created: created,
		Updated: created.Add(time.Second),
	}
}

func testBackfills(t *testing.T, h Harness) {
	ctx := context.Background()
	s, loc := fresh(t, h)
	if got, err := s.Backfills(ctx); err != nil || len(got) != 0 {
		t.Fatalf("a new store's backfills: got %v, %v, want none", got, err)
	}
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 123456000, time.UTC)
	// Saved out of order: the list is by creation time, then ID.
	b2 := backfill("bf_2", t0.Add(time.Minute))
	b1 := backfill("bf_1", t0)
	b3 := backfill("bf_0", t0.Add(time.Minute))
	b3.Sink, b3.Where, b3.Tables = "b", "", nil
	for _, b := range []state.Backfill{b2, b1, b3} {
		if err := s.SaveBackfill(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s state.Store, want ...state.Backfill) {
		t.Helper()
		got, err := s.Backfills(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got\n%+v\nwant\n%+v", got, want)
		}
	}
	check(s, b1, b3, b2)

	// Saving again replaces: progress moves, the state changes.
	b1.Tables[0].Key, b1.Tables[0].Rows = []byte{9, 9}, 2000
	b1.Tables[1].Done = true
	b1.State, b1.Error = state.BackfillFailed, "relation \"Sales\".\"Order Items\" does not exist"
	b1.Updated = t0.Add(time.Hour)
	if err := s.SaveBackfill(ctx, b1); err != nil {
		t.Fatal(err)
	}
	check(s, b1, b3, b2)
	s = reopen(t, h, s, loc)
	check(s, b1, b3, b2)

	if err := s.DeleteBackfill(ctx, "bf_0"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBackfill(ctx, "bf_0"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("deleting it again: got %v, want ErrNotFound", err)
	}
	check(s, b1, b2)
	if err := s.SaveBackfill(ctx, state.Backfill{}); err == nil {
		t.Errorf("a backfill without an ID was saved")
	}
	s = reopen(t, h, s, loc)
	check(s, b1, b2)
}
