package config

import (
	"errors"
	"fmt"
	"strings"
)

// errMalformedRef is returned for a "${" that does not start a valid
// reference. It never quotes the text, which may be part of a secret.
var errMalformedRef = errors.New("malformed ${...} reference; write ${NAME} or ${NAME:-default}, or $${ for a literal ${")

// expand replaces environment variable references in s:
//
//   - ${NAME} is the variable's value; a variable that is not set is an error.
//   - ${NAME:-default} is default when NAME is unset or empty, as in the
//     shell. The default is taken literally and cannot contain "}".
//   - $${ is a literal "${". Any other "$" is literal, so "$HOME" and a
//     password such as "pa$$word" are left as they are.
//
// A NAME is a letter or underscore followed by letters, digits and
// underscores. Errors name the variable but never show a value.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			b.WriteString("${")
			s = s[len("$${"):]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", errMalformedRef
			}
			v, err := resolve(s[len("${"):end], lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
	}
}

// resolve returns the value of the reference inside "${" and "}".
func resolve(ref string, lookup func(string) (string, bool)) (string, error) {
	name, def, hasDefault := strings.Cut(ref, ":-")
	if !isVarName(name) {
		return "", errMalformedRef
	}
	v, ok := lookup(name)
	if hasDefault && v == "" {
		return def, nil
	}
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set; set it, or give a default with ${%s:-value}", name, name)
	}
	return v, nil
}

func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		letter := c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}
