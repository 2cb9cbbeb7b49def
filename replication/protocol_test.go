package replication

import (
	"encoding/binary"
	"time"

	"github.com/jackc/pglogrepl"
)

// Builders of pgoutput (protocol version 1) messages, for tests that need
// no server.

type msgBuilder []byte

func (b msgBuilder) u8(v byte) msgBuilder { return append(b, v) }
func (b msgBuilder) u16(v uint16) msgBuilder {
	return binary.BigEndian.AppendUint16(b, v)
}
func (b msgBuilder) u32(v uint32) msgBuilder {
	return binary.BigEndian.AppendUint32(b, v)
}
func (b msgBuilder) u64(v uint64) msgBuilder {
	return binary.BigEndian.AppendUint64(b, v)
}
func (b msgBuilder) str(s string) msgBuilder { return append(append(b, s...), 0) }

func beginMsg(finalLSN pglogrepl.LSN, at time.Time, xid uint32) []byte {
	return msgBuilder{'B'}.u64(uint64(finalLSN)).u64(uint64(at.Sub(pgEpoch).Microseconds())).u32(xid)
}

func commitMsg(commitLSN, endLSN pglogrepl.LSN, at time.Time) []byte {
	return msgBuilder{'C'}.u8(0).u64(uint64(commitLSN)).u64(uint64(endLSN)).u64(uint64(at.Sub(pgEpoch).Microseconds()))
}

// relCol is a column of a Relation message.
type relCol struct {
	name string
	oid  uint32
	key  bool
}

func relationMsg(relid uint32, ns, name string, identity byte, cols ...relCol) []byte {
	b := msgBuilder{'R'}.u32(relid).str(ns).str(name).u8(identity).u16(uint16(len(cols)))
	for _, c := range cols {
		var flags byte
		if c.key {
			flags = 1
		}
		b = b.u8(flags).str(c.name).u32(c.oid).u32(0xffffffff)
	}
	return b
}

func typeMsg(oid uint32, ns, name string) []byte {
	return msgBuilder{'Y'}.u32(oid).str(ns).str(name)
}

// tupleVal is one column of a tuple: text, or nil for NULL, or toast for
// an unchanged TOASTed value.
type tupleVal *string

var toast = new(string)

func text(s string) tupleVal { return &s }

func appendTuple(b msgBuilder, vals ...tupleVal) msgBuilder {
	b = b.u16(uint16(len(vals)))
	for _, v := range vals {
		switch {
		case v == nil:
			b = b.u8('n')
		case v == toast:
			b = b.u8('u')
		default:
			b = b.u8('t').u32(uint32(len(*v)))
			b = append(b, *v...)
		}
	}
	return b
}

func insertMsg(relid uint32, vals ...tupleVal) []byte {
	return appendTuple(msgBuilder{'I'}.u32(relid).u8('N'), vals...)
}

// updateMsg builds an Update; oldKind is 0 (no old tuple), 'K' or 'O'.
func updateMsg(relid uint32, oldKind byte, old []tupleVal, vals ...tupleVal) []byte {
	b := msgBuilder{'U'}.u32(relid)
	if oldKind != 0 {
		b = appendTuple(b.u8(oldKind), old...)
	}
	return appendTuple(b.u8('N'), vals...)
}

func deleteMsg(relid uint32, oldKind byte, old ...tupleVal) []byte {
	return appendTuple(msgBuilder{'D'}.u32(relid).u8(oldKind), old...)
}

func truncateMsg(option byte, relids ...uint32) []byte {
	b := msgBuilder{'T'}.u32(uint32(len(relids))).u8(option)
	for _, id := range relids {
		b = b.u32(id)
	}
	return b
}

func logicalMsg(transactional bool, lsn pglogrepl.LSN, prefix string, content []byte) []byte {
	var flags byte
	if transactional {
		flags = 1
	}
	b := msgBuilder{'M'}.u8(flags).u64(uint64(lsn)).str(prefix).u32(uint32(len(content)))
	return append(b, content...)
}

// frame joins messages into one fuzz input: each is a 4-byte big-endian
// length and the message.
func frame(msgs ...[]byte) []byte {
	var b msgBuilder
	for _, m := range msgs {
		b = b.u32(uint32(len(m)))
		b = append(b, m...)
	}
	return b
}
