package replication

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/pgvalue"
)

// relation is what a Relation message told us of a table, plus its ordering
// key from the catalog.
type relation struct {
	schema, name string
	identity     byte // replica identity: d(efault), n(othing), f(ull), i(ndex)
	cols         []column
	keyCols      []int  // columns whose values group the table's rows in order; none: the whole table is one group
	table        string // "schema.name", the key of a truncate and the prefix of every row's key
	desc         *change.Relation
	hasIdentity  bool // some column is marked as replica identity
	// partialFull: a partitioned table with REPLICA IDENTITY FULL, one of
	// whose partitions has another identity (see nullsLogged).
	partialFull bool
}

type column struct {
	name     string
	jsonName []byte // `"name":`, written once
	oid      uint32
	typ      *pgvalue.Type
	identity bool // part of the replica identity
}

// tupleCol is one column of a tuple as pgoutput sent it.
type tupleCol = pgvalue.Datum

var errShort = errors.New("message truncated")

// parseTuple reads TupleData from src into dst (reusing its storage) and
// returns the number of bytes read. Data slices alias src.
func parseTuple(src []byte, dst []tupleCol) ([]tupleCol, int, error) {
	if len(src) < 2 {
		return dst, 0, errShort
	}
	n := int(binary.BigEndian.Uint16(src))
	off := 2
	dst = dst[:0]
	for i := 0; i < n; i++ {
		if off >= len(src) {
			return dst, 0, errShort
		}
		c := tupleCol{Kind: src[off]}
		off++
		switch c.Kind {
		case 'n', 'u':
		case 't', 'b':
			if len(src)-off < 4 {
				return dst, 0, errShort
			}
			l := int(binary.BigEndian.Uint32(src[off:]))
			off += 4
			if l < 0 || l > len(src)-off {
				return dst, 0, errShort
			}
			c.Data = src[off : off+l : off+l]
			off += l
		default:
			return dst, 0, fmt.Errorf("unknown tuple column kind %q", c.Kind)
		}
		dst = append(dst, c)
	}
	return dst, off, nil
}

// decoder turns pgoutput messages into events. It is not safe for
// concurrent use: one stream owns it.
type decoder struct {
	rels  map[uint32]*relation
	types *pgvalue.Types
	keys  func(ctx context.Context, relid uint32) ([]string, error) // primary key columns
	// partialFull, when set, tells whether relid is a partitioned table
	// with a partition whose identity is not FULL: relation.partialFull.
	partialFull func(ctx context.Context, relid uint32) (bool, error)
	prefixes    map[string]bool
	skip        map[string]bool // schemas whose changes are dropped

	inTx       bool
	commitLSN  pglogrepl.LSN
	commitTime time.Time
	xid        uint32
	idx        uint32

	newTup, oldTup    []tupleCol
	buf               []byte
	fields            []change.Field
	keyBuf, oldKeyBuf []byte
	values            pgvalue.Encoder
}

func newDecoder(types *pgvalue.Types, keys func(ctx context.Context, relid uint32) ([]string, error), prefixes []string, skipSchemas ...string) *decoder {
	d := &decoder{rels: map[uint32]*relation{}, types: types, keys: keys, prefixes: map[string]bool{}, skip: map[string]bool{}}
	for _, p := range prefixes {
		d.prefixes[p] = true
	}
	for _, s := range skipSchemas {
		d.skip[s] = true
	}
	return d
}

// heartbeatPrefix marks walhook's own pg_logical_emit_message heartbeats.
const heartbeatPrefix = "walhook.heartbeat"

