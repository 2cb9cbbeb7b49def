package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
	bolt "go.etcd.io/bbolt"
)

// TestGroupCommit: writes queued while a commit is in progress are
// committed together in the next transaction, and one that fails there
// fails alone.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "walhook.state"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entries := func(lsn uint64) []state.Entry {
		return []state.Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: pglogrepl.LSN(lsn)}}}}
	}
	// The first write holds its commit open until three more are queued.
	entered, release := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		first := true
		firstDone <- s.update(ctx, func(tx *bolt.Tx) (func(), error) {
			if first {
				first = false
				close(entered)
				<-release
			}
			return nil, nil
		})
	}()
	<-entered
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range 3 {
		wg.Go(func() { errs[i] = s.Backlog(fmt.Sprint("sink", i)).Append(ctx, entries(uint64(i+1))) })
	}
	wg.Go(func() {
		// Not above the sink's newest entry once sink0's append is in:
		// both go into the same transaction, and only this one fails.
		waitQueued(t, s, 3)
		errs[3] = s.Backlog("sink0").Append(ctx, entries(1))
	})
	waitQueued(t, s, 4)
	before := s.commits.Load()
	close(release)
	wg.Wait()
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs[:3] {
		if err != nil {
			t.Errorf("append %d: %v", i, err)
		}
	}
	if errs[3] == nil {
		t.Error("an append below the newest entry, grouped with the one that made it newest: no error")
	}
	// The held commit, then one for the four queued writes (tried once
	// with the failing one, which rolls back, then without it).
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("got %d commits, want 2: the held one and one for the queued writes", got)
	}
	for i := range 3 {
		if st := s.Backlog(fmt.Sprint("sink", i)).Stats(); st.Count != 1 {
			t.Errorf("sink%d: got %d entries, want 1", i, st.Count)
		}
	}
}

// waitQueued waits until n writes wait for the next commit.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q := s.group.Queued()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d writes queued after 10 s, want %d", q, n)
			return
		}
		time.Sleep(time.Millisecond)
	}
}
