package state

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/change"
)

// The records below are how a store writes cursors, backlog entries and
// dead letters. Each starts with a version byte, so a later walhook can
// change a format and still read what an earlier one wrote; a decoder
// refuses a version it does not know. docs/design.md ("State") shows the
// byte layouts.
//
// Encoding appends to a caller's buffer and never fails: every field of
// change.Message is written as it is. Decoding checks every length against
// what is left, so a corrupt record is an error (wrapping ErrCorrupt) that
// names the field, never a panic or a huge allocation.
//
// Within a record, a "string" is a uvarint length and the bytes, a
// "nullable" byte slice or list is a uvarint of its length plus one, 0 for
// nil (a nil record is JSON null, an empty one is not), a position is the
// commit LSN (8 bytes) and the index (4), big-endian, and a time is the Unix
// second (zig-zag varint) and the microsecond within it (uvarint), in UTC.

// Record versions.
const (
	messageVersion    = 1
	entryVersion      = 1
	deadLetterVersion = 1
	cursorVersion     = 1
	backfillVersion   = 1
)

// PositionLen is the length of an encoded position.
const PositionLen = 8 + 4

// Cursor records: a version byte and the position, 13 bytes. Version 2
// adds when the sink was removed, as microseconds since the Unix epoch (8
// bytes, big-endian), 21 bytes; it is written only for a removed sink, so
// a walhook from before version 2 reads the cursors of configured sinks.
// Files written before the version byte hold 20 bytes: the position and a
// flush LSN that is no longer read.
const (
	cursorLen        = 1 + PositionLen
	removedCursorLen = cursorLen + 8
	legacyCursorLen  = PositionLen + 8
	removedCursorTag = 2
)

// AppendPosition appends p as 12 bytes, big-endian, so that byte order is
// position order: a store's keys.
func AppendPosition(b []byte, p change.Position) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(p.CommitLSN))
	return binary.BigEndian.AppendUint32(b, p.Idx)
}

// DecodePosition decodes what AppendPosition wrote.
func DecodePosition(b []byte) (change.Position, error) {
	if len(b) != PositionLen {
		return change.Position{}, fmt.Errorf("%w: position of %d bytes, want %d", ErrCorrupt, len(b), PositionLen)
	}
	return position(b), nil
}

func position(b []byte) change.Position {
	return change.Position{CommitLSN: pglogrepl.LSN(binary.BigEndian.Uint64(b)), Idx: binary.BigEndian.Uint32(b[8:])}
}

// AppendCursor appends c's record.
func AppendCursor(b []byte, c Cursor) []byte {
	if c.Removed.IsZero() {
		b = append(b, cursorVersion)
		return AppendPosition(b, c.Acked)
	}
	b = append(b, removedCursorTag)
	b = AppendPosition(b, c.Acked)
	return binary.BigEndian.AppendUint64(b, uint64(c.Removed.UnixMicro()))
}

// DecodeCursor decodes a cursor record, also the 20-byte form of the state
// files written before records had a version.
func DecodeCursor(b []byte) (Cursor, error) {
	switch {
	case len(b) == legacyCursorLen:
		return Cursor{Acked: position(b)}, nil
	case len(b) == cursorLen && b[0] == cursorVersion:
		return Cursor{Acked: position(b[1:])}, nil
	case len(b) == removedCursorLen && b[0] == removedCursorTag:
		us := int64(binary.BigEndian.Uint64(b[cursorLen:]))
		if us <= 0 {
			return Cursor{}, fmt.Errorf("%w: cursor of a sink removed at %d µs since 1970", ErrCorrupt, us)
		}
		return Cursor{Acked: position(b[1:]), Removed: time.UnixMicro(us).UTC()}, nil
	}
	return Cursor{}, fmt.Errorf("%w: cursor of %d bytes, want a version %d record of %d (or version %d of %d): the state is corrupt or from a newer walhook", ErrCorrupt, len(b), cursorVersion, cursorLen, removedCursorTag, removedCursorLen)
}

