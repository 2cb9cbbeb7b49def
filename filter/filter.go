// Package filter compiles and evaluates a sink's filter: a CEL expression
// over the message as the receiver gets it.
//
// The expression sees five variables:
//
//	action    string: insert, update, delete, truncate, read or message
//	record    the row, a map(string, dyn); null on a truncate
//	changes   old values on an update, a map(string, dyn); null otherwise
//	metadata  map(string, dyn): table_schema, table_name, commit_lsn,
//	          commit_idx (int), commit_timestamp (string), xid (int),
//	          idempotency_key, sink, and backfill_id and
//	          unchanged_toast_columns when present
//	prefix    string: a logical decoding message's prefix; "" otherwise
//
// Values are what the delivered JSON holds: a number written as an integer
// that fits int64 is an int, any other number a double; numeric, timestamps
// and bytea are strings; json and jsonb are maps, lists and scalars; null is
// null. record, changes and metadata are read lazily: an evaluation decodes
// only the fields the expression touches.
package filter

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"github.com/walhook/walhook/change"
)

// Limits that keep one filter from stalling the stream. CostLimit bounds the
// work of one evaluation in CEL's cost units (about one per comparison,
// field access or list element visited, and one per ten bytes a string
// function reads); a typical filter costs under 20 units. It is the limit
// Kubernetes puts on one CEL expression. MaxLength bounds the expression's
// text in characters.
const (
	CostLimit = 1_000_000
	MaxLength = 10_000
)

// Variables lists the names a filter may use.
var Variables = []string{"action", "record", "changes", "metadata", "prefix"}

// Error is a problem with a filter's expression, found by Compile. Line and
// Col are 1-based, inside the expression; Col counts characters (Unicode
// code points), not bytes.
type Error struct {
	Line int
	Col  int
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg) }

// Expr is a compiled filter. It is safe for concurrent use.
type Expr struct {
	text string
	prg  cel.Program
	sink ref.Val // metadata.sink
	// tracked says the program counts its cost as it runs, since CEL
	// could not bound it statically.
	tracked bool
}

// Compile parses and type-checks expr. It must be a boolean condition (or
// dyn, such as record.active, which must then be a bool at run time). A
// problem is returned as *Error.
func Compile(expr string) (*Expr, error) {
	env, err := environment()
	if err != nil {
		return nil, err
	}
	if n := utf8.RuneCountInString(expr); n > MaxLength {
		return nil, &Error{Line: 1, Col: 1, Msg: fmt.Sprintf("the expression has %d characters; a filter may have at most %d", n, MaxLength)}
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, issueError(iss.Errors())
	}
	switch t := ast.OutputType(); t.Kind() {
	case types.BoolKind, types.DynKind:
	default:
		line, col := start(expr)
		return nil, &Error{Line: line, Col: col,
			Msg: fmt.Sprintf("the expression's type is %s, not bool; write a condition such as record.status == \"paid\"", t)}
	}
	est, err := env.EstimateCost(ast, unknownSizes{})
	if err == nil && est.Min > CostLimit {
		line, col := start(expr)
		return nil, &Error{Line: line, Col: col,
			Msg: fmt.Sprintf("the expression costs at least %d to evaluate, more than the limit of %d; make it do less work", est.Min, CostLimit)}
	}
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	tracked := err != nil || est.Max > CostLimit // no static bound
	if tracked {
		opts = append(opts, cel.CostLimit(CostLimit))
	}
	prg, err := env.Program(ast, opts...)
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	return &Expr{text: expr, prg: prg, sink: types.String(""), tracked: tracked}, nil
}

// Bind returns e with metadata.sink set to the sink's name. The compiled
// program is shared; e is unchanged.
func (e *Expr) Bind(sink string) *Expr {
	if e == nil {
		return nil
	}
	b := *e
	b.sink = types.String(sink)
	return &b
}

// String returns the expression as written.
func (e *Expr) String() string {
	if e == nil {
		return ""
	}
	return e.text
}

