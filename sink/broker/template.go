package broker

import (
	"fmt"
	"strings"
	"sync"

	"github.com/walhook/walhook/change"
)

// Separator is the token separator of every broker's names: a
// placeholder's value never holds it.
const Separator = '.'

// Forbidden reports whether a broker forbids r inside one token of a name.
// The Separator is replaced whatever it says.
type Forbidden func(r rune) bool

// Template is a parsed subject, stream, topic or routing key template:
// literal text and the placeholders {schema}, {table}, {action} and
// {sink}. The configuration checked it; Parse checks it again. It is safe
// for concurrent use.
type Template struct {
	text   string
	parts  []part
	forbid Forbidden
	cache  sync.Map // nameKey -> string
}

type part struct {
	literal     string
	placeholder string // "" for a literal
}

type nameKey struct {
	schema, table, sink string
	action              change.Action
}

// Parse parses a template; forbid says what the broker forbids in a token
// (nil: only the Separator).
func Parse(text string, forbid Forbidden) (*Template, error) {
	t := &Template{text: text, forbid: forbid}
	for rest := text; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			t.parts = append(t.parts, part{literal: rest})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, part{literal: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("template %q: a { without its }", text)
		}
		p := rest[open+1 : open+end]
		switch p {
		case "schema", "table", "action", "sink":
		default:
			return nil, fmt.Errorf("template %q: {%s} is not a placeholder; use {schema} {table} {action} {sink}", text, p)
		}
		t.parts = append(t.parts, part{placeholder: p})
		rest = rest[open+end+1:]
	}
	return t, nil
}

// String is the template as written.
func (t *Template) String() string { return t.text }

// Name is the name m maps to for sink.
func (t *Template) Name(m *change.Message, sink string) string {
	schema, table := m.Schema, m.Table
	if m.Action == change.Emitted {
		schema, table = "", ""
	}
	return t.For(schema, table, m.Action, sink)
}

// For is the name of a change of action to schema.table for sink; what
// Name gives and what walhook check shows. Every placeholder's value has
// the Separator and what the broker forbids replaced by _; an empty value
// (a logical decoding message has no table) is _.
func (t *Template) For(schema, table string, action change.Action, sink string) string {
	key := nameKey{schema, table, sink, action}
	if name, ok := t.cache.Load(key); ok {
		return name.(string)
	}
	var b strings.Builder
	for _, p := range t.parts {
		switch p.placeholder {
		case "":
			b.WriteString(p.literal)
		case "schema":
			b.WriteString(t.token(schema))
		case "table":
			b.WriteString(t.token(table))
		case "action":
			b.WriteString(t.token(string(action)))
		case "sink":
			b.WriteString(t.token(sink))
		}
	}
	name := b.String()
	t.cache.Store(key, name)
	return name
}

// token maps one placeholder's value to a token.
func (t *Template) token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == Separator || t.forbid != nil && t.forbid(r) {
			return '_'
		}
		return r
	}, s)
}
