package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File  string
	Line  int    // 1-based
	Col   int    // 1-based, in characters; 0 when only the line is known
	Field string // such as "sinks[1].retry.initial"; empty when no single field is at fault
	Msg   string // what is wrong; what would be right
}

// String formats the problem as "file:line: field: message", or
// "file:line:col: field: message" when the column is known.
func (p Problem) String() string {
	at := fmt.Sprintf("%s:%d", p.File, p.Line)
	if p.Col > 0 {
		at = fmt.Sprintf("%s:%d", at, p.Col)
	}
	if p.Field == "" {
		return fmt.Sprintf("%s: %s", at, p.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", at, p.Field, p.Msg)
}

// Errors is every problem found in a configuration file, in line order.
// Parse and Load return it for any problem with the file's content, so a
// caller can tell bad configuration (exit 2) from other failures.
type Errors struct {
	Problems []Problem
}

// Error lists the problems, one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// newErrors sorts problems by line (and column, where known), keeping the order in which problems on
// the same line were found, and drops exact repeats (a value written once
// behind an anchor and used twice is reported once).
func newErrors(problems []Problem) *Errors {
	problems = slices.Clone(problems)
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	seen := make(map[Problem]bool, len(problems))
	unique := problems[:0]
	for _, p := range problems {
		if !seen[p] {
			seen[p] = true
			unique = append(unique, p)
		}
	}
	return &Errors{Problems: unique}
}
