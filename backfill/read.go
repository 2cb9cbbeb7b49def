package backfill

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/pgvalue"
)

// A keyset position is the text of the primary key values of the last row
// read: each value as a uvarint length and its bytes. nil is the start of
// the table.

func encodeKey(vals [][]byte) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

func decodeKey(b []byte, n int) ([][]byte, error) {
	vals := make([][]byte, 0, n)
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, errors.New("corrupt keyset position")
		}
		vals = append(vals, b[k:k+int(l)])
		b = b[k+int(l):]
	}
	if len(vals) != n {
		return nil, fmt.Errorf("keyset position has %d values, the primary key %d columns: the key changed since the backfill started", len(vals), n)
	}
	return vals, nil
}

// query is the statement that reads the chunk after a keyset position
// (after: whether there is one), in primary key order, of the rows the
// publication's row filter and where select.
func (t *Table) query(where string, after bool, limit int) string {
	var q strings.Builder
	q.WriteString("SELECT ")
	for i, c := range t.cols {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(quoteIdent(c.name))
	}
	q.WriteString(" FROM ")
	q.WriteString(t.Name.Quoted())
	var conds []string
	if after {
		var cols, params []string
		for i, c := range t.pk {
			cols = append(cols, quoteIdent(t.cols[c].name))
			params = append(params, "$"+strconv.Itoa(i+1)+"::"+t.cols[c].sqlType)
		}
		conds = append(conds, "("+strings.Join(cols, ", ")+") > ("+strings.Join(params, ", ")+")")
	}
	if t.filter != "" {
		conds = append(conds, "("+t.filter+")")
	}
	if where != "" {
		conds = append(conds, "("+where+")")
	}
	if len(conds) > 0 {
		q.WriteString(" WHERE ")
		q.WriteString(strings.Join(conds, " AND "))
	}
	q.WriteString(" ORDER BY ")
	for i, c := range t.pk {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(quoteIdent(t.cols[c].name))
	}
	q.WriteString(" LIMIT ")
	q.WriteString(strconv.Itoa(limit))
	return q.String()
}

// CheckWhere checks that where is one boolean expression over t's
// columns and nothing else: lexically (checkExpression), then by the
// server, through the extended protocol in a read-only transaction. An
// error wrapping ErrInvalid says what is wrong.
func (t *Table) CheckWhere(ctx context.Context, conn *pgx.Conn, where string) error {
	if where == "" {
		return nil
	}
	if err := checkExpression(where, conn.PgConn().ParameterStatus("standard_conforming_strings") != "off"); err != nil {
		return fmt.Errorf("%w: --where %q: %v", ErrInvalid, where, err)
	}
	var notBool string
	err := readOnly(ctx, conn, func() error {
		// The expression alone, as the one column of a statement the
		// server prepares but does not run: one statement, its type.
		sd, err := conn.PgConn().Prepare(ctx, "", "SELECT ("+where+") FROM "+t.Name.Quoted(), nil)
		if err != nil {
			return err
		}
		if len(sd.Fields) != 1 || sd.Fields[0].DataTypeOID != pgtype.BoolOID {
			notBool = "not one value"
			if len(sd.Fields) == 1 {
				return conn.QueryRow(ctx, "SELECT format_type($1, NULL)", sd.Fields[0].DataTypeOID).Scan(&notBool)
			}
			return nil
		}
		// The chunk's query, run for its first row under a time bound: a
		// condition the server refuses only when it runs it (a function
		// that writes) is refused now rather than fail the backfill.
		// One that takes longer is left to the backfill.
		if _, err := conn.Exec(ctx, "SELECT set_config('statement_timeout', $1, true)", whereTrialTimeout); err != nil {
			return err
		}
		_, err = conn.PgConn().ExecParams(ctx, t.query(where, false, 1), nil, nil, nil, nil).Close()
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "57014" /* query_canceled: the time bound */ && ctx.Err() == nil {
			return nil
		}
		return err
	})
	switch {
	case err == nil && notBool != "":
		return fmt.Errorf("%w: --where %q on %s is of type %s; it must be a condition (a boolean expression such as status = 'open')", ErrInvalid, where, t.Name, notBool)
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case interrupted(err):
		return fmt.Errorf("check --where on %s: %w", t.Name, err)
	}
	return fmt.Errorf("%w: --where %q on %s: %v", ErrInvalid, where, t.Name, err)
}

