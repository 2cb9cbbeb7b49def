// Package state is what walhook keeps across restarts: the slot it belongs
// to, each sink's cursor, each sink's durable backlog and its dead letters.
// It declares the interfaces every store implements (state/boltstore is the
// embedded file; a PostgreSQL store follows) and the versioned binary
// records they share (record.go). state/statetest is the conformance suite
// every implementation must pass.
//
// Every write method returns only once its change is durable (fsynced, or
// committed by the database), and a change is all or nothing: after a crash
// it is either there whole or not at all. The context is checked before a
// write starts; a write that has started is finished, since giving up on a
// commit in progress would leave the caller not knowing whether it
// happened.
package state

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/walhook/walhook/change"
)

// Store is one walhook's state. Its methods are safe for concurrent use;
// writes from several goroutines (several sinks) are committed together
// where the implementation can, so they do not wait for one another's
// fsync.
type Store interface {
	// Slot returns the replication slot this state belongs to, or "" if it
	// was never used.
	Slot(ctx context.Context) (string, error)
	// SetSlot records the slot this state belongs to.
	SetSlot(ctx context.Context, slot string) error

	// Origin returns the cluster and timeline the state's positions belong
	// to, or the zero Origin if none was recorded.
	Origin(ctx context.Context) (Origin, error)
	// SetOrigin records the cluster and timeline; the zero Origin forgets
	// them.
	SetOrigin(ctx context.Context, o Origin) error

	// Cursors returns every sink's saved cursor.
	Cursors(ctx context.Context) (map[string]Cursor, error)
	// SaveCursors writes the given sinks' cursors in one durable
	// transaction. Sinks not in c keep what they had.
	SaveCursors(ctx context.Context, c map[string]Cursor) error
	// DeleteCursor removes a sink's cursor; a sink without one is not an
	// error.
	DeleteCursor(ctx context.Context, sink string) error

	// Backlog returns the named sink's backlog. It never fails: a problem
	// with the name is reported by the backlog's methods.
	Backlog(sink string) Backlog
	// DeadLetters returns the named sink's dead letters.
	DeadLetters(sink string) DeadLetters

	// Backfills returns every backfill this state knows, running or
	// finished, oldest first (by Created, then ID).
	Backfills(ctx context.Context) ([]Backfill, error)
	// SaveBackfill writes b, replacing the backfill with the same ID, in
	// one durable transaction.
	SaveBackfill(ctx context.Context, b Backfill) error
	// DeleteBackfill removes a backfill, or returns an error wrapping
	// ErrNotFound.
	DeleteBackfill(ctx context.Context, id string) error

	// Events is the queue of operational events to send.
	Events
	// Pauses keeps the sinks' pauses (pause.go).
	Pauses

	// Close releases the store (and its lock). Later calls return nil;
	// other methods called after Close return ErrClosed.
	Close() error
}

// Cursor is what is persisted for one sink.
type Cursor struct {
	Acked change.Position // every message of the sink at or below it was delivered
	// Removed is when the sink was found gone from the configuration; zero
	// while it is configured. A removed sink's cursor is deleted a day
	// later (cursor.Set.Retire).
	Removed time.Time
}

// Entry is a message of a sink's backlog with the routing the sink gave it,
// so that it is delivered in the same order after a restart.
type Entry struct {
	Msg *change.Message
	// Group is the message's ordering group as the sink's router computed
	// it (sink.Router.Route).
	Group uint64
	// Barrier: the sink delivers the message after everything before it
	// and before anything after it. The router sets it; it may differ from
	// Msg.Barrier, the decoder's view.
	Barrier bool
}

// Backlog is one sink's durable queue of messages, in position order. One
// goroutine (the sink's) is expected to write it; reads may come from any.
type Backlog interface {
	// Append adds entries, whose positions must increase strictly and lie
	// above every stored one. It is all or nothing and durable when it
	// returns. Appending nothing does nothing.
	Append(ctx context.Context, entries []Entry) error
	// Read returns, in position order, entries above after: at most max of
	// them (max <= 0: no limit) and at most maxBytes of records (the length
	// of each entry's AppendEntry encoding; maxBytes <= 0: no limit), but at
	// least one if there is any, however large.
	Read(ctx context.Context, after change.Position, max int, maxBytes int64) ([]Entry, error)
	// Trim deletes the entries at or below upto: they were delivered.
	Trim(ctx context.Context, upto change.Position) error
	// MoveToDeadLetters moves the oldest entries, as many as Read(zero,
	// max, maxBytes) would return, into one new dead letter of the same
	// sink, in one transaction: after a crash they are either still in the
	// backlog or in the dead letter, never both or neither. d gives the
	// dead letter's reason, attempts, error and times; its ID, Entries,
	// Count, First and Last are ignored and filled from what was moved. It
	// returns the dead letter as stored, with its entries, or ErrEmpty.
	MoveToDeadLetters(ctx context.Context, max int, maxBytes int64, d DeadLetter) (DeadLetter, error)
	// Stats describes the backlog as of the last write. It is kept in
	// memory (loaded at open), so it is cheap to call often.
	Stats() BacklogStats
}

