package boltstore

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/cursor"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/statetest"
	bolt "go.etcd.io/bbolt"
)

func TestConformance(t *testing.T) {
	statetest.Run(t, statetest.Harness{
		New:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "walhook.state") },
		Open: func(t *testing.T, loc string) (state.Store, error) { return Open(loc) },
	})
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "walhook.state")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt's flock is per open file description, so a second Open in the
	// same process is refused as another process would be.
	_, err = Open(path)
	if !errors.Is(err, state.ErrLocked) {
		t.Fatalf("a second Open: got %v, want ErrLocked", err)
	}
	if want := "state file is locked by another walhook process"; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Errorf("got %q, want it to name %s and say %q", err, path, want)
	}
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	s2.Close()
}

// TestCursorStoreFile: a state file written by cursor.Store (the store
// before this one) keeps its slot and cursors, and cursor.Store still
// reads the cursors this store writes.
func TestCursorStoreFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "walhook.state")
	old, err := cursor.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.SetSlot("walhook"); err != nil {
		t.Fatal(err)
	}
	p := change.Position{CommitLSN: 0x16B3748, Idx: 3}
	if err := old.Save(map[string]cursor.Cursor{"orders": {Acked: p}, "audit": {}}); err != nil {
		t.Fatal(err)
	}
	old.Close()
	// A 20-byte record, as walhook wrote before cursor records had a
	// version byte.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	legacy := change.Position{CommitLSN: 0x2000, Idx: 9}
	err = db.Update(func(tx *bolt.Tx) error {
		rec := append(state.AppendPosition(nil, legacy), 0, 0, 0, 0, 0, 0, 0x20, 0x10)
		return tx.Bucket([]byte("cursors")).Put([]byte("legacy"), rec)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if slot, err := s.Slot(ctx); err != nil || slot != "walhook" {
		t.Errorf("slot: got %q, %v, want walhook", slot, err)
	}
	got, err := s.Cursors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]state.Cursor{"orders": {Acked: p}, "audit": {}, "legacy": {Acked: legacy}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("cursor %s: got %v, want %v", k, got[k], w)
		}
	}
	moved := change.Position{CommitLSN: 0x3000, Idx: 1}
	if err := s.SaveCursors(ctx, map[string]state.Cursor{"orders": {Acked: moved}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Backlog("orders").Append(ctx, []state.Entry{{Msg: &change.Message{Pos: moved}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Back to the old store: the cursors are where this one left them.
	old, err = cursor.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	cs, err := old.Load()
	if err != nil {
		t.Fatal(err)
	}
	if cs["orders"].Acked != moved || cs["legacy"].Acked != legacy {
		t.Errorf("cursor.Store reads %v, want orders at %s and legacy at %s", cs, moved, legacy)
	}
}

// TestNewerLayout: a file from a walhook with a newer layout is refused.
func TestNewerLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "walhook.state")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keyLayout, []byte{layout + 1})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("a file of a newer layout opened")
	} else if !strings.Contains(err.Error(), "newer walhook") {
		t.Errorf("got %q, want it to say the file is from a newer walhook", err)
	}
}

// TestStatsWithoutRecord: a backlog whose stats record is missing is
// counted from its entries at open.
func TestStatsWithoutRecord(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "walhook.state")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	es := []state.Entry{{Msg: &change.Message{Pos: change.Position{CommitLSN: 5}}}, {Msg: &change.Message{Pos: change.Position{CommitLSN: 6}, Key: "k"}}}
	if err := s.Backlog("a").Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	want := s.Backlog("a").Stats()
	err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketBacklogStats).Delete([]byte("a")) })
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Backlog("a").Stats(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if want.Count != 2 || want.Bytes != int64(len(state.AppendEntry(nil, es[0]))+len(state.AppendEntry(nil, es[1]))) {
		t.Errorf("stats %+v do not count two entries' records", want)
	}
}
