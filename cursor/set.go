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
//
// Runners never wait for the store: mu guards only memory and is never
// held across store I/O. A write (Persist, Retire) takes a snapshot under
// mu, writes it with mu released, and applies the result under mu again;
// writes holds writes in order, one at a time, and only writers take it.
// The flush LSN is raised only after the cursors it was derived from are
// durable.
type Set struct {
	store state.Store

	writes sync.Mutex // serialises Persist and Retire, across their I/O

	mu       sync.Mutex // guards what follows; never held across store I/O
	loaded   map[string]state.Cursor
	sinks    map[string]*sinkEntry
	names    []string                 // in the order added
	retiring map[string]chan struct{} // sinks Retire is writing for; closed when done
	gen      uint64                   // counts the sinks added
	flush    atomic.Uint64
	reported pglogrepl.LSN // the flush LSN when the set was made
}

type sinkEntry struct {
	tracker *Tracker
	floor   atomic.Uint64
	saved   state.Cursor // guarded by Set.mu
	gen     uint64       // Set.gen when added
}

// NewSet loads the saved cursors from store and starts a tracker for each
// named sink. start is the slot's confirmed flush LSN: nothing before it
// will be sent again, so it is safe already.
func NewSet(ctx context.Context, store state.Store, names []string, start pglogrepl.LSN) (*Set, error) {
	loaded, err := store.Cursors(ctx)
	if err != nil {
		return nil, err
	}
	s := &Set{store: store, loaded: loaded, sinks: map[string]*sinkEntry{}, retiring: map[string]chan struct{}{}, reported: start}
	for _, n := range names {
		s.add(n, loaded[n].Acked, start)
	}
	s.flush.Store(uint64(start))
	return s, nil
}

func (s *Set) add(name string, acked change.Position, safe pglogrepl.LSN) *Tracker {
	// A stored removal time makes the cursor differ from what is saved,
	// so the next Persist writes it without one.
	s.gen++
	e := &sinkEntry{tracker: NewTracker(acked, safe), saved: state.Cursor{Acked: acked, Removed: s.loaded[name].Removed}, gen: s.gen}
	s.sinks[name] = e
	s.names = append(s.names, name)
	return e.tracker
}

// Add starts tracking a sink added while walhook runs, from acked (the
// current position: everything before it is the sink's past), with the
// current flush LSN as its safe LSN. It returns the sink's tracker. It
// waits for the store only when Retire is writing for this very sink (a
// sink added back just as its stored cursor is retired).
func (s *Set) Add(name string, acked change.Position) *Tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if e, ok := s.sinks[name]; ok {
			return e.tracker
		}
		done, ok := s.retiring[name]
		if !ok {
			return s.add(name, acked, s.Flush())
		}
		s.mu.Unlock()
		<-done
		s.mu.Lock()
	}
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
// LSN to what is now safe and on disk. It holds no lock the runners take
// while it writes: Add, Remove, RaiseFloor, acks and Status go on meanwhile.
func (s *Set) Persist(ctx context.Context) error {
	s.writes.Lock()
	defer s.writes.Unlock()
	snap := s.snapshot()
	if len(snap.moved) > 0 {
		if err := s.store.SaveCursors(ctx, snap.moved); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	raise := snap.ok
	for n, e := range s.sinks {
		if e.gen > snap.gen {
			// Added while the cursors were written: it was not in the
			// snapshot and its cursor is not saved, so the flush LSN
			// waits for the next Persist.
			raise = false
			continue
		}
		if c, moved := snap.moved[n]; moved {
			e.saved = c
		}
	}
	if raise && uint64(snap.flush) > s.flush.Load() {
		s.flush.Store(uint64(snap.flush))
	}
	return nil
}

// persistSnapshot is what Persist writes, taken under mu.
type persistSnapshot struct {
	moved map[string]state.Cursor // the cursors that differ from what is saved
	flush pglogrepl.LSN           // the lowest safe LSN of the sinks, valid if ok
	ok    bool                    // there was a sink
	gen   uint64                  // the newest sink's gen when taken
}

func (s *Set) snapshot() persistSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := persistSnapshot{moved: map[string]state.Cursor{}, gen: s.gen}
	for _, n := range s.names {
		e := s.sinks[n]
		acked, safe, _ := e.tracker.State()
		safe = max(safe, pglogrepl.LSN(e.floor.Load()))
		if c := (state.Cursor{Acked: acked}); c != e.saved {
			snap.moved[n] = c
		}
		if !snap.ok || safe < snap.flush {
			snap.flush, snap.ok = safe, true
		}
	}
	return snap
}

// safe is the sink's safe LSN: the higher of its tracker's and its floor.
func (e *sinkEntry) safe() pglogrepl.LSN {
	_, safe, _ := e.tracker.State()
	return max(safe, pglogrepl.LSN(e.floor.Load()))
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
		acked, _, pending := e.tracker.State()
		out = append(out, Status{Sink: n, Acked: acked, Safe: e.safe(), Pending: pending})
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
// or drop. It returns what it changed. Like Persist it writes without
// holding mu; a sink it is writing for cannot be added back until that
// sink's write is done (see Add).
func (s *Set) Retire(ctx context.Context, now time.Time, keep time.Duration) ([]Retired, error) {
	s.writes.Lock()
	defer s.writes.Unlock()
	stored, err := s.store.Cursors(ctx)
	if err != nil {
		return nil, err
	}
	var out []Retired
	for name, c := range stored {
		if c.Removed.IsZero() || now.Sub(c.Removed) >= keep {
			r, err := s.retire(ctx, name, c, now)
			if r != nil {
				out = append(out, *r)
			}
			if err != nil {
				return out, err
			}
		}
	}
	slices.SortFunc(out, func(a, b Retired) int { return strings.Compare(a.Sink, b.Sink) })
	return out, nil
}

// retire marks the stored cursor c of the named sink removed, or deletes it
// and the sink's backlog when it was removed earlier, unless the sink is in
// the set. While it writes, Add waits for this sink.
func (s *Set) retire(ctx context.Context, name string, c state.Cursor, now time.Time) (*Retired, error) {
	s.mu.Lock()
	if _, ok := s.sinks[name]; ok {
		s.mu.Unlock()
		return nil, nil
	}
	done := make(chan struct{})
	s.retiring[name] = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.retiring, name)
		s.mu.Unlock()
		close(done)
	}()

	if c.Removed.IsZero() {
		c.Removed = now
		if err := s.store.SaveCursors(ctx, map[string]state.Cursor{name: c}); err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.loaded[name] = c
		s.mu.Unlock()
		return &Retired{Sink: name, Acked: c.Acked, Removed: now}, nil
	}
	b := s.store.Backlog(name)
	n := b.Stats().Count
	if n > 0 {
		if err := b.Trim(ctx, change.Position{CommitLSN: ^pglogrepl.LSN(0), Idx: ^uint32(0)}); err != nil {
			return nil, err
		}
	}
	if err := s.store.DeleteCursor(ctx, name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	delete(s.loaded, name)
	s.mu.Unlock()
	return &Retired{Sink: name, Acked: c.Acked, Removed: c.Removed, Deleted: true, BacklogDropped: n}, nil
}
