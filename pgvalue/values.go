package pgvalue

import (
	"bytes"
	"encoding/base64"
	"errors"
	"unsafe"

	"github.com/walhook/walhook/change"
)

// kind says how a column's text form becomes JSON.
type kind uint8

const (
	kindText        kind = iota // any type without a richer mapping: its text form as a string
	kindInt                     // integers: the text is already a JSON number
	kindFloat                   // float4/float8: a number, or "NaN"/"Infinity"/"-Infinity" as strings
	kindNumeric                 // numeric: a string with the exact digits
	kindMoney                   // money: a string with the amount's digits, without symbol or grouping
	kindBool                    // 't'/'f'
	kindJSON                    // json/jsonb: embedded as it is
	kindBytea                   // hex text form to base64
	kindTimestamp               // RFC 3339 without a zone, microseconds
	kindTimestamptz             // RFC 3339 in UTC, microseconds
	kindArray                   // an array of elem
	kindComposite               // a composite (row) type: an object of fields
)

// Type is what the decoder knows of a column type.
type Type struct {
	kind   kind
	elem   *Type   // kindArray only
	delim  byte    // kindArray only: the element delimiter, ',' for all but box
	fields []field // kindComposite only: the attributes, in order
}

// field is one attribute of a composite type.
type field struct {
	jsonName []byte // `"name":`
	typ      *Type
}

var errSyntax = errors.New("malformed value")

// maxNesting bounds how deep arrays and composites may nest inside one
// value; PostgreSQL's arrays have at most 6 dimensions, and composites
// nested deeper than this are not worth a stack.
const maxNesting = 32

// Encoder writes PostgreSQL text values as JSON. Its scratch space is
// reused from value to value, so encoding allocates nothing once it has
// grown; it is not safe for concurrent use.
type Encoder struct {
	scratch []byte // a stack: nested values unescape above their parent's part
}

// Idle reports whether the encoder holds no scratch data: true between two
// values.
func (e *Encoder) Idle() bool { return len(e.scratch) == 0 }

// Append appends the JSON form of text, the PostgreSQL text output of a
// value of type t. A value whose text cannot be parsed as its type says it
// is (a bug, an unexpected server setting, a type changed since its catalog
// entry was read) is appended as a JSON string of the text, so nothing is
// lost and the output is always valid JSON.
func (e *Encoder) Append(b []byte, t *Type, text []byte) []byte {
	out, err := e.appendTyped(b, t, text, 0)
	e.scratch = e.scratch[:0] // a failed parse may have left its part
	if err != nil {
		return AppendText(b, text)
	}
	return out
}

func (e *Encoder) appendTyped(b []byte, t *Type, text []byte, depth int) ([]byte, error) {
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
			return AppendText(b, text), nil
		}
		return b, errSyntax
	case kindMoney:
		return appendMoney(b, text)
	case kindBool:
		switch string(text) {
		case "t":
			return append(b, "true"...), nil
		case "f":
			return append(b, "false"...), nil
		}
		return b, errSyntax
	case kindJSON:
		// PostgreSQL validated it on input; checking again keeps a body
		// valid whatever the server sent.
		if !validJSON(text) {
			return b, errSyntax
		}
		return append(b, text...), nil
	case kindBytea:
		return appendBytea(b, text)
	case kindTimestamp:
		return appendTimestamp(b, text, false)
	case kindTimestamptz:
		return appendTimestamp(b, text, true)
	case kindArray:
		return e.appendArray(b, t, text, depth)
	case kindComposite:
		return e.appendComposite(b, t, text, depth)
	default: // kindText, kindNumeric
		return AppendText(b, text), nil
	}
}

