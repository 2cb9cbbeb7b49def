package backfill

import (
	"errors"
	"fmt"
	"strings"
)

// checkExpression reports, without a server, whether where can only be
// one SQL expression once walhook puts it in parentheses: outside string
// literals, quoted identifiers and dollar quotes it has no ";", no
// comment (a comment could hide a parenthesis from this check but not
// from the server), no parameter ($1: the chunk query's own), and
// parentheses that balance without closing one it did not open. The
// server checks the rest (CheckWhere). standardStrings is the session's
// standard_conforming_strings: whether a backslash in '...' is an
// ordinary character.
func checkExpression(where string, standardStrings bool) error {
	if strings.TrimSpace(where) == "" {
		return errors.New("it is empty; give a condition such as status = 'open', or leave --where out")
	}
	depth := 0
	for i := 0; i < len(where); {
		c := where[i]
		switch {
		case c == 0:
			return fmt.Errorf("a NUL byte at offset %d; remove it", i)
		case c == '\'':
			end, err := skipQuoted(where, i, '\'', !standardStrings)
			if err != nil {
				return err
			}
			i = end
		case c == '"':
			end, err := skipQuoted(where, i, '"', false)
			if err != nil {
				return err
			}
			i = end
		case c == '$':
			end, err := skipDollar(where, i)
			if err != nil {
				return err
			}
			i = end
		case c == '-' && strings.HasPrefix(where[i:], "--"), c == '/' && strings.HasPrefix(where[i:], "/*"):
			return fmt.Errorf("a comment (%s) at offset %d: comments are not allowed in --where; remove it", where[i:i+2], i)
		case c == ';':
			return fmt.Errorf(`";" at offset %d: --where is one expression, not statements; give only the condition`, i)
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth == 0 {
				return fmt.Errorf(`")" at offset %d closes a parenthesis the expression did not open; balance its parentheses`, i)
			}
			depth--
			i++
		case isWordByte(c):
			// A '$' continues an identifier, but ends a number: in
			// 1$a$...$a$ the server reads 1 and a dollar quote.
			start := i
			for i < len(where) && (isWordByte(where[i]) || where[i] == '$' && !isDigit(where[start])) {
				i++
			}
			word := where[start:i]
			switch {
			case (word == "b" || word == "B" || word == "x" || word == "X") && i < len(where) && where[i] == '\'':
				// B'...' and X'...': a backslash is an ordinary byte
				// whatever the session says.
				end, err := skipQuoted(where, i, '\'', false)
				if err != nil {
					return err
				}
				i = end
			case (word == "e" || word == "E") && i < len(where) && where[i] == '\'':
				// E'...': backslash escapes whatever the session says.
				end, err := skipQuoted(where, i, '\'', true)
				if err != nil {
					return err
				}
				i = end
			case (word == "u" || word == "U") && strings.HasPrefix(where[i:], "&'"), (word == "u" || word == "U") && strings.HasPrefix(where[i:], `&"`):
				// U&'...' and U&"...": Unicode escapes use a backslash
				// but never escape the quote, which is doubled.
				end, err := skipQuoted(where, i+1, where[i+1], false)
				if err != nil {
					return err
				}
				i = end
			}
		default:
			i++
		}
	}
	if depth > 0 {
		return fmt.Errorf("%d parenthesis not closed; balance its parentheses", depth)
	}
	return nil
}

// isWordByte reports whether c can be part of a keyword, an identifier
// or a number (a '$' may follow the first byte of an identifier).
func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipQuoted returns the offset after the literal or quoted identifier
// that starts with quote at s[i]: a doubled quote stands for one, and
// with backslash a backslash escapes the byte after it.
func skipQuoted(s string, i int, quote byte, backslash bool) (int, error) {
	what := "string literal"
	if quote == '"' {
		what = "quoted identifier"
	}
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == 0:
			return 0, fmt.Errorf("a NUL byte at offset %d", j)
		case backslash && s[j] == '\\':
			j++
		case s[j] == quote && j+1 < len(s) && s[j+1] == quote:
			j++
		case s[j] == quote:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("the %s at offset %d is not terminated; close it with %c", what, i, quote)
}

// skipDollar returns the offset after the dollar-quoted string that
// starts at s[i] ($$...$$ or $tag$...$tag$). A parameter ($1) is an
// error: the chunk query has its own.
func skipDollar(s string, i int) (int, error) {
	j := i + 1
	if j < len(s) && isDigit(s[j]) {
		return 0, fmt.Errorf("a parameter ($%c) at offset %d: --where cannot take parameters; write the value", s[j], i)
	}
	for j < len(s) && isWordByte(s[j]) {
		j++
	}
	if j >= len(s) || s[j] != '$' {
		return i + 1, nil // not a dollar quote: the server judges it
	}
	tag := s[i : j+1]
	end := strings.Index(s[j+1:], tag)
	if end < 0 {
		return 0, fmt.Errorf("the dollar-quoted string at offset %d is not terminated; close it with %s", i, tag)
	}
	if k := strings.IndexByte(s[j+1:j+1+end], 0); k >= 0 {
		return 0, fmt.Errorf("a NUL byte at offset %d", j+1+k)
	}
	return j + 1 + end + len(tag), nil
}
