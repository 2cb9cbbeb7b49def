// Package broker holds what every broker destination (sink/nats,
// sink/redis, ...) shares, so that none of them copies it: the name
// template of subjects, streams, topics and routing keys with its mapping
// of names to tokens, the headers and body of one broker message, the
// error of a failed attempt, and the actions and names a check looks at.
// It knows no broker by name: a destination passes what its broker forbids.
package broker

import (
	"strconv"

	"github.com/walhook/walhook/change"
)

// Header names, exactly as every broker message carries them.
const (
	HeaderIdempotencyKey = "walhook-idempotency-key"
	HeaderTable          = "walhook-table"
	HeaderAction         = "walhook-action"
	HeaderCommitLSN      = "walhook-commit-lsn"
	HeaderSink           = "walhook-sink"
	// Under batch_by: transaction only.
	HeaderXID    = "walhook-xid"
	HeaderTxLast = "walhook-tx-last"
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

// TxHeaders returns the headers message i of the n in a batch of tx
// carries besides Headers under batch_by: transaction: walhook-xid, the
// transaction's xid, and walhook-tx-last, "true" on the transaction's last
// message (the last of its last part) and "false" on every other. Without
// a transaction (batch_by: message, a backfilled read) there are none.
func TxHeaders(tx *change.Transaction, i, n int) []Header {
	if tx == nil {
		return nil
	}
	return []Header{
		{HeaderXID, strconv.FormatUint(uint64(tx.XID), 10)},
		{HeaderTxLast, strconv.FormatBool(tx.Last && i == n-1)},
	}
}

// AppendBody appends the body of m's broker message: its JSON exactly as
// one element of a webhook's data array.
func AppendBody(b []byte, m *change.Message, sink string) []byte {
	return m.AppendJSON(b, sink)
}
