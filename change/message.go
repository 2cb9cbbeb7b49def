// Package change is walhook's message model and its JSON encoding. Every
// other package that speaks of a row change uses these types; nothing else
// defines them.
package change

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
)

// Action says what happened to a row.
type Action string

// The actions a message can carry.
const (
	Insert   Action = "insert"
	Update   Action = "update"
	Delete   Action = "delete"
	Truncate Action = "truncate"
	Read     Action = "read"    // a backfilled row
	Emitted  Action = "message" // a pg_logical_emit_message passed through
)

// Actions lists every action, in the order the documentation gives them.
var Actions = []Action{Insert, Update, Delete, Truncate, Read, Emitted}

// Position orders messages: the commit LSN of the transaction and the 0-based
// index of the change inside it. Positions are totally ordered.
type Position struct {
	CommitLSN pglogrepl.LSN
	Idx       uint32
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	if p.CommitLSN != q.CommitLSN {
		return p.CommitLSN < q.CommitLSN
	}
	return p.Idx < q.Idx
}

// IsZero reports whether p is the zero position, which is before every
// message.
func (p Position) IsZero() bool { return p == Position{} }

// String is the idempotency key form: "0/16B3748:3".
func (p Position) String() string { return string(p.Append(nil)) }

// Append appends the String form of p to b.
func (p Position) Append(b []byte) []byte {
	b = AppendLSN(b, p.CommitLSN)
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(p.Idx), 10)
}

// ParsePosition parses the form String returns.
func ParsePosition(s string) (Position, error) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != ':' {
			continue
		}
		lsn, err := pglogrepl.ParseLSN(s[:i])
		if err != nil {
			return Position{}, fmt.Errorf("position %q: %w", s, err)
		}
		idx, err := strconv.ParseUint(s[i+1:], 10, 32)
		if err != nil {
			return Position{}, fmt.Errorf("position %q: index: %w", s, err)
		}
		return Position{CommitLSN: lsn, Idx: uint32(idx)}, nil
	}
	return Position{}, fmt.Errorf("position %q: want LSN:index, e.g. 0/16B3748:3", s)
}

// Message is one committed change. Record and Changes hold JSON objects that
// the decoder wrote once; a nil slice encodes as null.
type Message struct {
	Action Action
	Schema string
	Table  string

	// Rel describes the message's table as the change saw it; nil for a
	// logical decoding message.
	Rel *Relation

	// Record is the new row; for a delete the old row as far as the replica
	// identity provides it; nil for a truncate.
	Record []byte
	// RecordFields locate the columns in Record, in Record's order.
	RecordFields []Field
	// Changes holds, on an update, the old values of the columns that
	// changed; nil on other actions.
	Changes []byte
	// ChangesFields locate the columns in Changes, in Changes' order.
	ChangesFields []Field
	// UnchangedToast names the columns left out of Record because
	// PostgreSQL did not send their unchanged TOASTed value.
	UnchangedToast []string

	// Prefix and Content carry a logical decoding message (action
	// "message"); Content is its payload as a JSON value.
	Prefix  string
	Content []byte

	Pos        Position
	CommitTime time.Time
	XID        uint32

	// Key groups messages that must be delivered in order (the row's
	// identity); messages with different keys may travel in parallel.
	Key string
	// BackfillID names the backfill that read the row, on action "read"
	// only: metadata.backfill_id, and the start of the idempotency key.
	BackfillID string

	// Barrier orders the message against every other one of its sink: it
	// is delivered after everything before it and before anything after
	// it. A truncate is one (its table's rows travel in many lanes), and so
	// is an update that changes the row's key.
	Barrier bool
}

// IdempotencyKey is stable across redeliveries of the same change and
// names no other change.
func (m *Message) IdempotencyKey() string { return string(m.AppendIdempotencyKey(nil)) }

// AppendIdempotencyKey appends the idempotency key to b: the position
// ("0/16B3748:3") for a streamed change. A backfilled row is read again at
// another position when its chunk is retried or resumed, so its key is
// the backfill's ID, a colon and 32 hex digits of the SHA-256 of the row's
// Key (its table and primary key values): the same on every read of the
// row by that backfill, different for any other row or backfill.
func (m *Message) AppendIdempotencyKey(b []byte) []byte {
	if m.BackfillID == "" {
		return m.Pos.Append(b)
	}
	b = append(b, m.BackfillID...)
	b = append(b, ':')
	sum := sha256.Sum256([]byte(m.Key))
	return hex.AppendEncode(b, sum[:16])
}

// Size estimates the memory m holds, in bytes: what a sink's window
// counts.
func (m *Message) Size() int {
	return 256 + len(m.Record) + len(m.Changes) + len(m.Content) + len(m.Key) + len(m.BackfillID) +
		12*(len(m.RecordFields)+len(m.ChangesFields)) + 16*len(m.UnchangedToast)
}

// QualifiedTable is "schema.table" as configured in sink filters.
func (m *Message) QualifiedTable() string { return m.Schema + "." + m.Table }

// Relation describes a table as the stream saw it when a change was made.
// Every message of the table shares it until a schema change brings a new
// one; it never changes.
type Relation struct {
	Schema, Name string
	Table        string // "schema.name"
	// Identity is the table's replica identity: 'd' default (the primary
	// key), 'i' an index, 'f' full, 'n' nothing.
	Identity byte
	Columns  []Column
	// Key are the columns whose values group the table's rows in order
	// (the identity columns, or the primary key under identity full), as
	// indexes into Columns; empty when the whole table is one group.
	Key []int
}

// Column is one column of a Relation.
type Column struct {
	Name string
	// Identity marks a replica identity column: a delete's old row always
	// carries it. With identity full every column is one.
	Identity bool
}

// Column returns the index of the named column, or -1.
func (r *Relation) Column(name string) int {
	for i := range r.Columns {
		if r.Columns[i].Name == name {
			return i
		}
	}
	return -1
}

// Field locates one column's JSON value inside Record or Changes.
type Field struct {
	Col        uint32 // index in Relation.Columns
	Start, End uint32 // the value is raw[Start:End]
}

// Lookup returns the JSON value of column col in raw (Record or Changes)
// as fields locate it, and whether it is there.
func Lookup(raw []byte, fields []Field, col int) ([]byte, bool) {
	for _, f := range fields {
		if int(f.Col) == col {
			return raw[f.Start:f.End], true
		}
	}
	return nil, false
}
