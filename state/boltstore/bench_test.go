package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/statetest"
)

// BenchmarkAppend measures backlog appends of ~200-byte entries, from one
// sink and from four appending at once, in batches of 100 and 1000, with
// the group commit and (solo) with one transaction per append:
//
//	go test -run '^$' -bench Append -benchtime 2s ./state/boltstore
//
// One op is one batch of one sink; MB/s counts the entries' records.
func BenchmarkAppend(b *testing.B) {
	for _, sinks := range []int{1, 4} {
		for _, n := range []int{100, 1000} {
			for _, solo := range []bool{false, true} {
				if solo && sinks == 1 {
					continue // the same as grouped: nobody to group with
				}
				name := fmt.Sprintf("sinks=%d/batch=%d", sinks, n)
				if solo {
					name += "/solo"
				}
				b.Run(name, func(b *testing.B) { benchAppend(b, sinks, n, solo) })
			}
		}
	}
}

func benchAppend(b *testing.B, sinks, n int, solo bool) {
	s, err := Open(filepath.Join(b.TempDir(), "walhook.state"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.solo = solo
	rel := &change.Relation{Schema: "public", Name: "orders", Table: "public.orders", Identity: 'd',
		Columns: []change.Column{{Name: "id", Identity: true}, {Name: "status"}, {Name: "note"}}}
	record := []byte(`{"id":1234567,"status":"paid","note":"` + strings.Repeat("n", 70) + `"}`)
	batch := func(lsn uint64) []state.Entry {
		es := make([]state.Entry, n)
		for i := range es {
			es[i] = state.Entry{Group: lsn + uint64(i), Msg: &change.Message{
				Action: change.Insert, Schema: "public", Table: "orders", Rel: rel, Record: record,
				RecordFields: []change.Field{{Col: 0, Start: 6, End: 13}, {Col: 1, Start: 23, End: 29}, {Col: 2, Start: 37, End: 109}},
				Pos:          change.Position{CommitLSN: pglogrepl.LSN(lsn), Idx: uint32(i)},
				CommitTime:   time.Unix(1_700_000_000, 123456000).UTC(), XID: 771, Key: "1234567",
			}}
		}
		return es
	}
	var size int64
	for _, e := range batch(1) {
		size += int64(len(state.AppendEntry(nil, e)))
	}
	b.SetBytes(size)
	ctx := context.Background()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + sinks - 1) / sinks
	start := time.Now()
	for i := range sinks {
		wg.Go(func() {
			bl := s.Backlog(fmt.Sprint("sink", i))
			for lsn := uint64(1); lsn <= uint64(per); lsn++ {
				if err := bl.Append(ctx, batch(lsn)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.ReportMetric(float64(per*sinks*n)/elapsed.Seconds(), "entries/s")
	b.ReportMetric(float64(size)/float64(n), "B/entry")
	b.ReportMetric(float64(s.writes.Load())/float64(s.commits.Load()), "appends/commit")
}

// BenchmarkListDeadLetters: a sink's 10,000 dead letters listed from the
// state file, as the console's dead-letters page reads them:
//
//	go test -run '^$' -bench ListDeadLetters ./state/boltstore
func BenchmarkListDeadLetters(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "walhook.state"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	statetest.BenchmarkList(b, s)
}
