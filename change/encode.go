package change

import (
	"github.com/jackc/pglogrepl"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the message's JSON form, as the contract documents it,
// with metadata.sink set to sink.
func (m *Message) AppendJSON(b []byte, sink string) []byte {
	b = append(b, `{"action":`...)
	b = AppendString(b, string(m.Action))
	if m.Action == Emitted {
		b = append(b, `,"prefix":`...)
		b = AppendString(b, m.Prefix)
		b = append(b, `,"content":`...)
		b = appendRaw(b, m.Content)
	}
	b = append(b, `,"record":`...)
	b = appendRaw(b, m.Record)
	b = append(b, `,"changes":`...)
	b = appendRaw(b, m.Changes)
	b = append(b, `,"metadata":{`...)
	if m.Action != Emitted {
		b = append(b, `"table_schema":`...)
		b = AppendString(b, m.Schema)
		b = append(b, `,"table_name":`...)
		b = AppendString(b, m.Table)
		b = append(b, ',')
	}
	b = append(b, `"commit_lsn":"`...)
	b = AppendLSN(b, m.Pos.CommitLSN)
	b = append(b, `","commit_idx":`...)
	b = strconv.AppendUint(b, uint64(m.Pos.Idx), 10)
	b = append(b, `,"commit_timestamp":"`...)
	b = AppendTimestamp(b, m.CommitTime)
	b = append(b, `","xid":`...)
	b = strconv.AppendUint(b, uint64(m.XID), 10)
	b = append(b, `,"idempotency_key":"`...)
	b = m.AppendIdempotencyKey(b)
	b = append(b, `","sink":`...)
	b = AppendString(b, sink)
	if m.BackfillID != "" {
		b = append(b, `,"backfill_id":`...)
		b = AppendString(b, m.BackfillID)
	}
	if len(m.UnchangedToast) > 0 {
		b = append(b, `,"unchanged_toast_columns":[`...)
		for i, c := range m.UnchangedToast {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, c)
		}
		b = append(b, ']')
	}
	return append(b, "}}"...)
}

// Transaction is the transaction a delivery holds under batch_by:
// transaction (all of it, or one part): the body's "transaction" object.
type Transaction struct {
	XID        uint32
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
	Part       int  // from 1
	Last       bool // no part follows
}

// AppendBody appends a delivery body, {"data":[...]}, holding msgs in order.
func AppendBody(b []byte, msgs []*Message, sink string) []byte {
	return AppendTransactionBody(b, msgs, sink, nil)
}

// AppendTransactionBody appends a delivery body holding msgs in order and,
// unless tx is nil, the transaction they are (a part of):
// {"transaction":{"xid":771,"commit_lsn":"0/16B3748","commit_timestamp":"...","part":1,"last":true},"data":[...]}.
func AppendTransactionBody(b []byte, msgs []*Message, sink string, tx *Transaction) []byte {
	b = append(b, '{')
	if tx != nil {
		b = append(b, `"transaction":{"xid":`...)
		b = strconv.AppendUint(b, uint64(tx.XID), 10)
		b = append(b, `,"commit_lsn":"`...)
		b = AppendLSN(b, tx.CommitLSN)
		b = append(b, `","commit_timestamp":"`...)
		b = AppendTimestamp(b, tx.CommitTime)
		b = append(b, `","part":`...)
		b = strconv.AppendInt(b, int64(tx.Part), 10)
		b = append(b, `,"last":`...)
		b = strconv.AppendBool(b, tx.Last)
		b = append(b, "},"...)
	}
	b = append(b, `"data":[`...)
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = m.AppendJSON(b, sink)
	}
	return append(b, "]}"...)
}

func appendRaw(b, raw []byte) []byte {
	if raw == nil {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

// AppendTimestamp appends t in UTC as RFC 3339 with exactly six fractional
// digits, the form every timestamp in a message takes.
func AppendTimestamp(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, timestampLayout)
	}
	// What AppendFormat writes, digit by digit: every message has a
	// commit timestamp, and the layout interpreter cost more than the rest
	// of the metadata together.
	hour, minute, sec := t.Clock()
	us := t.Nanosecond() / 1000
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, us, 6)
	return append(b, 'Z')
}

const timestampLayout = "2006-01-02T15:04:05.000000Z07:00"

// appendDigits appends v, which is not negative, as exactly n decimal
// digits.
func appendDigits(b []byte, v, n int) []byte {
	var tmp [8]byte
	for i := n - 1; i >= 0; i-- {
		tmp[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, tmp[:n]...)
}

const hexDigits = "0123456789abcdef"

// AppendLSN appends lsn in PostgreSQL's form, upper-case hex "16/B374D848",
// as pglogrepl.LSN's String gives it, without formatting through fmt.
func AppendLSN(b []byte, lsn pglogrepl.LSN) []byte {
	b = appendHexUpper(b, uint32(lsn>>32))
	b = append(b, '/')
	return appendHexUpper(b, uint32(lsn))
}

func appendHexUpper(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	if v == 0 {
		return append(b, '0')
	}
	var tmp [8]byte
	i := len(tmp)
	for v > 0 {
		i--
		tmp[i] = digits[v&0xf]
		v >>= 4
	}
	return append(b, tmp[i:]...)
}

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does; "<", ">" and "&" are left as they are, since messages
// are not embedded in HTML.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
