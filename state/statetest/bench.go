package statetest

import (
	"context"
	"testing"

	"github.com/walhook/walhook/state"
)

// DeadLettersListed is how many dead letters BenchmarkList lists: the
// console's budget (50 ms a page) is set for a sink with 10,000.
const DeadLettersListed = 10_000

// BenchmarkList measures List over a sink's 10,000 dead letters of one
// message each, what the console's dead-letters page and the API's list
// read from the store on every request before they take a page of it.
// s is a new, empty store; the benchmark closes nothing.
func BenchmarkList(b *testing.B, s state.Store) {
	ctx := context.Background()
	dls := s.DeadLetters("bench")
	for lsn := uint64(1); lsn <= DeadLettersListed; lsn++ {
		if _, err := dls.Add(ctx, deadLetter("bench", lsn, 1)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		list, err := dls.List(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(list) != DeadLettersListed {
			b.Fatalf("listed %d dead letters, want %d", len(list), DeadLettersListed)
		}
	}
}
