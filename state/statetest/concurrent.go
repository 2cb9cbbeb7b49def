package statetest

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
)

// testConcurrent has several sinks append and trim, the relay save cursors,
// dead letters come and go and readers read, all at once.
func testConcurrent(t *testing.T, h Harness) {
	const (
		sinks   = 4
		batches = 25
		perTx   = 20
		saves   = 40
	)
	ctx := context.Background()
	s, loc := fresh(t, h)
	var wg sync.WaitGroup
	var writing atomic.Int32
	for i := range sinks {
		sink := fmt.Sprint("sink", i)
		writing.Add(1)
		wg.Go(func() {
			defer writing.Add(-1)
			b := s.Backlog(sink)
			for lsn := uint64(1); lsn <= batches; lsn++ {
				if err := b.Append(ctx, batch(sink, lsn, perTx)); err != nil {
					t.Errorf("%s: append %d: %v", sink, lsn, err)
					return
				}
				if lsn%5 == 0 {
					if err := b.Trim(ctx, pos(lsn-2, 1<<32-1)); err != nil {
						t.Errorf("%s: trim: %v", sink, err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for j := uint64(1); j <= saves; j++ {
			c := map[string]state.Cursor{}
			for i := range sinks {
				c[fmt.Sprint("sink", i)] = state.Cursor{Acked: pos(j, uint32(i))}
			}
			if err := s.SaveCursors(ctx, c); err != nil {
				t.Errorf("save cursors %d: %v", j, err)
				return
			}
		}
	})
	// Appends that fail, committed among the others, fail alone.
	writing.Add(1)
	wg.Go(func() {
		defer writing.Add(-1)
		b := s.Backlog("refused")
		for lsn := uint64(1); lsn <= batches; lsn++ {
			bad := batch("refused", lsn, 3)
			bad[1], bad[2] = bad[2], bad[1]
			if err := b.Append(ctx, bad); err == nil {
				t.Errorf("an append out of order: no error")
				return
			}
		}
	})
	var kept []string
	wg.Go(func() {
		dls := s.DeadLetters("sink0")
		for lsn := uint64(1); lsn <= 10; lsn++ {
			id, err := dls.Add(ctx, deadLetter("sink0", lsn, 3))
			if err != nil {
				t.Errorf("add dead letter: %v", err)
				return
			}
			if lsn%2 == 0 {
				if err := dls.Delete(ctx, id); err != nil {
					t.Errorf("delete dead letter: %v", err)
					return
				}
			} else {
				kept = append(kept, id)
			}
		}
	})
	// Readers see whole transactions in order, and stats that agree.
	for i := range 2 {
		sink := fmt.Sprint("sink", i)
		wg.Go(func() {
			b := s.Backlog(sink)
			for writing.Load() > 0 {
				st := b.Stats()
				if st.Last.Less(st.First) || (st.Count == 0) != st.First.IsZero() {
					t.Errorf("%s: inconsistent stats %+v", sink, st)
					return
				}
				es, err := b.Read(ctx, change.Position{}, 0, 0)
				if err != nil {
					t.Errorf("%s: read: %v", sink, err)
					return
				}
				if len(es)%perTx != 0 {
					t.Errorf("%s: read %d entries: a part of a transaction", sink, len(es))
					return
				}
				for k, e := range es {
					if want := entry(sink, uint64(e.Msg.Pos.CommitLSN), e.Msg.Pos.Idx); !reflect.DeepEqual(e, want) {
						t.Errorf("%s: read %+v, want %+v", sink, e.Msg, want.Msg)
						return
					}
					if k > 0 && !es[k-1].Msg.Pos.Less(e.Msg.Pos) {
						t.Errorf("%s: %s after %s", sink, e.Msg.Pos, es[k-1].Msg.Pos)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for round := 0; round < 2; round++ {
		for i := range sinks {
			sink := fmt.Sprint("sink", i)
			var want []state.Entry
			for lsn := uint64(batches - 1); lsn <= batches; lsn++ { // the last trim was to batches-2
				want = append(want, batch(sink, lsn, perTx)...)
			}
			b := s.Backlog(sink)
			checkEntries(t, sink, readAll(t, b), want)
			checkStats(t, sink, b, want)
		}
		want := map[string]state.Cursor{}
		for i := range sinks {
			want[fmt.Sprint("sink", i)] = state.Cursor{Acked: pos(saves, uint32(i))}
		}
		checkCursors(t, s, want)
		checkEntries(t, "refused", readAll(t, s.Backlog("refused")), nil)
		list, err := s.DeadLetters("sink0").List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(list); !reflect.DeepEqual(got, kept) {
			t.Errorf("dead letters: got %v, want %v", got, kept)
		}
		s = reopen(t, h, s, loc)
	}
}
