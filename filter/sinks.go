package filter

import (
	"errors"
	"fmt"

	"github.com/walhook/walhook/config"
)

// CompileSinks compiles the filter of every sink of cfg, each bound to its
// sink's name. The map holds the sinks that have a filter, by name; the
// others have none, and a nil *Expr matches every message. Mistakes in the
// expressions are returned together as *config.Errors, each at its place in
// the file:
//
//	walhook.yaml:14:30: sinks[0].filter: undeclared reference to 'row'; a filter can use action, record, changes, metadata, prefix
func CompileSinks(cfg *config.Config) (map[string]*Expr, error) {
	exprs := make(map[string]*Expr)
	var problems []config.Problem
	for i, s := range cfg.Sinks {
		if s.Filter == "" {
			continue
		}
		e, err := Compile(s.Filter)
		var ferr *Error
		switch {
		case errors.As(err, &ferr):
			line, col := s.FilterOrigin.At(ferr.Line, ferr.Col)
			problems = append(problems, config.Problem{
				File: cfg.Path, Line: line, Col: col,
				Field: fmt.Sprintf("sinks[%d].filter", i),
				Msg:   ferr.Msg,
			})
		case err != nil:
			return nil, fmt.Errorf("sink %s: %w", s.Name, err)
		default:
			exprs[s.Name] = e.Bind(s.Name)
		}
	}
	if len(problems) > 0 {
		return nil, &config.Errors{Problems: problems}
	}
	return exprs, nil
}