// BacklogStats describes a backlog.
type BacklogStats struct {
	Count int64 // entries
	// Bytes adds up the length of the entries' records (AppendEntry): what
	// backlog.max_size bounds.
	// The file or table takes more (pages, indexes, free space).
	Bytes       int64
	First, Last change.Position // zero when the backlog is empty
}

// The reasons a batch becomes a dead letter.
const (
	ReasonMaxAttempts = "max_attempts" // it failed retry.max_attempts times
	ReasonBacklogFull = "backlog_full" // backlog.when_full: dead_letter moved it out
	ReasonMaxLag      = "max_lag"      // it failed while older than the sink's max_lag
	ReasonFilterError = "filter_error" // the sink's filter failed on it, with filter_errors: dead_letter
)

// MaxErrorLen bounds DeadLetter.LastError; Add cuts a longer one (at a rune
// boundary).
const MaxErrorLen = 4096

// DeadLetter is a batch a sink gave up on, kept for inspection and replay.
type DeadLetter struct {
	// ID is given by Add: sortable (byte-wise) in creation order within a
	// sink, URL-safe and never reused by the sink (see FormatID).
	ID string
	// Entries are the batch's messages with their routing, in position
	// order, so that a replay delivers them as they would have been. List
	// leaves them out (nil); Get fills them.
	Entries []Entry
	// Count, First and Last describe Entries; Add computes them and List
	// fills them without reading the entries.
	Count       int
	First, Last change.Position

	Attempts int
	// LastStatus is the HTTP status of the last attempt, 0 when it got no
	// answer.
	LastStatus int
	// LastError is the last response's excerpt or the error's text. The
	// caller keeps secrets out of it; Add cuts it to MaxErrorLen.
	LastError string

	FirstAttempt, LastAttempt time.Time // zero when there was no attempt
	// Created is when the dead letter was made; Add sets it to now when it
	// is zero.
	Created time.Time
	Reason  string // ReasonMaxAttempts, ReasonBacklogFull, ReasonMaxLag, ReasonFilterError
}

// DeadLetters is one sink's dead-letter store.
type DeadLetters interface {
	// Add stores a dead letter, durably, and returns its new ID. Entries
	// must not be empty.
	Add(ctx context.Context, d DeadLetter) (id string, err error)
	// List returns the sink's dead letters, oldest first, without their
	// entries (Count, First and Last describe them).
	List(ctx context.Context) ([]DeadLetter, error)
	// Get returns one dead letter with its entries, or an error wrapping
	// ErrNotFound.
	Get(ctx context.Context, id string) (DeadLetter, error)
	// Delete removes one dead letter, or returns an error wrapping
	// ErrNotFound.
	Delete(ctx context.Context, id string) error
	// Count returns how many dead letters the sink has.
	Count(ctx context.Context) (int, error)
}

// The states of a backfill.
const (
	BackfillRunning   = "running"
	BackfillDone      = "done"
	BackfillCancelled = "cancelled"
	BackfillFailed    = "failed"
)

// Backfill is a backfill of one sink's tables and how far it got. The
// store keeps it as it is given; what its fields mean is the backfill
// package's business.
type Backfill struct {
	ID     string // unique among the store's backfills, not empty
	Sink   string
	Where  string // the SQL condition every table's rows are read with, or ""
	Tables []BackfillTable
	State  string // BackfillRunning, BackfillDone, BackfillCancelled, BackfillFailed
	Error  string // why it failed, or ""

	Created, Updated time.Time
}

// BackfillTable is a backfill's progress through one table.
type BackfillTable struct {
	Table string // the table's quoted, schema-qualified name
	// Key is where the next chunk starts: an opaque encoding of the last
	// key whose row was delivered, nil before the first chunk.
	Key      []byte
	Rows     int64 // rows delivered
	Estimate int64 // rows the table had when the backfill started (reltuples), -1 unknown
	Done     bool
}

// Errors the stores return (wrapped) to say what kind of failure they had.
var (
	// ErrLocked: another process holds the state.
	ErrLocked = errors.New("state file is locked by another walhook process")
	// ErrNotFound: no dead letter has that ID.
	ErrNotFound = errors.New("not found")
	// ErrEmpty: MoveToDeadLetters found nothing to move.
	ErrEmpty = errors.New("backlog is empty")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("state store is closed")
	// ErrCorrupt: a stored record cannot be decoded.
	ErrCorrupt = errors.New("corrupt state record")
)

// SortBackfills puts backfills in the order Store.Backfills returns them:
// by Created, then by ID.
func SortBackfills(bs []Backfill) {
	slices.SortFunc(bs, func(a, b Backfill) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
