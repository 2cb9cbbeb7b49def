package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxIdentifierLen is PostgreSQL's NAMEDATALEN-1: longer names are
// truncated by the server, so they would never match what walhook sees.
const maxIdentifierLen = 63

// ParseTable parses a table name written as in SQL: "orders" (in schema
// public), "public.orders", or with quoted identifiers such as
// `"Sales"."Order Items"`. As in PostgreSQL, unquoted identifiers are folded
// to lower case, quoted ones keep their case, and "" inside quotes is a
// literal quote.
func ParseTable(s string) (Table, error) {
	parts, err := identifiers(s)
	if err != nil {
		return Table{}, fmt.Errorf("invalid table name %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return Table{Schema: "public", Name: parts[0]}, nil
	case 2:
		return Table{Schema: parts[0], Name: parts[1]}, nil
	}
	return Table{}, fmt.Errorf("invalid table name %q: %d dotted parts, at most 2 allowed", s, len(parts))
}

// Quoted is the table as a quoted SQL name, "schema"."name", ready to be
// used in a statement such as CREATE PUBLICATION.
func (t Table) Quoted() string { return quoteIdentifier(t.Schema) + "." + quoteIdentifier(t.Name) }

func quoteIdentifier(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// identifiers splits a dotted SQL name into its identifiers.
func identifiers(s string) ([]string, error) {
	var ids []string
	for rest := s; ; {
		id, n, err := identifier(rest)
		if err != nil {
			return nil, err
		}
		if len(id) > maxIdentifierLen {
			return nil, fmt.Errorf("%q is longer than %d bytes", id, maxIdentifierLen)
		}
		ids = append(ids, id)
		rest = rest[n:]
		if rest == "" {
			return ids, nil
		}
		if rest[0] != '.' {
			r, _ := utf8.DecodeRuneInString(rest)
			return nil, fmt.Errorf("unexpected %q after %s", r, s[:len(s)-len(rest)])
		}
		rest = rest[1:]
	}
}

// identifier reads one identifier at the start of s and returns it with the
// number of bytes it took.
func identifier(s string) (id string, n int, err error) {
	if s == "" {
		return "", 0, errors.New("missing identifier")
	}
	if s[0] == '"' {
		return quotedIdentifier(s)
	}
	for n < len(s) && isIdentifierByte(s[n], n == 0) {
		n++
	}
	if n == 0 {
		r, _ := utf8.DecodeRuneInString(s)
		return "", 0, fmt.Errorf("unexpected %q; quote names that are not plain identifiers", r)
	}
	return strings.Map(lowerASCII, s[:n]), n, nil
}

// quotedIdentifier reads a double-quoted identifier at the start of s.
func quotedIdentifier(s string) (id string, n int, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] != '"':
			b.WriteByte(s[i])
		case i+1 < len(s) && s[i+1] == '"':
			b.WriteByte('"')
			i++
		case b.Len() == 0:
			return "", 0, errors.New(`empty quoted identifier ""`)
		default:
			return b.String(), i + 1, nil
		}
	}
	return "", 0, errors.New("missing closing double quote")
}

// isIdentifierByte reports whether c may appear in an unquoted identifier,
// by PostgreSQL's rules: a letter, underscore or non-ASCII byte, and after
// the first byte also a digit or dollar sign.
func isIdentifierByte(c byte, first bool) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_', c >= 0x80:
		return true
	case '0' <= c && c <= '9', c == '$':
		return !first
	}
	return false
}

// lowerASCII folds A-Z only, as PostgreSQL does for unquoted identifiers.
func lowerASCII(r rune) rune {
	if 'A' <= r && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}
