package pgvalue

import "encoding/base64"

// Datum is one column's value as PostgreSQL sends it in text form: pgoutput's
// tuple columns, or a row a query read.
type Datum struct {
	// Kind is 'n' for NULL, 'u' for an unchanged TOASTed value (pgoutput
	// only), 't' for text and 'b' for binary.
	Kind byte
	Data []byte
}

// AppendDatum appends the JSON form of d, a value of type t: its text
// encoded by type, null for NULL, and binary data (which walhook never
// asks for) as {"base64": "..."}.
func (e *Encoder) AppendDatum(b []byte, t *Type, d Datum) []byte {
	switch d.Kind {
	case 't':
		return e.Append(b, t, d.Data)
	case 'b':
		b = append(b, `{"base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, d.Data)
		return append(b, `"}`...)
	default:
		return append(b, "null"...)
	}
}

// AppendKey appends the ordering key of a row to k: the table ("schema.name")
// and, for each of the key columns keyCols (indexes into row), a zero byte
// and the column's text. A key column whose value in row is an unchanged
// TOASTed one is taken from old, when old has it. Every message of a row,
// streamed or backfilled, carries this key, so equal keys mean the same row.
func AppendKey(k []byte, table string, keyCols []int, row, old []Datum) []byte {
	k = append(k, table...)
	for _, i := range keyCols {
		k = append(k, 0)
		c := row[i]
		if c.Kind == 'u' && i < len(old) {
			c = old[i]
		}
		switch c.Kind {
		case 't', 'b':
			k = append(k, c.Data...)
		case 'n':
			k = append(k, 1)
		default:
			k = append(k, 2)
		}
	}
	return k
}

// KeyKnown reports whether every key column of row has a value, in row or,
// for an unchanged TOASTed one, in old.
func KeyKnown(keyCols []int, row, old []Datum) bool {
	for _, i := range keyCols {
		if row[i].Kind == 'u' && (i >= len(old) || old[i].Kind == 'u') {
			return false
		}
	}
	return true
}

// KeyColumns returns the columns whose values group a table's rows in
// order, as indexes into names: for replica identity 'd' (default) and 'i'
// (an index), the identity columns (what a delete carries); for 'f' (full)
// and 'n' (nothing), the primary key pk. Nil (the whole table is one
// group) when the table has no such key, or when pk names a column that
// names lacks.
func KeyColumns(identity byte, names []string, isIdentity []bool, pk []string) []int {
	var cols []int
	switch identity {
	case 'd', 'i':
		for i := range names {
			if isIdentity[i] {
				cols = append(cols, i)
			}
		}
		return cols
	}
	for _, k := range pk {
		for i, n := range names {
			if n == k {
				cols = append(cols, i)
			}
		}
	}
	if len(cols) != len(pk) {
		return nil // the key changed since: group the table as one
	}
	return cols
}