// whereTrialTimeout bounds CheckWhere's run of the chunk query.
const whereTrialTimeout = "2s"

// chunk is one read: its rows as read messages (positions not yet set),
// the keyset position after its last row, and whether the table ends
// with it.
type chunk struct {
	msgs  []*change.Message
	key   []byte // nil when no row was read
	bytes int
	last  bool
	snap  Snapshot // the query's
}

// read reads up to limit rows after key, stopping early once maxBytes of
// records are read, in a short repeatable-read, read-only transaction of
// its own that first records its snapshot (pg_current_snapshot()), so the
// chunk knows which transactions its rows include. The transaction is
// rolled back, never committed: a condition cannot leave anything behind.
func (t *Table) read(ctx context.Context, conn *pgx.Conn, backfillID, where string, key []byte, limit, maxBytes int) (chunk, error) {
	var params [][]byte
	if key != nil {
		var err error
		if params, err = decodeKey(key, len(t.pk)); err != nil {
			return chunk{}, fmt.Errorf("%s: %w", t.Name, err)
		}
	}
	tx, err := beginReadOnlySnapshot(ctx, conn)
	if err != nil {
		return chunk{}, fmt.Errorf("read %s: %w", t.Name, err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }() // after the one below, a no-op
	var snapText string
	if err := tx.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&snapText); err != nil {
		return chunk{}, fmt.Errorf("read %s: its snapshot: %w", t.Name, err)
	}
	snap, err := ParseSnapshot(snapText)
	if err != nil {
		return chunk{}, fmt.Errorf("read %s: %w", t.Name, err)
	}
	c, err := t.readRows(ctx, conn, backfillID, where, key != nil, params, limit, maxBytes)
	if err != nil {
		return chunk{}, err
	}
	if err := tx.Rollback(ctx); err != nil { // read-only: nothing to commit
		return chunk{}, fmt.Errorf("read %s: %w", t.Name, err)
	}
	c.snap = snap
	return c, nil
}

// readRows runs the chunk's query.
func (t *Table) readRows(ctx context.Context, conn *pgx.Conn, backfillID, where string, after bool, params [][]byte, limit, maxBytes int) (chunk, error) {
	rr := conn.PgConn().ExecParams(ctx, t.query(where, after, limit), params, nil, nil, nil)
	var (
		c      chunk
		enc    pgvalue.Encoder
		datums = make([]pgvalue.Datum, len(t.cols))
		buf    []byte
		fields []change.Field
		keyBuf []byte
		n      int
		lastPK [][]byte
	)
	for rr.NextRow() {
		n++
		if c.bytes >= maxBytes {
			continue // over the bound: the rest is read again with the next chunk
		}
		vals := rr.Values()
		if len(vals) != len(t.cols) {
			rr.Close()
			return chunk{}, fmt.Errorf("%s: got %d columns, want %d", t.Name, len(vals), len(t.cols))
		}
		buf = append(buf[:0], '{')
		fields = fields[:0]
		for i, v := range vals {
			d := pgvalue.Datum{Kind: 't', Data: v}
			if v == nil {
				d.Kind = 'n'
			}
			datums[i] = d
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, t.cols[i].jsonName...)
			start := len(buf)
			buf = enc.AppendDatum(buf, t.cols[i].typ, d)
			fields = append(fields, change.Field{Col: uint32(i), Start: uint32(start), End: uint32(len(buf))})
		}
		buf = append(buf, '}')
		keyBuf = pgvalue.AppendKey(keyBuf[:0], t.rel.Table, t.keyCols, datums, nil)
		c.msgs = append(c.msgs, &change.Message{
			Action: change.Read, Schema: t.Name.Schema, Table: t.Name.Name, Rel: t.rel,
			Record: append([]byte(nil), buf...), RecordFields: append([]change.Field(nil), fields...),
			Key: string(keyBuf), BackfillID: backfillID,
		})
		c.bytes += len(buf)
		lastPK = lastPK[:0]
		for _, i := range t.pk {
			lastPK = append(lastPK, vals[i])
		}
		c.key = encodeKey(lastPK)
	}
	if _, err := rr.Close(); err != nil {
		return chunk{}, fmt.Errorf("read %s: %w", t.Name, err)
	}
	c.last = n < limit
	if len(c.msgs) < n {
		c.last = false // cut short by the byte bound
	}
	return c, nil
}