// decode handles one pgoutput message. It calls emit for each event, in
// order. walStart is the XLogData's start, used only for messages sent
// outside a transaction.
func (d *decoder) decode(ctx context.Context, data []byte, walStart pglogrepl.LSN, serverTime time.Time, emit func(Event) error) error {
	if len(data) == 0 {
		return errShort
	}
	switch data[0] {
	case 'I', 'U', 'D':
		if !d.inTx {
			return fmt.Errorf("row change %q outside a transaction", data[0])
		}
		if len(data) >= 5 {
			if rel, ok := d.rels[binary.BigEndian.Uint32(data[1:])]; ok && d.skip[rel.schema] {
				d.idx++ // its place in the transaction stays taken
				return nil
			}
		}
		m, err := d.rowChange(data)
		if err != nil {
			return err
		}
		return emit(Event{Kind: EventChange, Msg: m})
	}

	msg, err := parseMessage(data)
	if err != nil {
		return fmt.Errorf("parse %q message: %w", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		d.inTx, d.commitLSN, d.commitTime, d.xid, d.idx = true, m.FinalLSN, m.CommitTime, m.Xid, 0
	case *pglogrepl.CommitMessage:
		if !d.inTx {
			return errors.New("commit outside a transaction")
		}
		d.inTx = false
		return emit(Event{Kind: EventCommit, LSN: m.TransactionEndLSN})
	case *pglogrepl.RelationMessage:
		return d.relation(ctx, m)
	case *pglogrepl.TypeMessage:
		// pgoutput sends one before a Relation message for each user type
		// the table uses; the Relation message reads them again.
	case *pglogrepl.TruncateMessage:
		if !d.inTx {
			return errors.New("truncate outside a transaction")
		}
		for _, id := range m.RelationIDs {
			rel, ok := d.rels[id]
			if !ok {
				return fmt.Errorf("truncate of relation %d before its Relation message", id)
			}
			if d.skip[rel.schema] {
				d.idx++
				continue
			}
			cm := d.newMessage(change.Truncate, rel)
			cm.Key = rel.table
			cm.Barrier = true // the table's rows travel in every lane
			if err := emit(Event{Kind: EventChange, Msg: cm}); err != nil {
				return err
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		return d.logicalMessage(m, walStart, serverTime, emit)
	case *pglogrepl.OriginMessage:
	}
	return nil
}

func (d *decoder) logicalMessage(m *pglogrepl.LogicalDecodingMessage, walStart pglogrepl.LSN, serverTime time.Time, emit func(Event) error) error {
	inTx := d.inTx && m.Transactional
	// A transactional message takes an index in its transaction whether
	// or not it is passed on: positions come from the WAL alone, so that a
	// change keeps its commit_idx when source.messages changes between two
	// runs (the skip after a restart compares positions).
	var idx uint32
	if inTx {
		idx = d.idx
		d.idx++
	}
	if m.Prefix == heartbeatPrefix {
		if !inTx && !d.inTx {
			return emit(Event{Kind: EventIdle, LSN: m.LSN})
		}
		return nil
	}
	if m.Prefix == WatermarkPrefix {
		if !inTx {
			return nil // walhook writes its watermarks inside transactions only
		}
		return emit(Event{Kind: EventWatermark, Msg: &change.Message{
			Action: change.Emitted, Prefix: m.Prefix, Content: append([]byte(nil), m.Content...),
			Pos: change.Position{CommitLSN: d.commitLSN, Idx: idx}, CommitTime: d.commitTime, XID: d.xid,
		}})
	}
	if !d.prefixes[m.Prefix] {
		return nil
	}
	cm := &change.Message{Action: change.Emitted, Prefix: m.Prefix, Key: "message:" + m.Prefix}
	cm.Content = appendContent(nil, m.Content)
	if inTx {
		cm.Pos = change.Position{CommitLSN: d.commitLSN, Idx: idx}
		cm.CommitTime, cm.XID = d.commitTime, d.xid
	} else {
		lsn := m.LSN
		if lsn == 0 {
			lsn = walStart
		}
		// pgoutput gives the end of the message's WAL record, which is where
		// the next record, perhaps a commit, begins: that transaction's
		// first change would have the same position. One byte earlier no
		// record begins (records are aligned), and the order is kept.
		if lsn > 0 {
			lsn--
		}
		cm.Pos = change.Position{CommitLSN: lsn}
		cm.CommitTime = serverTime
	}
	return emit(Event{Kind: EventChange, Msg: cm})
}

// appendContent appends a logical decoding message's payload: a JSON string
// when it is UTF-8 text, else {"base64": "..."}, so that binary content
// survives and cannot be mistaken for text.
func appendContent(b, content []byte) []byte {
	if utf8.Valid(content) {
		return pgvalue.AppendText(b, content)
	}
	b = append(b, `{"base64":"`...)
	b = base64.StdEncoding.AppendEncode(b, content)
	return append(b, `"}`...)
}

func (d *decoder) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	// pgoutput sends an empty namespace for pg_catalog (a user table
	// created there is publishable): name it.
	schema := m.Namespace
	if schema == "" {
		schema = "pg_catalog"
	}
	rel := &relation{
		schema:   schema,
		name:     m.RelationName,
		identity: m.ReplicaIdentity,
		table:    schema + "." + m.RelationName,
	}
	// A Relation message comes again after the table or a type it uses
	// changed: read user types afresh.
	d.types.ForgetUserTypes()
	rel.cols = make([]column, len(m.Columns))
	for i, c := range m.Columns {
		t, err := d.types.Lookup(ctx, c.DataType)
		if err != nil {
			return fmt.Errorf("relation %s column %s: %w", rel.table, c.Name, err)
		}
		rel.cols[i] = column{
			name:     c.Name,
			jsonName: append(change.AppendString(nil, c.Name), ':'),
			oid:      c.DataType,
			typ:      t,
			identity: c.Flags&1 != 0,
		}
	}
	// The replica identity (the primary key, or the index named by REPLICA
	// IDENTITY USING INDEX) is what a delete's old tuple and an update's
	// old key carry, so for DEFAULT and USING INDEX it is the only key
	// every message of a row can be grouped by. FULL marks every column as
	// identity and sends whole old rows; NOTHING publishes inserts only:
	// the primary key groups their rows.
	var keyNames []string
	if rel.identity != 'd' && rel.identity != 'i' && d.keys != nil {
		var err error
		if keyNames, err = d.keys(ctx, m.RelationID); err != nil {
			return fmt.Errorf("primary key of %s: %w", rel.table, err)
		}
	}
	names := make([]string, len(rel.cols))
	identity := make([]bool, len(rel.cols))
	for i, c := range rel.cols {
		names[i], identity[i] = c.name, c.identity
		rel.hasIdentity = rel.hasIdentity || c.identity
	}
	rel.keyCols = pgvalue.KeyColumns(rel.identity, names, identity, keyNames)
	if rel.identity == 'f' && d.partialFull != nil {
		var err error
		if rel.partialFull, err = d.partialFull(ctx, m.RelationID); err != nil {
			return fmt.Errorf("partitions of %s: %w", rel.table, err)
		}
	}
	rel.desc = &change.Relation{Schema: rel.schema, Name: rel.name, Table: rel.table, Identity: rel.identity, Columns: make([]change.Column, len(rel.cols)), Key: rel.keyCols}
	for i, c := range rel.cols {
		rel.desc.Columns[i] = change.Column{Name: c.name, Identity: c.identity}
	}
	d.rels[m.RelationID] = rel
	return nil
}

func (d *decoder) newMessage(a change.Action, rel *relation) *change.Message {
	m := &change.Message{
		Action:     a,
		Schema:     rel.schema,
		Table:      rel.name,
		Rel:        rel.desc,
		Pos:        change.Position{CommitLSN: d.commitLSN, Idx: d.idx},
		CommitTime: d.commitTime,
		XID:        d.xid,
	}
	d.idx++
	return m
}

// rowChange decodes an Insert, Update or Delete message.
func (d *decoder) rowChange(data []byte) (*change.Message, error) {
	typ := data[0]
	if len(data) < 6 {
		return nil, errShort
	}
	relid := binary.BigEndian.Uint32(data[1:])
	rel, ok := d.rels[relid]
	if !ok {
		return nil, fmt.Errorf("row change for relation %d before its Relation message", relid)
	}
	src := data[5:]
	var (
		oldKind byte
		err     error
		n       int
	)
	d.oldTup, d.newTup = d.oldTup[:0], d.newTup[:0]
	if typ != 'I' && (src[0] == 'K' || src[0] == 'O') {
		oldKind = src[0]
		if d.oldTup, n, err = parseTuple(src[1:], d.oldTup); err != nil {
			return nil, fmt.Errorf("%s: old tuple: %w", rel.table, err)
		}
		src = src[1+n:]
	}
	if typ != 'D' {
		if len(src) == 0 || src[0] != 'N' {
			return nil, fmt.Errorf("%s: new tuple missing", rel.table)
		}
		if d.newTup, n, err = parseTuple(src[1:], d.newTup); err != nil {
			return nil, fmt.Errorf("%s: new tuple: %w", rel.table, err)
		}
		src = src[1+n:]
		if len(d.newTup) != len(rel.cols) {
			return nil, fmt.Errorf("%s: tuple has %d columns, relation %d", rel.table, len(d.newTup), len(rel.cols))
		}
	} else if oldKind == 0 {
		return nil, fmt.Errorf("%s: delete without old tuple", rel.table)
	}
	if len(src) != 0 {
		return nil, fmt.Errorf("%s: %d bytes after the tuple", rel.table, len(src))
	}
	if oldKind != 0 && len(d.oldTup) != len(rel.cols) {
		return nil, fmt.Errorf("%s: old tuple has %d columns, relation %d", rel.table, len(d.oldTup), len(rel.cols))
	}

	var m *change.Message
	switch typ {
	case 'I':
		m = d.newMessage(change.Insert, rel)
		m.Record, m.RecordFields = d.record(rel, d.newTup, nil, 0, m)
		m.Key = d.key(rel, d.newTup, nil)
	case 'U':
		m = d.newMessage(change.Update, rel)
		m.Record, m.RecordFields = d.record(rel, d.newTup, d.oldTup, 0, m)
		m.Changes, m.ChangesFields = d.changes(rel, d.newTup, d.oldTup, oldKind)
		m.Key = d.key(rel, d.newTup, d.oldTup)
		// An update that moves a row to another key must not overtake the
		// old key's earlier changes, nor be overtaken by the new key's.
		if oldKind != 0 {
			d.oldKeyBuf = pgvalue.AppendKey(d.oldKeyBuf[:0], rel.table, rel.keyCols, d.oldTup, nil)
			m.Barrier = !bytes.Equal(d.oldKeyBuf, d.keyBuf)
		}
		// A key column sent as an unchanged TOASTed value without its old
		// value (PostgreSQL logs the old key when it is stored out of
		// line, so this should not happen) leaves the key unknown: order
		// the message against everything rather than guess its lane.
		if !pgvalue.KeyKnown(rel.keyCols, d.newTup, d.oldTup) {
			m.Barrier = true
		}
	case 'D':
		m = d.newMessage(change.Delete, rel)
		m.Record, m.RecordFields = d.record(rel, d.oldTup, nil, oldKind, m)
		if len(m.RecordFields) == 0 && len(rel.cols) > 0 {
			return nil, fmt.Errorf("delete from %s at %s: its old row holds no value PostgreSQL logged, so the message could not say which row was deleted; "+
				"walhook stops rather than send it. This is a bug: please report it with the definition of %s and of its partitions",
				rel.table, m.Pos, rel.table)
		}
		m.Key = d.key(rel, d.oldTup, nil)
	default:
		return nil, fmt.Errorf("unknown row change %q", typ)
	}
	return m, nil
}

// record writes a tuple as a JSON object. An unchanged TOASTed column is
// taken from old when old has its value (REPLICA IDENTITY FULL), otherwise
// left out and listed in m.UnchangedToast: never a placeholder that could
// pass for data. oldKind is 0 for a new row; for a delete's old row ('K' or
// 'O'), a NULL is written only where it is one (see nullsLogged).
func (d *decoder) record(rel *relation, tup, old []tupleCol, oldKind byte, m *change.Message) ([]byte, []change.Field) {
	b := append(d.buf[:0], '{')
	fields := d.fields[:0]
	first := true
	nulls := oldKind == 0 || nullsLogged(rel, oldKind, tup)
	for i, c := range tup {
		col := &rel.cols[i]
		if c.Kind == 'n' && !nulls && !rel.nullIsValue(i) {
			continue
		}
		if c.Kind == 'u' {
			if i < len(old) && (old[i].Kind == 't' || old[i].Kind == 'b') {
				c = old[i]
			} else {
				m.UnchangedToast = append(m.UnchangedToast, col.name)
				continue
			}
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, col.jsonName...)
		start := len(b)
		b = d.values.AppendDatum(b, col.typ, c)
		fields = append(fields, change.Field{Col: uint32(i), Start: uint32(start), End: uint32(len(b))})
	}
	b = append(b, '}')
	d.buf, d.fields = b, fields
	return append([]byte(nil), b...), append([]change.Field(nil), fields...)
}

// changes writes, for an update, the old values of the columns whose value
// changed. It needs an old tuple: FULL gives every column ('O'); DEFAULT and
// USING INDEX give the key columns when the key changed ('K'), and under a
// partitioned root, whatever the partition's own identity logged.
func (d *decoder) changes(rel *relation, newTup, oldTup []tupleCol, oldKind byte) ([]byte, []change.Field) {
	b := append(d.buf[:0], '{')
	fields := d.fields[:0]
	first := true
	nulls := nullsLogged(rel, oldKind, oldTup)
	for i := range oldTup {
		col := &rel.cols[i]
		o := oldTup[i]
		if (o.Kind == 'n' && !nulls && !rel.nullIsValue(i)) || o.Kind == 'u' || i >= len(newTup) {
			continue
		}
		n := newTup[i]
		if n.Kind == 'u' || (n.Kind == o.Kind && string(n.Data) == string(o.Data)) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, col.jsonName...)
		start := len(b)
		b = d.values.AppendDatum(b, col.typ, o)
		fields = append(fields, change.Field{Col: uint32(i), Start: uint32(start), End: uint32(len(b))})
	}
	b = append(b, '}')
	d.buf, d.fields = b, fields
	if len(fields) == 0 {
		return append([]byte(nil), b...), nil
	}
	return append([]byte(nil), b...), append([]change.Field(nil), fields...)
}

// nullsLogged reports whether the NULLs of an old tuple are values: the
// whole old row was logged. pgoutput writes the old row PostgreSQL logged
// for the table the change was made in, in the shape of the relation it
// describes: with publish_via_partition_root that is the root, whose own
// identity decides the kind ('O' when it is FULL, else 'K') and the
// identity flags, while the partition's identity decided what was logged.
// So a 'K' tuple holds the values the partition's identity logged (its key,
// or its whole row when it is FULL) and NULL for the rest, and a NULL
// there is a value only for an identity column (nullIsValue). An 'O' tuple
// is the whole row, unless the root is FULL and the partition is not
// (partialFull): then it is a 'K' tuple in all but name, and the root's
// flags, which mark every column, say nothing. Under a root that flags no
// identity column, or such a root, an old tuple of nothing but NULLs can
// only be the row of a FULL partition whose every value is NULL: a key or
// an identity index never is (its columns are NOT NULL).
func nullsLogged(rel *relation, oldKind byte, old []tupleCol) bool {
	switch {
	case oldKind == 'O' && !rel.partialFull:
		return true
	case oldKind == 'O':
	case oldKind != 'K' || rel.hasIdentity || len(old) == 0:
		return false
	}
	for _, c := range old {
		if c.Kind != 'n' {
			return false
		}
	}
	return true
}

// nullIsValue reports whether a NULL in column i of any old tuple is a
// value: the column is in the identity every partition logs.
func (r *relation) nullIsValue(i int) bool { return r.cols[i].identity && !r.partialFull }

// key groups a row's messages: the table and its key columns' values
// (pgvalue.AppendKey).
func (d *decoder) key(rel *relation, tup, old []tupleCol) string {
	d.keyBuf = pgvalue.AppendKey(d.keyBuf[:0], rel.table, rel.keyCols, tup, old)
	return string(d.keyBuf)
}
