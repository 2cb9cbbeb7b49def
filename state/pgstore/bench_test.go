package pgstore

import (
	"context"
	"testing"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/state/statetest"
)

// BenchmarkListDeadLetters: a sink's 10,000 dead letters listed from the
// state in PostgreSQL, as the console's dead-letters page reads them:
//
//	go test -run '^$' -bench ListDeadLetters ./state/pgstore
func BenchmarkListDeadLetters(b *testing.B) {
	s, err := Open(context.Background(), pgtest.NewDatabase(b, pgtest.Shared()), "bench", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	statetest.BenchmarkList(b, s)
}
