package replication

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"

	"github.com/walhook/walhook/change"
)

// kind says how a column's text form becomes JSON.
type kind uint8

const (
	kindText        kind = iota // any type without a richer mapping: its text form as a string
	kindInt                     // integers: the text is already a JSON number
	kindFloat                   // float4/float8: a number, or "NaN"/"Infinity"/"-Infinity" as strings
	kindNumeric                 // numeric: a string with the exact digits
	kindBool                    // 't'/'f'
	kindJSON                    // json/jsonb: embedded as it is
	kindBytea                   // hex text form to base64
	kindTimestamp               // RFC 3339 without a zone, microseconds
	kindTimestamptz             // RFC 3339 in UTC, microseconds
	kindArray                   // an array of elem
)

// valueType is what the decoder knows of a column type.
type valueType struct {
	kind  kind
	elem  *valueType // kindArray only
	delim byte       // kindArray only: the element delimiter, ',' for all but box
}

var errSyntax = errors.New("malformed value")

// appendValue appends the JSON form of text, the PostgreSQL text output of a
// value of type t. A value whose text cannot be parsed as its type says it
// is (a bug or an unexpected server setting) is appended as a JSON string, so
// nothing is lost.
func appendValue(b []byte, t *valueType, text []byte) []byte {
	out, err := appendTyped(b, t, text)
	if err != nil {
		return change.AppendString(b, string(text))
	}
	return out
}

func appendTyped(b []byte, t *valueType, text []byte) ([]byte, error) {
	switch t.kind {
	case kindInt:
		if !isJSONNumber(text) {
			return b, errSyntax
		}
		return append(b, text...), nil
	case kindFloat:
		if isJSONNumber(text) {
			return append(b, text...), nil
		}
		switch string(text) {
		case "NaN", "Infinity", "-Infinity":
			return change.AppendString(b, string(text)), nil
		}
		return b, errSyntax
	case kindBool:
		switch string(text) {
		case "t":
			return append(b, "true"...), nil
		case "f":
			return append(b, "false"...), nil
		}
		return b, errSyntax
	case kindJSON:
		return append(b, text...), nil
	case kindBytea:
		return appendBytea(b, text)
	case kindTimestamp:
		return appendTimestamp(b, text, false)
	case kindTimestamptz:
		return appendTimestamp(b, text, true)
	case kindArray:
		return appendArray(b, t, text)
	default: // kindText, kindNumeric
		return change.AppendString(b, string(text)), nil
	}
}

// isJSONNumber reports whether s is a number in JSON's grammar.
func isJSONNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i == len(s) {
		return false
	}
	if s[i] == '0' {
		i++
	} else if s[i] >= '1' && s[i] <= '9' {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	} else {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(s)
}

// appendBytea turns bytea's hex output (\x0a0b) into a base64 string.
func appendBytea(b []byte, text []byte) ([]byte, error) {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' || len(text)%2 != 0 {
		return b, errSyntax
	}
	hexPart := text[2:]
	raw := make([]byte, len(hexPart)/2)
	if _, err := hex.Decode(raw, hexPart); err != nil {
		return b, errSyntax
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, raw)
	return append(b, '"'), nil
}

// appendTimestamp turns ISO output ("2026-11-26 11:20:00.123+00") into RFC
// 3339 with exactly six fractional digits, "Z" for a timestamptz (the
// replication session runs with TimeZone UTC). Infinity and BC dates have no
// RFC 3339 form and stay PostgreSQL's text.
func appendTimestamp(b []byte, text []byte, zoned bool) ([]byte, error) {
	// yyyy-mm-dd hh:mm:ss[.ffffff][+00]; the year may have more digits.
	sp := bytes.IndexByte(text, ' ')
	if sp < 10 || len(text) < sp+9 || text[sp+3] != ':' || text[sp+6] != ':' {
		if len(text) > 0 && (text[0] == 'i' || text[0] == '-') { // infinity, -infinity
			return change.AppendString(b, string(text)), nil
		}
		return b, errSyntax
	}
	if bytes.HasSuffix(text, []byte(" BC")) {
		return change.AppendString(b, string(text)), nil
	}
	rest := text[sp+9:] // after seconds
	var frac []byte
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		frac, rest = rest[1:n], rest[n:]
	}
	if zoned {
		if string(rest) != "+00" {
			return b, errSyntax
		}
	} else if len(rest) != 0 {
		return b, errSyntax
	}
	if len(frac) > 6 {
		return b, errSyntax
	}
	b = append(b, '"')
	b = append(b, text[:sp]...)
	b = append(b, 'T')
	b = append(b, text[sp+1:sp+9]...)
	b = append(b, '.')
	b = append(b, frac...)
	for i := len(frac); i < 6; i++ {
		b = append(b, '0')
	}
	if zoned {
		b = append(b, 'Z')
	}
	return append(b, '"'), nil
}

