package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// decoder turns the node tree into typed values. It never stops at the first
// problem: every accessor records what is wrong and returns a usable
// fallback, so one pass reports everything. A field gets at most one
// problem, so a value of the wrong type is not also reported as missing.
type decoder struct {
	file     string
	env      func(string) (string, bool)
	anchors  map[string]*node
	problems []Problem
	failed   map[string]bool // field paths that already have a problem
	src      []byte          // the file, for Origin
	lines    [][]rune        // src split into lines, once needed
}

func newDecoder(file string, env func(string) (string, bool)) *decoder {
	return &decoder{
		file:    file,
		env:     env,
		anchors: make(map[string]*node),
		failed:  make(map[string]bool),
	}
}

// value is a node together with its field path. For an absent key, node is
// nil and line is the line of the mapping that lacks it.
type value struct {
	path string
	line int
	node *node
}

// present reports whether the value is written and not null. A key written
// without a value (or as ~ or null) counts as absent, so its default applies.
func (v value) present() bool {
	return v.node != nil && v.node.kind != nullKind && v.node.kind != invalidKind
}

// problemAt records a problem at a line.
func (d *decoder) problemAt(line int, path, msg string) {
	d.problems = append(d.problems, Problem{File: d.file, Line: line, Field: path, Msg: msg})
}

// fail records a problem with v, unless v, or a field that holds it, already
// has one: a sink that is not a mapping is not also missing its url.
func (d *decoder) fail(v value, format string, args ...any) {
	if d.hasProblem(v) {
		return
	}
	d.failed[v.path] = true
	d.problemAt(v.line, v.path, fmt.Sprintf(format, args...))
}

// hasProblem reports whether v's node, its path, or a path above it already
// has a problem.
func (d *decoder) hasProblem(v value) bool {
	if v.node != nil && v.node.kind == invalidKind {
		return true
	}
	for path := v.path; ; {
		if d.failed[path] {
			return true
		}
		if path == "" {
			return false
		}
		i := strings.LastIndexAny(path, ".[")
		path = path[:max(i, 0)]
	}
}

// check records a problem with v when ok is false.
func (d *decoder) check(v value, ok bool, format string, args ...any) {
	if !ok {
		d.fail(v, format, args...)
	}
}

// err returns the problems found so far as *Errors, or nil.
func (d *decoder) err() error {
	if len(d.problems) == 0 {
		return nil
	}
	return newErrors(d.problems)
}

func (d *decoder) wrongKind(v value, want kind) {
	d.fail(v, "got %s; want %s", v.node.kind.describe(), want.describe())
}

// object is a mapping whose keys have been checked against the known ones.
type object struct {
	value
	fields map[string]*node
}

// object checks that v is a mapping with known keys only. An absent v gives
// an empty object, so every field takes its default.
func (d *decoder) object(v value, known ...string) object {
	o := object{value: v, fields: make(map[string]*node)}
	if !v.present() {
		return o
	}
	if v.node.kind != mappingKind {
		d.wrongKind(v, mappingKind)
		return o
	}
	for _, f := range v.node.fields {
		if !slices.Contains(known, f.key) {
			d.unknownKey(value{path: join(v.path, f.key), line: f.line}, f.key, known)
			continue
		}
		o.fields[f.key] = f.value
	}
	return o
}

func (d *decoder) unknownKey(v value, key string, known []string) {
	if guess := closest(key, known); guess != "" {
		d.fail(v, "unknown key; did you mean %q?", guess)
		return
	}
	d.fail(v, "unknown key; known keys are %s", strings.Join(known, ", "))
}

// field returns the value of a known key.
func (o object) field(key string) value {
	v := value{path: join(o.path, key), line: o.line, node: o.fields[key]}
	if v.node != nil {
		v.line = v.node.line
	}
	return v
}

// entry is one key of a mapping whose keys are data (header names, table
// names) rather than field names.
type entry struct {
	key   string
	value value
}

