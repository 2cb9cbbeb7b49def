package replication

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// parseMessage parses a pgoutput (protocol version 1) message other than a
// row change into pglogrepl's types. Unlike pglogrepl.Parse, it checks every
// length against the input, so a malformed message is an error, never a
// panic.
func parseMessage(data []byte) (pglogrepl.Message, error) {
	r := &msgReader{src: data[1:]}
	var msg pglogrepl.Message
	switch data[0] {
	case 'B':
		m := &pglogrepl.BeginMessage{}
		m.FinalLSN = pglogrepl.LSN(r.u64())
		m.CommitTime = r.time()
		m.Xid = r.u32()
		msg = m
	case 'C':
		m := &pglogrepl.CommitMessage{}
		m.Flags = r.u8()
		m.CommitLSN = pglogrepl.LSN(r.u64())
		m.TransactionEndLSN = pglogrepl.LSN(r.u64())
		m.CommitTime = r.time()
		msg = m
	case 'O':
		m := &pglogrepl.OriginMessage{}
		m.CommitLSN = pglogrepl.LSN(r.u64())
		m.Name = r.str()
		msg = m
	case 'R':
		m := &pglogrepl.RelationMessage{}
		m.RelationID = r.u32()
		m.Namespace = r.str()
		m.RelationName = r.str()
		m.ReplicaIdentity = r.u8()
		m.ColumnNum = r.u16()
		// Each column takes at least 10 bytes: allocate only what can be there.
		m.Columns = make([]*pglogrepl.RelationMessageColumn, 0, min(int(m.ColumnNum), len(r.src)/10))
		for i := 0; i < int(m.ColumnNum) && r.err == nil; i++ {
			c := &pglogrepl.RelationMessageColumn{}
			c.Flags = r.u8()
			c.Name = r.str()
			c.DataType = r.u32()
			c.TypeModifier = int32(r.u32())
			m.Columns = append(m.Columns, c)
		}
		msg = m
	case 'Y':
		m := &pglogrepl.TypeMessage{}
		m.DataType = r.u32()
		m.Namespace = r.str()
		m.Name = r.str()
		msg = m
	case 'T':
		m := &pglogrepl.TruncateMessage{}
		m.RelationNum = r.u32()
		m.Option = r.u8()
		m.RelationIDs = make([]uint32, 0, min(int(m.RelationNum), len(r.src)/4))
		for i := uint32(0); i < m.RelationNum && r.err == nil; i++ {
			m.RelationIDs = append(m.RelationIDs, r.u32())
		}
		msg = m
	case 'M':
		m := &pglogrepl.LogicalDecodingMessage{}
		m.Transactional = r.u8() == 1
		m.LSN = pglogrepl.LSN(r.u64())
		m.Prefix = r.str()
		m.Content = r.take(int(r.u32())) // aliases data
		msg = m
	default:
		return nil, fmt.Errorf("unknown message type %q", data[0])
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.src) != 0 {
		return nil, fmt.Errorf("%d bytes after the message", len(r.src))
	}
	return msg, nil
}

// msgReader reads big-endian fields; after the first short read it returns
// zeros and keeps errShort.
type msgReader struct {
	src []byte
	err error
}

func (r *msgReader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.src) {
		r.err = errShort
		return nil
	}
	b := r.src[:n:n]
	r.src = r.src[n:]
	return b
}

func (r *msgReader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *msgReader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *msgReader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *msgReader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// time reads a timestamp: microseconds since 2000-01-01 UTC.
func (r *msgReader) time() time.Time {
	return pgEpoch.Add(time.Duration(int64(r.u64())) * time.Microsecond)
}

// str reads a NUL-terminated string.
func (r *msgReader) str() string {
	if r.err != nil {
		return ""
	}
	i := bytes.IndexByte(r.src, 0)
	if i < 0 {
		r.err = errShort
		return ""
	}
	s := string(r.src[:i])
	r.src = r.src[i+1:]
	return s
}

// pgEpoch is where PostgreSQL's timestamps count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