// FormatID is the ID of a sink's n-th dead letter: 16 lower-case hex
// digits, so that IDs sort in creation order as strings.
func FormatID(n uint64) string {
	var b [16]byte
	const digits = "0123456789abcdef"
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

// ParseID returns the number FormatID made id from; ok is false for any
// other string.
func ParseID(id string) (n uint64, ok bool) {
	if len(id) != 16 {
		return 0, false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
			n = n<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			n = n<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

// Action codes, fixed by the record format (not taken from the order of
// change.Actions, which may change); 0 is an action outside this list,
// written as a string.
var actions = [...]change.Action{1: change.Insert, 2: change.Update, 3: change.Delete, 4: change.Truncate, 5: change.Read, 6: change.Emitted}

func actionCode(a change.Action) byte {
	for i := 1; i < len(actions); i++ {
		if actions[i] == a {
			return byte(i)
		}
	}
	return 0
}

const (
	flagBarrier  = 1 << 0
	flagBackfill = 1 << 1 // a BackfillID follows the Key
	knownFlags   = flagBarrier | flagBackfill
)

// AppendMessage appends m's record:
//
//	version 1, action code (1 insert, 2 update, 3 delete, 4 truncate,
//	5 read, 6 message; 0: a string follows), flags (bit 0: Barrier, bit 1:
//	BackfillID), [action string], Schema, Table,
//	nullable Rel (see appendRelation), nullable Record, nullable
//	RecordFields (Col, Start, End as uvarints), nullable Changes,
//	nullable ChangesFields, nullable UnchangedToast (strings), Prefix,
//	nullable Content, Pos, CommitTime, XID (uvarint), Key, [BackfillID]
func AppendMessage(b []byte, m *change.Message) []byte {
	code := actionCode(m.Action)
	var flags byte
	if m.Barrier {
		flags |= flagBarrier
	}
	if m.BackfillID != "" {
		flags |= flagBackfill
	}
	b = append(b, messageVersion, code, flags)
	if code == 0 {
		b = appendString(b, string(m.Action))
	}
	b = appendString(b, m.Schema)
	b = appendString(b, m.Table)
	b = appendRelation(b, m.Rel)
	b = appendNullable(b, m.Record)
	b = appendFields(b, m.RecordFields)
	b = appendNullable(b, m.Changes)
	b = appendFields(b, m.ChangesFields)
	if m.UnchangedToast == nil {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(m.UnchangedToast))+1)
		for _, c := range m.UnchangedToast {
			b = appendString(b, c)
		}
	}
	b = appendString(b, m.Prefix)
	b = appendNullable(b, m.Content)
	b = AppendPosition(b, m.Pos)
	b = appendTime(b, m.CommitTime)
	b = binary.AppendUvarint(b, uint64(m.XID))
	b = appendString(b, m.Key)
	if m.BackfillID != "" {
		b = appendString(b, m.BackfillID)
	}
	return b
}

// appendRelation writes a nullable blob (uvarint length plus one, 0 for
// nil) holding Schema, Name, Table, Identity (one byte), the number of
// columns (uvarint) and each column's Name and Identity (one byte, 0 or 1).
// The blob's bytes identify the relation, so a decoder can share one
// *Relation between the messages of a table.
func appendRelation(b []byte, r *change.Relation) []byte {
	if r == nil {
		return append(b, 0)
	}
	n := 0
	for _, s := range []string{r.Schema, r.Name, r.Table} {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	n += 1 + uvarintLen(uint64(len(r.Columns)))
	for _, c := range r.Columns {
		n += uvarintLen(uint64(len(c.Name))) + len(c.Name) + 1
	}
	b = binary.AppendUvarint(b, uint64(n)+1)
	b = appendString(b, r.Schema)
	b = appendString(b, r.Name)
	b = appendString(b, r.Table)
	b = append(b, r.Identity)
	b = binary.AppendUvarint(b, uint64(len(r.Columns)))
	for _, c := range r.Columns {
		b = appendString(b, c.Name)
		if c.Identity {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

// AppendEntry appends e's record: version 1, flags (bit 0: Barrier), Group
// (8 bytes, big-endian), then e.Msg's record to the end.
func AppendEntry(b []byte, e Entry) []byte {
	var flags byte
	if e.Barrier {
		flags |= flagBarrier
	}
	b = append(b, entryVersion, flags)
	b = binary.BigEndian.AppendUint64(b, e.Group)
	return AppendMessage(b, e.Msg)
}

// AppendDeadLetter appends d's record (its ID is the store's key, not part
// of it): version 1, Reason, Attempts and LastStatus (zig-zag varints),
// LastError, FirstAttempt, LastAttempt, Created, Count (uvarint), First,
// Last, then each entry as a uvarint length and its entry record. The
// header comes first, so a list can read it alone. Count, First and Last
// are written from d.Entries.
func AppendDeadLetter(b []byte, d *DeadLetter) []byte {
	b = append(b, deadLetterVersion)
	b = appendString(b, d.Reason)
	b = binary.AppendVarint(b, int64(d.Attempts))
	b = binary.AppendVarint(b, int64(d.LastStatus))
	b = appendString(b, d.LastError)
	b = appendTime(b, d.FirstAttempt)
	b = appendTime(b, d.LastAttempt)
	b = appendTime(b, d.Created)
	b = binary.AppendUvarint(b, uint64(len(d.Entries)))
	var first, last change.Position
	if len(d.Entries) > 0 {
		first, last = d.Entries[0].Msg.Pos, d.Entries[len(d.Entries)-1].Msg.Pos
	}
	b = AppendPosition(b, first)
	b = AppendPosition(b, last)
	for _, e := range d.Entries {
		// The length goes before the record: write the record after room
		// for the longest uvarint, then move it back.
		at := len(b)
		b = append(b, make([]byte, binary.MaxVarintLen64)...)
		b = AppendEntry(b, e)
		n := len(b) - at - binary.MaxVarintLen64
		w := binary.PutUvarint(b[at:], uint64(n))
		copy(b[at+w:], b[at+binary.MaxVarintLen64:])
		b = b[:at+w+n]
	}
	return b
}

// AppendBackfill appends bf's record: version 1, ID, Sink, Where, State,
// Error, Created, Updated, the number of tables (uvarint) and per table its
// name, Key (nullable), Rows and Estimate (zig-zag varints) and Done (a
// byte, 0 or 1).
func AppendBackfill(b []byte, bf *Backfill) []byte {
	b = append(b, backfillVersion)
	b = appendString(b, bf.ID)
	b = appendString(b, bf.Sink)
	b = appendString(b, bf.Where)
	b = appendString(b, bf.State)
	b = appendString(b, bf.Error)
	b = appendTime(b, bf.Created)
	b = appendTime(b, bf.Updated)
	b = binary.AppendUvarint(b, uint64(len(bf.Tables)))
	for _, t := range bf.Tables {
		b = appendString(b, t.Table)
		b = appendNullable(b, t.Key)
		b = binary.AppendVarint(b, t.Rows)
		b = binary.AppendVarint(b, t.Estimate)
		if t.Done {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

// DecodeBackfill decodes what AppendBackfill wrote. The result owns its
// memory.
func DecodeBackfill(b []byte) (Backfill, error) {
	r := reader{kind: "backfill", b: b}
	if v := r.byte("version"); r.err == nil && v != backfillVersion {
		r.version(v, backfillVersion)
	}
	var bf Backfill
	bf.ID = r.string("id")
	bf.Sink = r.string("sink")
	bf.Where = r.string("where")
	bf.State = r.string("state")
	bf.Error = r.string("error")
	bf.Created = r.time("created")
	bf.Updated = r.time("updated")
	// A table takes at least 5 bytes: name length, key, rows, estimate, done.
	n := r.count("tables", 5)
	for i := 0; i < n && r.err == nil; i++ {
		what := "table " + strconv.Itoa(i)
		var t BackfillTable
		t.Table = r.string(what + " name")
		if k := r.nullable(what + " key"); k != nil {
			t.Key = append([]byte{}, k...)
		}
		t.Rows = r.varint(what + " rows")
		t.Estimate = r.varint(what + " estimate")
		switch d := r.byte(what + " done"); {
		case r.err != nil:
		case d > 1:
			r.fail(what+" done", "%d, want 0 or 1", d)
		default:
			t.Done = d == 1
		}
		bf.Tables = append(bf.Tables, t)
	}
	if r.err == nil && r.off != len(b) {
		r.fail("end", "%d bytes after the last table", len(b)-r.off)
	}
	if r.err != nil {
		return Backfill{}, r.err
	}
	return bf, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendNullable(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

func appendFields(b []byte, fs []change.Field) []byte {
	if fs == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(fs))+1)
	for _, f := range fs {
		b = binary.AppendUvarint(b, uint64(f.Col))
		b = binary.AppendUvarint(b, uint64(f.Start))
		b = binary.AppendUvarint(b, uint64(f.End))
	}
	return b
}

// appendTime writes t in UTC to the microsecond; the zero time stays zero.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()/1000))
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// CheckMessage reports what would make m's record fail to decode: a field
// that lies outside its Record or Changes, or names a column its relation
// lacks. The decoder checks the same, so code that reads a decoded message
// may index with its fields; stores check every message before they write
// it, so that nothing they accept becomes unreadable.
func CheckMessage(m *change.Message) error {
	if m == nil {
		return fmt.Errorf("no message")
	}
	if err := checkFields("record", m.Record, m.RecordFields, m.Rel); err != nil {
		return err
	}
	return checkFields("changes", m.Changes, m.ChangesFields, m.Rel)
}

func checkFields(what string, raw []byte, fs []change.Field, rel *change.Relation) error {
	for i, f := range fs {
		if f.Start > f.End || int64(f.End) > int64(len(raw)) {
			return fmt.Errorf("%s field %d spans %d:%d of a %d-byte %s", what, i, f.Start, f.End, len(raw), what)
		}
		if rel != nil && int64(f.Col) >= int64(len(rel.Columns)) {
			return fmt.Errorf("%s field %d is column %d of a relation with %d columns", what, i, f.Col, len(rel.Columns))
		}
	}
	return nil
}

// Decoder decodes records. Decoded messages own their memory (nothing
// points into the record, which a store may reuse), and the messages of one
// relation decoded by the same Decoder share one *change.Relation, as they
// did before they were stored, which keeps per-relation caches (the
// router's) warm. The zero Decoder is ready to use; it is not safe for
// concurrent use.
type Decoder struct {
	rels map[string]*change.Relation
}

// maxRelations bounds a Decoder's relation cache.
const maxRelations = 256

// Message decodes a record AppendMessage wrote.
func (d *Decoder) Message(b []byte) (*change.Message, error) {
	r := reader{kind: "message", b: b}
	m := d.message(&r)
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// Entry decodes a record AppendEntry wrote.
func (d *Decoder) Entry(b []byte) (Entry, error) {
	r := reader{kind: "entry", b: b}
	e := d.entry(&r)
	if r.err != nil {
		return Entry{}, r.err
	}
	return e, nil
}

// entry reads an entry record to the end of r.
func (d *Decoder) entry(r *reader) Entry {
	if v := r.byte("version"); r.err == nil && v != entryVersion {
		r.version(v, entryVersion)
	}
	flags := r.byte("flags")
	if r.err == nil && flags&^knownFlags != 0 {
		r.fail("flags", "unknown flags %#x", flags)
	}
	group := r.uint64("group")
	m := d.message(r)
	if r.err != nil {
		return Entry{}
	}
	return Entry{Msg: m, Group: group, Barrier: flags&flagBarrier != 0}
}

// DeadLetter decodes a record AppendDeadLetter wrote; id becomes its ID.
// Without entries it reads the header alone and leaves Entries nil.
func (d *Decoder) DeadLetter(id string, b []byte, entries bool) (DeadLetter, error) {
	r := reader{kind: "dead letter", b: b}
	if v := r.byte("version"); r.err == nil && v != deadLetterVersion {
		r.version(v, deadLetterVersion)
	}
	dl := DeadLetter{ID: id}
	dl.Reason = r.string("reason")
	dl.Attempts = r.int("attempts")
	dl.LastStatus = r.int("last status")
	dl.LastError = r.string("last error")
	dl.FirstAttempt = r.time("first attempt")
	dl.LastAttempt = r.time("last attempt")
	dl.Created = r.time("created")
	n := r.count("count", 1)
	dl.Count = n
	dl.First = r.position("first")
	dl.Last = r.position("last")
	switch {
	case r.err != nil:
	case n == 0 && (dl.First != change.Position{} || dl.Last != change.Position{}):
		r.fail("first", "no entries, but the header says %s to %s", dl.First, dl.Last)
	case n > 0 && dl.Last.Less(dl.First):
		r.fail("first", "the header says %s to %s", dl.First, dl.Last)
	}
	if r.err != nil {
		return DeadLetter{}, r.err
	}
	if !entries {
		return dl, nil
	}
	dl.Entries = make([]Entry, 0, n)
	for i := 0; i < n; i++ {
		what := "entry " + strconv.Itoa(i)
		l := r.length(what + " length")
		if r.err != nil {
			return DeadLetter{}, r.err
		}
		er := reader{kind: "dead letter " + what, b: r.b[r.off : r.off+l], base: r.base + r.off}
		e := d.entry(&er)
		if er.err != nil {
			return DeadLetter{}, er.err
		}
		r.off += l
		dl.Entries = append(dl.Entries, e)
	}
	if r.off != len(b) {
		r.fail("end", "%d bytes after the last entry", len(b)-r.off)
	} else if n > 0 && (dl.Entries[0].Msg.Pos != dl.First || dl.Entries[n-1].Msg.Pos != dl.Last) {
		r.fail("first", "the header says %s to %s, the entries hold %s to %s", dl.First, dl.Last, dl.Entries[0].Msg.Pos, dl.Entries[n-1].Msg.Pos)
	}
	if r.err != nil {
		return DeadLetter{}, r.err
	}
	return dl, nil
}

// message reads a message record to the end of r.
func (d *Decoder) message(r *reader) *change.Message {
	if r.err != nil {
		return nil
	}
	// The message owns a copy of its record, and its byte slices point into
	// it, capped so that an append to one cannot overwrite another.
	mr := &reader{kind: r.kind, b: append([]byte(nil), r.b[r.off:]...), base: r.base + r.off}
	m := d.decodeMessage(mr)
	if mr.err == nil && mr.off != len(mr.b) {
		mr.fail("end", "%d bytes after the message", len(mr.b)-mr.off)
	}
	if mr.err != nil {
		r.err = mr.err
		return nil
	}
	r.off = len(r.b)
	return m
}

func (d *Decoder) decodeMessage(r *reader) *change.Message {
	if v := r.byte("version"); r.err == nil && v != messageVersion {
		r.version(v, messageVersion)
	}
	code := r.byte("action")
	flags := r.byte("flags")
	if r.err != nil {
		return nil
	}
	if flags&^knownFlags != 0 {
		r.fail("flags", "unknown flags %#x", flags)
		return nil
	}
	m := &change.Message{Barrier: flags&flagBarrier != 0}
	switch {
	case code == 0:
		m.Action = change.Action(r.string("action"))
	case int(code) < len(actions):
		m.Action = actions[code]
	default:
		r.fail("action", "unknown action code %d", code)
	}
	schema := r.bytes("schema")
	table := r.bytes("table")
	m.Rel = d.relation(r)
	if m.Rel != nil && string(schema) == m.Rel.Schema {
		m.Schema = m.Rel.Schema // shared, not allocated again
	} else {
		m.Schema = string(schema)
	}
	if m.Rel != nil && string(table) == m.Rel.Name {
		m.Table = m.Rel.Name
	} else {
		m.Table = string(table)
	}
	m.Record = r.nullable("record")
	m.RecordFields = r.fields("record fields")
	m.Changes = r.nullable("changes")
	m.ChangesFields = r.fields("changes fields")
	if n := r.nullableCount("unchanged toast", 1); n >= 0 {
		m.UnchangedToast = make([]string, n)
		for i := range m.UnchangedToast {
			m.UnchangedToast[i] = r.string("unchanged toast")
		}
	}
	m.Prefix = r.string("prefix")
	m.Content = r.nullable("content")
	m.Pos = r.position("position")
	m.CommitTime = r.time("commit time")
	if x := r.uvarint("xid"); x > 1<<32-1 {
		r.fail("xid", "%d does not fit in 32 bits", x)
	} else {
		m.XID = uint32(x)
	}
	m.Key = r.string("key")
	if flags&flagBackfill != 0 {
		m.BackfillID = r.string("backfill id")
	}
	if r.err != nil {
		return nil
	}
	if err := CheckMessage(m); err != nil {
		r.fail("fields", "%v", err)
		return nil
	}
	return m
}

func (d *Decoder) relation(r *reader) *change.Relation {
	n := r.nullableLength("relation")
	if n < 0 || r.err != nil {
		return nil
	}
	blob := r.b[r.off : r.off+n]
	r.off += n
	if rel, ok := d.rels[string(blob)]; ok {
		return rel
	}
	rr := reader{kind: r.kind, b: blob, base: r.base + r.off - n}
	rel := &change.Relation{}
	rel.Schema = rr.string("relation schema")
	rel.Name = rr.string("relation name")
	rel.Table = rr.string("relation table")
	rel.Identity = rr.byte("relation identity")
	ncols := rr.count("relation columns", 2)
	if rr.err == nil {
		rel.Columns = make([]change.Column, ncols)
		for i := range rel.Columns {
			rel.Columns[i].Name = rr.string("column name")
			switch id := rr.byte("column identity"); {
			case rr.err != nil:
			case id > 1:
				rr.fail("column identity", "%d, want 0 or 1", id)
			default:
				rel.Columns[i].Identity = id == 1
			}
		}
	}
	if rr.err == nil && rr.off != len(blob) {
		rr.fail("relation", "%d bytes after its columns", len(blob)-rr.off)
	}
	if rr.err != nil {
		r.err = rr.err
		return nil
	}
	if d.rels == nil || len(d.rels) >= maxRelations {
		d.rels = make(map[string]*change.Relation)
	}
	d.rels[string(blob)] = rel
	return rel
}

// reader reads a record, remembering the first problem.
type reader struct {
	kind string // "message", "entry", ...
	b    []byte
	off  int
	base int // where b starts in the whole record, for errors
	err  error
}

func (r *reader) fail(field, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s record, %s at byte %d of %d: %s", ErrCorrupt, r.kind, field, r.base+r.off, r.base+len(r.b), fmt.Sprintf(format, args...))
	}
}

func (r *reader) version(got, want byte) {
	r.fail("version", "version %d, want %d: the state is corrupt or from a newer walhook", got, want)
}

func (r *reader) byte(field string) byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail(field, "the record ends")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uint64(field string) uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b)-r.off < 8 {
		r.fail(field, "the record ends")
		return 0
	}
	v := binary.BigEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

func (r *reader) position(field string) change.Position {
	if r.err != nil {
		return change.Position{}
	}
	if len(r.b)-r.off < PositionLen {
		r.fail(field, "the record ends")
		return change.Position{}
	}
	p := position(r.b[r.off:])
	r.off += PositionLen
	return p
}

func (r *reader) uvarint(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail(field, "bad uvarint")
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint(field string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail(field, "bad varint")
		return 0
	}
	r.off += n
	return v
}

func (r *reader) int(field string) int {
	v := r.varint(field)
	if int64(int(v)) != v {
		r.fail(field, "%d does not fit in an int", v)
		return 0
	}
	return int(v)
}

// length reads a length that must fit in what is left.
func (r *reader) length(field string) int {
	v := r.uvarint(field)
	if r.err == nil && v > uint64(len(r.b)-r.off) {
		r.fail(field, "length %d, but %d bytes are left", v, len(r.b)-r.off)
		return 0
	}
	return int(v)
}

// nullableLength reads a nullable length: -1 for nil.
func (r *reader) nullableLength(field string) int {
	v := r.uvarint(field)
	if r.err != nil || v == 0 {
		return -1
	}
	if v-1 > uint64(len(r.b)-r.off) {
		r.fail(field, "length %d, but %d bytes are left", v-1, len(r.b)-r.off)
		return -1
	}
	return int(v - 1)
}

// count reads a number of items, each at least least bytes long, that must
// fit in what is left.
func (r *reader) count(field string, least int) int {
	v := r.uvarint(field)
	if r.err == nil && v > uint64((len(r.b)-r.off)/least) {
		r.fail(field, "%d items, but %d bytes are left", v, len(r.b)-r.off)
		return 0
	}
	return int(v)
}

// nullableCount reads a nullable count: -1 for nil.
func (r *reader) nullableCount(field string, least int) int {
	v := r.uvarint(field)
	if r.err != nil || v == 0 {
		return -1
	}
	if v-1 > uint64((len(r.b)-r.off)/least) {
		r.fail(field, "%d items, but %d bytes are left", v-1, len(r.b)-r.off)
		return -1
	}
	return int(v - 1)
}

func (r *reader) bytes(field string) []byte {
	n := r.length(field)
	if r.err != nil {
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

func (r *reader) string(field string) string { return string(r.bytes(field)) }

func (r *reader) nullable(field string) []byte {
	n := r.nullableLength(field)
	if n < 0 {
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// fields reads a nullable list of fields, each three uvarints.
func (r *reader) fields(field string) []change.Field {
	n := r.nullableCount(field, 3)
	if n < 0 {
		return nil
	}
	fs := make([]change.Field, n)
	for i := range fs {
		col, start, end := r.uvarint(field), r.uvarint(field), r.uvarint(field)
		if col > 1<<32-1 || start > 1<<32-1 || end > 1<<32-1 {
			r.fail(field, "a value does not fit in 32 bits")
		}
		if r.err != nil {
			return nil
		}
		fs[i] = change.Field{Col: uint32(col), Start: uint32(start), End: uint32(end)}
	}
	return fs
}

func (r *reader) time(field string) time.Time {
	sec := r.varint(field)
	us := r.uvarint(field)
	if r.err != nil {
		return time.Time{}
	}
	if us >= 1e6 {
		r.fail(field, "%d microseconds, want fewer than 1000000", us)
		return time.Time{}
	}
	return time.Unix(sec, int64(us)*1000).UTC()
}