// entries returns the keys and values of a mapping whose keys are data.
func (d *decoder) entries(v value) []entry {
	if !v.present() {
		return nil
	}
	if v.node.kind != mappingKind {
		d.wrongKind(v, mappingKind)
		return nil
	}
	entries := make([]entry, len(v.node.fields))
	for i, f := range v.node.fields {
		entries[i] = entry{key: f.key, value: value{path: dataPath(v.path, f.key), line: f.line, node: f.value}}
	}
	return entries
}

// list returns the items of a list, or nil when v is absent.
func (d *decoder) list(v value) []value {
	if !v.present() {
		return nil
	}
	if v.node.kind != listKind {
		d.wrongKind(v, listKind)
		return nil
	}
	items := make([]value, len(v.node.items))
	for i, n := range v.node.items {
		items[i] = value{path: fmt.Sprintf("%s[%d]", v.path, i), line: v.line, node: n}
		if n != nil {
			items[i].line = n.line
		}
	}
	return items
}

// text returns a scalar's content with ${VAR} references expanded. ok is
// false when v is absent, and when a problem was recorded.
func (d *decoder) text(v value) (s string, ok bool) {
	if !v.present() {
		return "", false
	}
	if v.node.kind != scalarKind {
		d.wrongKind(v, scalarKind)
		return "", false
	}
	if !v.node.str {
		return v.node.text, true
	}
	s, err := expand(v.node.text, d.env)
	if err != nil {
		d.fail(v, "%v", err)
		return "", false
	}
	return s, true
}

// string returns a scalar as text, or def when v is absent or invalid.
func (d *decoder) string(v value, def string) string {
	if s, ok := d.text(v); ok {
		return s
	}
	return def
}

// duration returns a Go duration of 0 or more, or def when v is absent or
// invalid.
func (d *decoder) duration(v value, def time.Duration) time.Duration {
	s, ok := d.text(v)
	if !ok {
		return def
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.fail(v, "%q is not a duration; use a Go duration such as 30s", s)
		return def
	}
	if dur < 0 {
		d.fail(v, "%s is negative; use a duration such as %s", s, shortDuration(def))
		return def
	}
	return dur
}

// positiveDuration is duration for values that must be more than 0.
func (d *decoder) positiveDuration(v value, def time.Duration) time.Duration {
	dur := d.duration(v, def)
	d.check(v, dur > 0, "must be more than 0; use a duration such as %s", shortDuration(def))
	return dur
}

// int returns a whole number, or def when v is absent or invalid.
func (d *decoder) int(v value, def int) int {
	s, ok := d.text(v)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		d.fail(v, "%q is not a whole number; write digits only, such as %d", s, def)
		return def
	}
	return n
}

// positiveInt is int for values that must be more than 0.
func (d *decoder) positiveInt(v value, def int) int {
	n := d.int(v, def)
	d.check(v, n > 0, "%d is not more than 0; use a number such as %d", n, def)
	return n
}

// bool returns true or false, or def when v is absent or invalid. Only
// YAML 1.2's true and false (also True, TRUE, False, FALSE) are accepted,
// also from a ${VAR}: yes, on and 1 are refused rather than guessed at.
func (d *decoder) bool(v value, def bool) bool {
	s, ok := d.text(v)
	if !ok {
		return def
	}
	switch s {
	case "true", "True", "TRUE":
		return true
	case "false", "False", "FALSE":
		return false
	}
	d.fail(v, "%q is not a boolean; use true or false", s)
	return def
}

// join appends a field name to a path: "sinks[0]" + "retry" is
// "sinks[0].retry".
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// dataPath appends a key that is data to a path, quoting it when it could be
// confused with path syntax: headers.Authorization, group_by["public.orders"].
func dataPath(path, key string) string {
	if key != "" && !strings.ContainsAny(key, ".[]\" ") {
		return join(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}

// shortDuration formats d without zero trailing units: 5m rather than 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