// appendArray turns an array's text form ({1,2}, {{"a b",NULL}},
// [0:1]={x,y}) into nested JSON arrays whose elements are encoded by the
// element type. Bounds decorations are dropped: JSON arrays start at 0.
func appendArray(b []byte, t *valueType, text []byte) ([]byte, error) {
	if len(text) > 0 && text[0] == '[' {
		eq := bytes.IndexByte(text, '=')
		if eq < 0 {
			return b, errSyntax
		}
		text = text[eq+1:]
	}
	p := arrayParser{src: text, elem: t.elem, delim: t.delim}
	b, err := p.parse(b, 0)
	if err != nil {
		return b, err
	}
	if p.pos != len(p.src) {
		return b, errSyntax
	}
	return b, nil
}

type arrayParser struct {
	src     []byte
	pos     int
	elem    *valueType
	delim   byte
	scratch []byte
}

const maxArrayDepth = 6 // PostgreSQL's MAXDIM

func (p *arrayParser) parse(b []byte, depth int) ([]byte, error) {
	if depth > maxArrayDepth || p.pos >= len(p.src) || p.src[p.pos] != '{' {
		return b, errSyntax
	}
	p.pos++
	b = append(b, '[')
	if p.pos < len(p.src) && p.src[p.pos] == '}' {
		p.pos++
		return append(b, ']'), nil
	}
	for first := true; ; first = false {
		if !first {
			b = append(b, ',')
		}
		var err error
		b, err = p.element(b, depth)
		if err != nil {
			return b, err
		}
		if p.pos >= len(p.src) {
			return b, errSyntax
		}
		switch p.src[p.pos] {
		case '}':
			p.pos++
			return append(b, ']'), nil
		case p.delim:
			p.pos++
		default:
			return b, errSyntax
		}
	}
}

func (p *arrayParser) element(b []byte, depth int) ([]byte, error) {
	if p.pos >= len(p.src) {
		return b, errSyntax
	}
	switch p.src[p.pos] {
	case '{':
		return p.parse(b, depth+1)
	case '"':
		p.pos++
		p.scratch = p.scratch[:0]
		for {
			if p.pos >= len(p.src) {
				return b, errSyntax
			}
			c := p.src[p.pos]
			p.pos++
			if c == '"' {
				break
			}
			if c == '\\' {
				if p.pos >= len(p.src) {
					return b, errSyntax
				}
				c = p.src[p.pos]
				p.pos++
			}
			p.scratch = append(p.scratch, c)
		}
		return appendTyped(b, p.elem, p.scratch)
	default:
		start := p.pos
		p.scratch = p.scratch[:0]
		for p.pos < len(p.src) {
			c := p.src[p.pos]
			if c == p.delim || c == '}' || c == '{' || c == '"' {
				break
			}
			if c == '\\' && p.pos+1 < len(p.src) {
				p.pos++
				c = p.src[p.pos]
			}
			p.scratch = append(p.scratch, c)
			p.pos++
		}
		if p.pos == start {
			return b, errSyntax
		}
		if len(p.scratch) == 4 && bytes.EqualFold(p.scratch, []byte("NULL")) && bytes.IndexByte(p.src[start:p.pos], '\\') < 0 {
			return append(b, "null"...), nil
		}
		return appendTyped(b, p.elem, p.scratch)
	}
}
