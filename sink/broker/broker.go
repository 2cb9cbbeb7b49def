// Package broker holds what every broker destination (sink/nats,
// sink/redis, ...) shares, so that none of them copies it: the name
// template of subjects, streams, topics and routing keys with its mapping
// of names to tokens, the headers and body of one broker message, the
// error of a failed attempt, and the actions and names a check looks at.
// It knows no broker by name: a destination passes what its broker forbids.
package broker

import (
	"github.com/walhook/walhook/change"
)

// Header names, exactly as every broker message carries them.
const (
	HeaderIdempotencyKey = "walhook-idempotency-key"
	HeaderTable          = "walhook-table"
	HeaderAction         = "walhook-action"
	HeaderCommitLSN      = "walhook-commit-lsn"
	HeaderSink           = "walhook-sink"
)

// Header is one header of a broker message.
type Header struct {
	Name  string
	Value string
}

// Headers returns the headers of m as sink sends it, in the order of the
// constants above. walhook-table is the real "schema.table", unmapped; it
// is empty for a logical decoding message, which has no table.
func Headers(m *change.Message, sink string) [5]Header {
	table := ""
	if m.Action != change.Emitted {
		table = m.QualifiedTable()
	}
	return [5]Header{
		{HeaderIdempotencyKey, m.IdempotencyKey()},
		{HeaderTable, table},
		{HeaderAction, string(m.Action)},
		{HeaderCommitLSN, string(change.AppendLSN(nil, m.Pos.CommitLSN))},
		{HeaderSink, sink},
	}
}

// AppendBody appends the body of m's broker message: its JSON exactly as
// one element of a webhook's data array.
func AppendBody(b []byte, m *change.Message, sink string) []byte {
	return m.AppendJSON(b, sink)
}