// Match evaluates the filter on m. A nil *Expr (no filter) matches every
// message. An evaluation error, such as record.status on a delete whose
// record holds only the key, or a result that is not a bool, does not
// match: Match returns false with the error, for the caller to count and
// log.
func (e *Expr) Match(m *change.Message) (bool, error) {
	if e == nil {
		return true, nil
	}
	a := activations.Get().(*activation)
	a.reset(m, e.sink)
	out, _, err := e.prg.Eval(a)
	a.reset(nil, nil)
	activations.Put(a)
	if err != nil {
		return false, fmt.Errorf("evaluate filter: %w", err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("evaluate filter: the result's type is %s, not bool", out.Type().TypeName())
	}
	return bool(b), nil
}

var (
	envOnce sync.Once
	env     *cel.Env
	envErr  error
)

// environment returns the CEL environment every filter is compiled in.
func environment() (*cel.Env, error) {
	envOnce.Do(func() {
		// record and changes are maps, or null (a truncate's record, the
		// changes of anything but an update). CEL has no nullable map type,
		// so they are declared dyn: "changes != null" must compile.
		env, envErr = cel.NewEnv(
			cel.Variable("action", cel.StringType),
			cel.Variable("record", cel.DynType),
			cel.Variable("changes", cel.DynType),
			cel.Variable("metadata", cel.MapType(cel.StringType, cel.DynType)),
			cel.Variable("prefix", cel.StringType),
			cel.CrossTypeNumericComparisons(true),
			cel.ParserExpressionSizeLimit(MaxLength),
		)
		if envErr != nil {
			envErr = fmt.Errorf("filter environment: %w", envErr)
		}
	})
	return env, envErr
}

// unknownSizes tells CEL's cost estimator nothing about the variables, so
// it assumes every string, list and map may be as large as possible. When
// even then the estimate is within CostLimit, no evaluation can exceed it
// and the program needs no cost tracking at run time, which would make a
// simple comparison about three times slower (BenchmarkMatchCostTracked).
type unknownSizes struct{}

func (unknownSizes) EstimateSize(checker.AstNode) *checker.SizeEstimate { return nil }

func (unknownSizes) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// issueError turns the first of CEL's compile errors (they are sorted by
// position) into an *Error.
func issueError(errs []*common.Error) error {
	if len(errs) == 0 {
		return errors.New("filter: compile failed without a message")
	}
	first := errs[0]
	line, col := position(first.Location)
	msg := strings.TrimSuffix(first.Message, " (in container '')")
	if strings.HasPrefix(msg, "undeclared reference to ") {
		msg += "; a filter can use " + strings.Join(Variables, ", ")
	}
	return &Error{Line: line, Col: col, Msg: msg}
}

// position converts a CEL location (1-based line, 0-based column) to
// 1-based line and column; an unknown location is the expression's start.
func position(loc common.Location) (line, col int) {
	if loc == nil || loc.Line() < 1 {
		return 1, 1
	}
	return loc.Line(), max(loc.Column(), 0) + 1
}

// start returns the line and column of the first character of expr that is
// not white space.
func start(expr string) (line, col int) {
	line, col = 1, 1
	for _, r := range expr {
		switch r {
		case '\n':
			line, col = line+1, 1
		case ' ', '\t', '\r':
			col++
		default:
			return line, col
		}
	}
	return line, col
}

// activation resolves the filter's variables for one message. It is reused
// through a pool, so an evaluation allocates only for the values it reads.
type activation struct {
	m        *change.Message
	record   object
	changes  object
	metadata metadata
}

var activations = sync.Pool{New: func() any { return new(activation) }}

func (a *activation) reset(m *change.Message, sink ref.Val) {
	*a = activation{m: m}
	if m != nil {
		a.record = object{raw: m.Record, unique: true}
		a.changes = object{raw: m.Changes, unique: true}
		if m.Rel != nil && (m.RecordFields != nil || len(m.Record) <= 2) {
			a.record.rel, a.record.fields = m.Rel, m.RecordFields
		}
		if m.Rel != nil && (m.ChangesFields != nil || len(m.Changes) <= 2) {
			a.changes.rel, a.changes.fields = m.Rel, m.ChangesFields
		}
		a.metadata = metadata{m: m, sink: sink}
	}
}

// actionValues holds each action's CEL value, so resolving action does not
// allocate.
var actionValues = func() map[change.Action]ref.Val {
	vals := make(map[change.Action]ref.Val, len(change.Actions))
	for _, a := range change.Actions {
		vals[a] = types.String(a)
	}
	return vals
}()

var (
	nullValue   ref.Val = types.NullValue
	emptyString ref.Val = types.String("")
)

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "action":
		if v, ok := actionValues[a.m.Action]; ok {
			return v, true
		}
		return types.String(a.m.Action), true
	case "record":
		if a.m.Record == nil {
			return nullValue, true
		}
		return &a.record, true
	case "changes":
		if a.m.Changes == nil {
			return nullValue, true
		}
		return &a.changes, true
	case "metadata":
		return &a.metadata, true
	case "prefix":
		if a.m.Prefix == "" {
			return emptyString, true
		}
		return types.String(a.m.Prefix), true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }
