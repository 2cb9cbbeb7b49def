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
	Field string // such as "sinks[1].retry.initial"; empty when no single field is at fault
	Msg   string // what is wrong; what would be right
}

// String formats the problem as "file:line: field: message".
func (p Problem) String() string {
	if p.Field == "" {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Field, p.Msg)
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

// newErrors sorts problems by line, keeping the order in which problems on
// the same line were found, and drops exact repeats (a value written once
// behind an anchor and used twice is reported once).
func newErrors(problems []Problem) *Errors {
	problems = slices.Clone(problems)
	slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
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