// AppendText appends text as a JSON string. It views text as a string
// without copying it: AppendString only reads its argument, and a copy
// would cost an allocation for every value longer than 32 bytes.
func AppendText(b, text []byte) []byte {
	if len(text) == 0 {
		return append(b, `""`...)
	}
	return change.AppendString(b, unsafe.String(&text[0], len(text)))
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

// appendMoney turns money's text in the C locale ("$1,234.56",
// "-$0.05") into a string of the amount ("1234.56", "-0.05"). Any other
// form (another lc_monetary) fails, and the value stays its text.
func appendMoney(b []byte, text []byte) ([]byte, error) {
	s := text
	neg := false
	if len(s) > 0 && s[0] == '-' {
		neg, s = true, s[1:]
	}
	if len(s) == 0 || s[0] != '$' {
		return b, errSyntax
	}
	s = s[1:]
	whole, frac := s, []byte(nil)
	if dot := bytes.IndexByte(s, '.'); dot >= 0 {
		whole, frac = s[:dot], s[dot+1:]
		if len(frac) == 0 || !allDigits(frac) {
			return b, errSyntax
		}
	}
	if !isGrouped(whole) {
		return b, errSyntax
	}
	b = append(b, '"')
	if neg {
		b = append(b, '-')
	}
	for _, c := range s {
		if c != ',' {
			b = append(b, c)
		}
	}
	return append(b, '"'), nil
}

// isGrouped reports whether s is digits in groups of three separated by
// commas, the first group of one to three digits ("1,234,567"), or digits
// alone.
func isGrouped(s []byte) bool {
	first := bytes.IndexByte(s, ',')
	if first < 0 {
		return len(s) > 0 && allDigits(s)
	}
	if first == 0 || first > 3 || !allDigits(s[:first]) {
		return false
	}
	for rest := s[first:]; len(rest) > 0; rest = rest[4:] {
		if len(rest) < 4 || rest[0] != ',' || !allDigits(rest[1:4]) {
			return false
		}
	}
	return true
}

func allDigits(s []byte) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// appendBytea turns bytea's hex output (\x0a0b) into a base64 string,
// through a small buffer on the stack.
func appendBytea(b []byte, text []byte) ([]byte, error) {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' || len(text)%2 != 0 {
		return b, errSyntax
	}
	hexPart := text[2:]
	var raw [96]byte // a multiple of 3, so chunks encode without padding
	b = append(b, '"')
	for len(hexPart) > 0 {
		n := min(len(hexPart)/2, len(raw))
		for i := 0; i < n; i++ {
			hi, ok1 := unhex(hexPart[2*i])
			lo, ok2 := unhex(hexPart[2*i+1])
			if !ok1 || !ok2 {
				return b, errSyntax
			}
			raw[i] = hi<<4 | lo
		}
		b = base64.StdEncoding.AppendEncode(b, raw[:n])
		hexPart = hexPart[2*n:]
	}
	return append(b, '"'), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendTimestamp turns ISO output ("2026-11-26 11:20:00.123+00") into RFC
// 3339 with exactly six fractional digits, "Z" for a timestamptz (the
// replication session runs with TimeZone UTC). Infinity and BC dates have no
// RFC 3339 form and stay PostgreSQL's text; a year after 9999 keeps its
// digits.
func appendTimestamp(b []byte, text []byte, zoned bool) ([]byte, error) {
	switch string(text) {
	case "infinity", "-infinity":
		return AppendText(b, text), nil
	}
	if bytes.HasSuffix(text, []byte(" BC")) {
		if _, err := appendTimestamp(nil, text[:len(text)-3], zoned); err != nil {
			return b, err
		}
		return AppendText(b, text), nil
	}
	// yyyy-mm-dd hh:mm:ss[.ffffff][+00]; the year may have more digits.
	sp := bytes.IndexByte(text, ' ')
	if sp < 10 || len(text) < sp+9 || !isDate(text[:sp]) || !isClock(text[sp+1:sp+9]) {
		return b, errSyntax
	}
	rest := text[sp+9:] // after seconds
	var frac []byte
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		frac, rest = rest[1:n], rest[n:]
		if len(frac) == 0 || len(frac) > 6 {
			return b, errSyntax
		}
	}
	if zoned {
		if string(rest) != "+00" {
			return b, errSyntax
		}
	} else if len(rest) != 0 {
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

// isDate reports whether s is yyyy-mm-dd, with four or more year digits.
func isDate(s []byte) bool {
	n := len(s)
	if n < 10 || s[n-3] != '-' || s[n-6] != '-' {
		return false
	}
	for i, c := range s {
		if i != n-3 && i != n-6 && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// isClock reports whether s is hh:mm:ss.
func isClock(s []byte) bool {
	for i, c := range s {
		if i == 2 || i == 5 {
			if c != ':' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return len(s) == 8
}

// appendArray turns an array's text form ({1,2}, {{"a b",NULL}},
// [0:1]={x,y}) into nested JSON arrays whose elements are encoded by the
// element type. Bounds decorations are dropped: JSON arrays start at 0.
func (e *Encoder) appendArray(b []byte, t *Type, text []byte, depth int) ([]byte, error) {
	if len(text) > 0 && text[0] == '[' {
		eq := bytes.IndexByte(text, '=')
		if eq < 0 {
			return b, errSyntax
		}
		text = text[eq+1:]
	}
	pos, b, err := e.arrayLevel(b, t, text, 0, depth)
	if err != nil {
		return b, err
	}
	if pos != len(text) {
		return b, errSyntax
	}
	return b, nil
}

// arrayLevel parses one {...} level of an array starting at src[pos] and
// returns the position after it.
func (e *Encoder) arrayLevel(b []byte, t *Type, src []byte, pos, depth int) (int, []byte, error) {
	if depth > maxNesting || pos >= len(src) || src[pos] != '{' {
		return pos, b, errSyntax
	}
	pos++
	b = append(b, '[')
	if pos < len(src) && src[pos] == '}' {
		return pos + 1, append(b, ']'), nil
	}
	for first := true; ; first = false {
		if !first {
			b = append(b, ',')
		}
		var err error
		if pos < len(src) && src[pos] == '{' {
			pos, b, err = e.arrayLevel(b, t, src, pos, depth+1)
		} else {
			pos, b, err = e.arrayElement(b, t, src, pos, depth)
		}
		if err != nil {
			return pos, b, err
		}
		if pos >= len(src) {
			return pos, b, errSyntax
		}
		switch src[pos] {
		case '}':
			return pos + 1, append(b, ']'), nil
		case t.delim:
			pos++
		default:
			return pos, b, errSyntax
		}
	}
}

// arrayElement parses one element, quoted or not, and appends its JSON.
// An unquoted NULL is SQL NULL; a quoted "NULL" is the text.
func (e *Encoder) arrayElement(b []byte, t *Type, src []byte, pos, depth int) (int, []byte, error) {
	if pos >= len(src) {
		return pos, b, errSyntax
	}
	if src[pos] == '"' {
		pos++
		start := len(e.scratch)
		for {
			if pos >= len(src) {
				return pos, b, errSyntax
			}
			c := src[pos]
			pos++
			if c == '"' {
				break
			}
			if c == '\\' {
				if pos >= len(src) {
					return pos, b, errSyntax
				}
				c = src[pos]
				pos++
			}
			e.scratch = append(e.scratch, c)
		}
		b, err := e.appendTyped(b, t.elem, e.scratch[start:], depth+1)
		e.scratch = e.scratch[:start]
		return pos, b, err
	}
	start := pos
	for pos < len(src) {
		c := src[pos]
		if c == t.delim || c == '}' || c == '{' || c == '"' || c == '\\' {
			break // array_out quotes any element holding one of these
		}
		pos++
	}
	elem := src[start:pos]
	if len(elem) == 0 {
		return pos, b, errSyntax
	}
	if string(elem) == "NULL" {
		return pos, append(b, "null"...), nil
	}
	b, err := e.appendTyped(b, t.elem, elem, depth+1)
	return pos, b, err
}

// appendComposite turns a composite value's text form ("(1,\"a b\",)")
// into an object keyed by attribute name. An empty field is NULL; a quoted
// one may hold "" or \ escapes, as record_out writes them.
func (e *Encoder) appendComposite(b []byte, t *Type, text []byte, depth int) ([]byte, error) {
	if depth > maxNesting || len(text) < 2 || text[0] != '(' || text[len(text)-1] != ')' {
		return b, errSyntax
	}
	src := text[1 : len(text)-1]
	b = append(b, '{')
	if len(t.fields) == 0 {
		if len(src) != 0 {
			return b, errSyntax
		}
		return append(b, '}'), nil
	}
	pos := 0
	for i := range t.fields {
		f := &t.fields[i]
		if i > 0 {
			if pos >= len(src) || src[pos] != ',' {
				return b, errSyntax
			}
			pos++
			b = append(b, ',')
		}
		b = append(b, f.jsonName...)
		if pos == len(src) || src[pos] == ',' {
			b = append(b, "null"...)
			continue
		}
		start := len(e.scratch)
		quoted := false
		for pos < len(src) && (quoted || src[pos] != ',') {
			c := src[pos]
			pos++
			switch {
			case c == '"' && quoted && pos < len(src) && src[pos] == '"':
				pos++ // "" inside quotes is one "
			case c == '"':
				quoted = !quoted
				continue
			case c == '\\':
				if pos >= len(src) {
					return b, errSyntax
				}
				c = src[pos]
				pos++
			}
			e.scratch = append(e.scratch, c)
		}
		if quoted {
			return b, errSyntax
		}
		var err error
		b, err = e.appendTyped(b, f.typ, e.scratch[start:], depth+1)
		e.scratch = e.scratch[:start]
		if err != nil {
			return b, err
		}
	}
	if pos != len(src) {
		return b, errSyntax // more fields than the catalog knows of
	}
	return append(b, '}'), nil
}
