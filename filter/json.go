package filter

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// The record and changes of a message are JSON objects that the decoder
// wrote once. A filter reads them where they lie: lookup finds one field's
// bytes and convert turns just those bytes into a CEL value. Nothing here
// builds a Go map of the whole row.

var errMalformed = errors.New("malformed JSON in message")

// lookup returns the raw bytes of key's value in the JSON object obj. With
// firstWins it stops at the first occurrence of key, which is right for a
// record or changes object, whose keys are column names and so unique;
// otherwise it scans the whole object and the last occurrence wins, as in
// JavaScript's JSON.parse and Go's encoding/json (a json column may hold
// duplicate keys).
//
// This is the one place that looks up a field in raw JSON; precomputed
// per-column offsets, when messages carry them, belong here.
func lookup(obj []byte, key string, firstWins bool) (val []byte, found bool, err error) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil, false, errMalformed
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil, false, nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return nil, false, errMalformed
		}
		keyEnd, escaped, err := stringEnd(obj, i)
		if err != nil {
			return nil, false, err
		}
		rawKey := obj[i+1 : keyEnd-1]
		i = skipSpace(obj, keyEnd)
		if i >= len(obj) || obj[i] != ':' {
			return nil, false, errMalformed
		}
		i = skipSpace(obj, i+1)
		end, err := valueEnd(obj, i)
		if err != nil {
			return nil, false, err
		}
		if keyEqual(rawKey, escaped, key) {
			val, found = obj[i:end], true
			if firstWins {
				return val, true, nil
			}
		}
		i = skipSpace(obj, end)
		if i >= len(obj) {
			return nil, false, errMalformed
		}
		switch obj[i] {
		case ',':
			i = skipSpace(obj, i+1)
		case '}':
			return val, found, nil
		default:
			return nil, false, errMalformed
		}
	}
}

// keyEqual reports whether the JSON string content raw (between the quotes)
// denotes key.
func keyEqual(raw []byte, escaped bool, key string) bool {
	if !escaped {
		return string(raw) == key
	}
	var buf [64]byte
	unescaped, err := appendUnescaped(buf[:0], raw)
	return err == nil && string(unescaped) == key
}

// members calls fn for each key and raw value of the JSON object obj, in
// document order.
func members(obj []byte, fn func(key string, val []byte) error) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return errMalformed
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return errMalformed
		}
		keyEnd, _, err := stringEnd(obj, i)
		if err != nil {
			return err
		}
		key, err := unquote(obj[i:keyEnd])
		if err != nil {
			return err
		}
		i = skipSpace(obj, keyEnd)
		if i >= len(obj) || obj[i] != ':' {
			return errMalformed
		}
		i = skipSpace(obj, i+1)
		end, err := valueEnd(obj, i)
		if err != nil {
			return err
		}
		if err := fn(key, obj[i:end]); err != nil {
			return err
		}
		i = skipSpace(obj, end)
		if i >= len(obj) {
			return errMalformed
		}
		switch obj[i] {
		case ',':
			i = skipSpace(obj, i+1)
		case '}':
			return nil
		default:
			return errMalformed
		}
	}
}

// elements calls fn for each raw element of the JSON array arr.
func elements(arr []byte, fn func(val []byte) error) error {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return errMalformed
	}
	i = skipSpace(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for {
		end, err := valueEnd(arr, i)
		if err != nil {
			return err
		}
		if err := fn(arr[i:end]); err != nil {
			return err
		}
		i = skipSpace(arr, end)
		if i >= len(arr) {
			return errMalformed
		}
		switch arr[i] {
		case ',':
			i = skipSpace(arr, i+1)
		case ']':
			return nil
		default:
			return errMalformed
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i],
// and whether it holds a backslash escape.
func stringEnd(b []byte, i int) (end int, escaped bool, err error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '"':
			return j + 1, escaped, nil
		case '\\':
			escaped = true
			j++
		}
	}
	return 0, false, errMalformed
}

