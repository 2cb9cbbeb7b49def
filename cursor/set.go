package cursor

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/state"
)

// Set holds the trackers of every sink of one source, persists their
// cursors and derives the LSN that is safe to report as flushed: the lowest
// of the sinks' safe LSNs, and only once it is on disk.
//
// A sink's safe LSN is the highest of its tracker's (everything before it
// delivered) and its floor (everything before it delivered or durably in
// the sink's backlog, which the sink's runner raises as it appends).
type Set struct {
	store  state.Store
	loaded map[string]state.Cursor

	mu       sync.Mutex // guards sinks and serialises Persist
	sinks    map[string]*sinkEntry
	names    []string // in the order added
	flush    atomic.Uint64
	reported pglogrepl.LSN // the flush LSN when the set was made
}

type sinkEntry struct {
	tracker *Tracker
	floor   atomic.Uint64
	saved   state.Cursor
}

// NewSet loads the saved cursors from store and starts a tracker for each
// named sink. start is the slot's confirmed flush LSN: nothing before it
// will be sent again, so it is safe already.
func NewSet(ctx context.Context, store state.Store, names []string, start pglogrepl.LSN) (*Set, error) {
	loaded, err := store.Cursors(ctx)
	if err != nil {
		return nil, err
	}
	s := &Set{store: store, loaded: loaded, sinks: map[string]*sinkEntry{}, reported: start}
	for _, n := range names {
		s.add(n, loaded[n].Acked, start)
	}
	s.flush.Store(uint64(start))
	return s, nil
}

func (s *Set) add(name string, acked change.Position, safe pglogrepl.LSN) *Tracker {
	// A stored removal time makes the cursor differ from what is saved,
	// so the next Persist writes it without one.
	e := &sinkEntry{tracker: NewTracker(acked, safe), saved: state.Cursor{Acked: acked, Removed: s.loaded[name].Removed}}
	s.sinks[name] = e
	s.names = append(s.names, name)
	return e.tracker
}

// Add starts tracking a sink added while walhook runs, from acked (the
// current position: everything before it is the sink's past), with the
// current flush LSN as its safe LSN. It returns the sink's tracker.
func (s *Set) Add(name string, acked change.Position) *Tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.sinks[name]; ok {
		return e.tracker
	}
	return s.add(name, acked, s.Flush())
}

// Remove stops tracking a sink: it no longer holds the flush LSN. Its
// saved cursor stays in the store.
func (s *Set) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sinks, name)
	s.names = slices.DeleteFunc(s.names, func(n string) bool { return n == name })
}

// Tracker returns the named sink's tracker, or nil.
func (s *Set) Tracker(name string) *Tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.sinks[name]; ok {
		return e.tracker
	}
	return nil
}

// Loaded returns the position saved for the named sink when the set was
// made: messages at or below it were delivered before.
func (s *Set) Loaded(name string) change.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded[name].Acked
}

// RaiseFloor raises the named sink's floor to lsn: everything the sink had
// before lsn is delivered or durably in its backlog.
func (s *Set) RaiseFloor(name string, lsn pglogrepl.LSN) {
	s.mu.Lock()
	e, ok := s.sinks[name]
	s.mu.Unlock()
	if !ok {
		return
	}
	for {
		cur := e.floor.Load()
		if uint64(lsn) <= cur || e.floor.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Persist saves every cursor that moved, durably, and then raises the flush
// LSN to what is now safe and on disk.
func (s *Set) Persist(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	moved := map[string]state.Cursor{}
	flush, first := pglogrepl.LSN(0), true
	for _, n := range s.names {
		e := s.sinks[n]
		acked, safe, _ := e.tracker.State()
		safe = max(safe, pglogrepl.LSN(e.floor.Load()))
		if c := (state.Cursor{Acked: acked}); c != e.saved {
			moved[n] = c
		}
		if first || safe < flush {
			flush, first = safe, false
		}
	}
	if len(moved) > 0 {
		if err := s.store.SaveCursors(ctx, moved); err != nil {
			return err
		}
		for n, c := range moved {
			s.sinks[n].saved = c
		}
	}
	if !first && uint64(flush) > s.flush.Load() {
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
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.names))
	for _, n := range s.names {
		e := s.sinks[n]
		acked, safe, pending := e.tracker.State()
		out = append(out, Status{Sink: n, Acked: acked, Safe: max(safe, pglogrepl.LSN(e.floor.Load())), Pending: pending})
	}
	return out
}

// Retired is what Retire did with the cursor of a sink that is not in the
// set.
type Retired struct {
	Sink    string
	Acked   change.Position
	Removed time.Time // when it was found removed
	// Deleted: the cursor was removed at least keep before now, and it and
	// the sink's backlog (BacklogDropped messages) are deleted now.
	// Otherwise it was just marked removed.
	Deleted        bool
	BacklogDropped int64
}

// Retire deals with the stored cursors of sinks that are not in the set
// (gone from the configuration): one without a removal time gets now as
// its removal time; one removed at least keep before now is deleted, with
// the sink's backlog. Dead letters stay: they are the operator's to replay
// or drop. It returns what it changed.
func (s *Set) Retire(ctx context.Context, now time.Time, keep time.Duration) ([]Retired, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, err := s.store.Cursors(ctx)
	if err != nil {
		return nil, err
	}
	var out []Retired
	for name, c := range stored {
		if _, ok := s.sinks[name]; ok {
			continue
		}
		switch {
		case c.Removed.IsZero():
			c.Removed = now
			if err := s.store.SaveCursors(ctx, map[string]state.Cursor{name: c}); err != nil {
				return out, err
			}
			s.loaded[name] = c
			out = append(out, Retired{Sink: name, Acked: c.Acked, Removed: now})
		case now.Sub(c.Removed) >= keep:
			b := s.store.Backlog(name)
			n := b.Stats().Count
			if n > 0 {
				if err := b.Trim(ctx, change.Position{CommitLSN: ^pglogrepl.LSN(0), Idx: ^uint32(0)}); err != nil {
					return out, err
				}
			}
			if err := s.store.DeleteCursor(ctx, name); err != nil {
				return out, err
			}
			delete(s.loaded, name)
			out = append(out, Retired{Sink: name, Acked: c.Acked, Removed: c.Removed, Deleted: true, BacklogDropped: n})
		}
	}
	slices.SortFunc(out, func(a, b Retired) int { return strings.Compare(a.Sink, b.Sink) })
	return out, nil
}
