package cursor

import (
	"sync"
	"sync/atomic"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
)

// Set holds the trackers of every sink of one source, persists their
// cursors and derives the LSN that is safe to report as flushed: the lowest
// of the sinks' safe LSNs, and only once it is on disk.
type Set struct {
	store    *Store
	names    []string
	trackers map[string]*Tracker
	loaded   map[string]Cursor

	mu    sync.Mutex // serialises Persist
	saved map[string]Cursor
	flush atomic.Uint64
}

// NewSet loads the sinks' cursors from store and starts a tracker for each.
// start is the slot's confirmed flush LSN: nothing before it will be sent
// again, so it is safe already.
func NewSet(store *Store, names []string, start pglogrepl.LSN) (*Set, error) {
	loaded, err := store.Load()
	if err != nil {
		return nil, err
	}
	s := &Set{store: store, names: names, trackers: map[string]*Tracker{}, loaded: loaded, saved: map[string]Cursor{}}
	for _, n := range names {
		c := loaded[n]
		s.trackers[n] = NewTracker(c.Acked, start)
		s.saved[n] = c
	}
	s.flush.Store(uint64(start))
	return s, nil
}

// Tracker returns the named sink's tracker.
func (s *Set) Tracker(name string) *Tracker { return s.trackers[name] }

// Loaded returns the position saved for the named sink when the set was
// made: messages at or below it were delivered before.
func (s *Set) Loaded(name string) change.Position { return s.loaded[name].Acked }

// Persist saves every cursor that moved, with fsync, and then raises the
// flush LSN to what is now safe and on disk.
func (s *Set) Persist() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := make(map[string]Cursor, len(s.names))
	changed := false
	var flush pglogrepl.LSN
	for i, n := range s.names {
		acked, safe, _ := s.trackers[n].State()
		c := Cursor{Acked: acked}
		now[n] = c
		if c != s.saved[n] {
			changed = true
		}
		if i == 0 || safe < flush {
			flush = safe
		}
	}
	if changed {
		if err := s.store.Save(now); err != nil {
			return err
		}
		s.saved = now
	}
	if uint64(flush) > s.flush.Load() {
		s.flush.Store(uint64(flush))
	}
	return nil
}

// Flush is the LSN that is safe to report to PostgreSQL as flushed.
func (s *Set) Flush() pglogrepl.LSN { return pglogrepl.LSN(s.flush.Load()) }

// Status is one sink's cursor, for the admin API and logs.
type Status struct {
	Sink    string
	Acked   change.Position
	Safe    pglogrepl.LSN
	Pending int
}

// Status returns every sink's cursor.
func (s *Set) Status() []Status {
	out := make([]Status, 0, len(s.names))
	for _, n := range s.names {
		acked, safe, pending := s.trackers[n].State()
		out = append(out, Status{Sink: n, Acked: acked, Safe: safe, Pending: pending})
	}
	return out
}