// valueEnd returns the index just past the JSON value starting at b[i]. It
// checks that brackets match, without recursion, so a deeply nested value
// cannot exhaust the stack; scalars are checked when they are converted.
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errMalformed
	}
	switch b[i] {
	case '"':
		end, _, err := stringEnd(b, i)
		return end, err
	case '{', '[':
	default:
		j := i
		for j < len(b) && isScalarByte(b[j]) {
			j++
		}
		if j == i {
			return 0, errMalformed
		}
		return j, nil
	}
	var stackBuf [32]byte
	open := stackBuf[:0]
	for j := i; j < len(b); j++ {
		switch c := b[j]; c {
		case '"':
			end, _, err := stringEnd(b, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case '{', '[':
			open = append(open, c)
		case '}', ']':
			if len(open) == 0 || open[len(open)-1] != c-2 { // '{'+2 == '}', '['+2 == ']'
				return 0, errMalformed
			}
			open = open[:len(open)-1]
			if len(open) == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, errMalformed
}

// isScalarByte reports whether c can be part of a JSON number or of true,
// false and null.
func isScalarByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E'
}

// convert turns one raw JSON value into the CEL value a receiver would see:
// an object is a lazy map, an array a list, a number an int when it is
// written as an integer that fits int64 and a double otherwise.
func convert(raw []byte) ref.Val {
	if len(raw) == 0 {
		return types.WrapErr(errMalformed)
	}
	switch raw[0] {
	case '{':
		return &object{raw: raw}
	case '[':
		var vals []ref.Val
		err := elements(raw, func(v []byte) error {
			cv := convert(v)
			if types.IsError(cv) {
				return errMalformed
			}
			vals = append(vals, cv)
			return nil
		})
		if err != nil {
			return types.WrapErr(err)
		}
		return types.NewRefValList(types.DefaultTypeAdapter, vals)
	case '"':
		s, err := unquote(raw)
		if err != nil {
			return types.WrapErr(err)
		}
		return types.String(s)
	case 't':
		if string(raw) == "true" {
			return types.True
		}
	case 'f':
		if string(raw) == "false" {
			return types.False
		}
	case 'n':
		if string(raw) == "null" {
			return types.NullValue
		}
	default:
		return number(raw)
	}
	return types.WrapErr(errMalformed)
}

// number converts a JSON number: an int when it has no fraction or exponent
// and fits int64, else a double (math.Inf beyond the float64 range, as
// JavaScript has it).
func number(raw []byte) ref.Val {
	integral, ok := numberSyntax(raw)
	if !ok {
		return types.WrapErr(errMalformed)
	}
	if integral {
		if n, ok := parseInt(raw); ok {
			return types.Int(n)
		}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && !math.IsInf(f, 0) {
		return types.WrapErr(errMalformed)
	}
	return types.Double(f)
}

// numberSyntax checks raw against JSON's number grammar and reports whether
// it is written as an integer.
func numberSyntax(raw []byte) (integral, ok bool) {
	i := 0
	if i < len(raw) && raw[i] == '-' {
		i++
	}
	switch {
	case i < len(raw) && raw[i] == '0':
		i++
	case i < len(raw) && '1' <= raw[i] && raw[i] <= '9':
		for i < len(raw) && isDigit(raw[i]) {
			i++
		}
	default:
		return false, false
	}
	integral = true
	if i < len(raw) && raw[i] == '.' {
		integral = false
		i++
		start := i
		for i < len(raw) && isDigit(raw[i]) {
			i++
		}
		if i == start {
			return false, false
		}
	}
	if i < len(raw) && (raw[i] == 'e' || raw[i] == 'E') {
		integral = false
		i++
		if i < len(raw) && (raw[i] == '+' || raw[i] == '-') {
			i++
		}
		start := i
		for i < len(raw) && isDigit(raw[i]) {
			i++
		}
		if i == start {
			return false, false
		}
	}
	return integral, i == len(raw)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseInt parses an integer that numberSyntax accepted; ok is false when
// it does not fit int64.
func parseInt(raw []byte) (int64, bool) {
	neg := raw[0] == '-'
	if neg {
		raw = raw[1:]
	}
	var n uint64
	for _, c := range raw {
		if n > (math.MaxUint64-9)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case neg && n <= 1<<63:
		return int64(-n), true // -(1<<63) wraps to itself, math.MinInt64
	case !neg && n <= math.MaxInt64:
		return int64(n), true
	}
	return 0, false
}

// unquote returns the content of the JSON string quoted (with its quotes).
func unquote(quoted []byte) (string, error) {
	if len(quoted) < 2 || quoted[0] != '"' || quoted[len(quoted)-1] != '"' {
		return "", errMalformed
	}
	raw := quoted[1 : len(quoted)-1]
	for _, c := range raw {
		if c == '\\' {
			b, err := appendUnescaped(make([]byte, 0, len(raw)), raw)
			return string(b), err
		}
	}
	return string(raw), nil
}

// appendUnescaped appends the JSON string content raw with its escapes
// resolved. A \u escape of a lone surrogate becomes U+FFFD, as in
// encoding/json.
func appendUnescaped(dst, raw []byte) ([]byte, error) {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(raw) {
			return nil, errMalformed
		}
		switch raw[i] {
		case '"', '\\', '/':
			dst = append(dst, raw[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(raw[i+1:])
			if !ok {
				return nil, errMalformed
			}
			i += 4
			if utf16.IsSurrogate(r) {
				low, ok := rune(0), false
				if i+2 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					low, ok = hex4(raw[i+3:])
				}
				if pair := utf16.DecodeRune(r, low); ok && pair != utf8.RuneError {
					r = pair
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return nil, errMalformed
		}
	}
	return dst, nil
}

// hex4 parses the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
