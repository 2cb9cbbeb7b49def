package config

import (
	"errors"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// kind is the shape of a YAML value.
type kind int

const (
	nullKind kind = iota
	scalarKind
	mappingKind
	listKind
	invalidKind // reported while the tree was built; the decoder ignores it
)

// describe names the kind for "got a list; want a mapping" messages.
func (k kind) describe() string {
	switch k {
	case scalarKind:
		return "a single value"
	case mappingKind:
		return "a mapping"
	case listKind:
		return "a list"
	}
	return "nothing"
}

// node is a YAML value reduced to what the decoder needs: its shape, its
// line, and its content. Anchors, aliases, merge keys and tags are resolved
// when the tree is built, so the decoder never sees them.
type node struct {
	kind  kind
	line  int
	col   int         // where the value starts, for scalars
	style scalarStyle // how a scalar was written

	text   string // scalar, as written (before ${VAR} expansion)
	str    bool   // scalar is a YAML string, so ${VAR} references in it expand
	fields []field
	items  []*node
}

// field is one key of a mapping.
type field struct {
	key   string
	line  int
	value *node
}

// tree parses data and returns its single document as a node tree. It
// returns nil for an empty document and false when the YAML is malformed;
// problems are recorded on d.
func (d *decoder) tree(data []byte) (*node, bool) {
	d.src = data
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		d.syntaxError(err)
		return nil, false
	}
	if len(file.Docs) == 0 {
		return nil, true
	}
	for _, doc := range file.Docs[1:] {
		line := 1
		if doc.Start != nil {
			line = doc.Start.Position.Line
		}
		d.problemAt(line, "", "a second YAML document starts here; keep the whole configuration in one document")
	}
	return d.convert(file.Docs[0].Body), true
}

// syntaxError records a YAML syntax error at the position goccy reports.
// Only goccy's message is used, not its source excerpt, which could show a
// secret written on the offending line.
func (d *decoder) syntaxError(err error) {
	var yerr yaml.Error
	if !errors.As(err, &yerr) {
		d.problemAt(1, "", "invalid YAML: "+err.Error())
		return
	}
	line := 1
	if tk := yerr.GetToken(); tk != nil && tk.Position != nil {
		line = tk.Position.Line
	}
	d.problemAt(line, "", "invalid YAML: "+yerr.GetMessage())
}

// convert turns a goccy AST node into a node, resolving anchors, aliases,
// merge keys and tags.
func (d *decoder) convert(n ast.Node) *node {
	if n == nil {
		return nil
	}
	line := lineOf(n)
	switch n := n.(type) {
	case *ast.NullNode:
		return &node{kind: nullKind, line: line}
	case *ast.StringNode:
		style := plainStyle
		switch n.GetToken().Type {
		case token.SingleQuoteType:
			style = singleQuoted
		case token.DoubleQuoteType:
			style = doubleQuoted
		}
		return &node{kind: scalarKind, line: line, col: colOf(n), style: style, text: n.Value, str: true}
	case *ast.LiteralNode:
		style := literalBlock
		if n.GetToken().Type == token.FoldedType {
			style = foldedBlock
		}
		return &node{kind: scalarKind, line: line, col: colOf(n), style: style, text: n.Value.Value, str: true}
	case *ast.TagNode:
		return d.convert(n.Value)
	case *ast.AnchorNode:
		anchored := d.convert(n.Value)
		d.anchors[n.Name.GetToken().Value] = anchored
		return anchored
	case *ast.AliasNode:
		name := n.Value.GetToken().Value
		anchored, ok := d.anchors[name]
		if !ok {
			d.problemAt(line, "", "alias *"+name+" refers to no anchor; define &"+name+" before using it")
			return &node{kind: invalidKind, line: line}
		}
		return anchored
	case *ast.MappingNode:
		return d.mapping(line, n.Values)
	case *ast.MappingValueNode:
		return d.mapping(line, []*ast.MappingValueNode{n})
	case *ast.SequenceNode:
		list := &node{kind: listKind, line: line}
		for _, item := range n.Values {
			list.items = append(list.items, d.convert(item))
		}
		return list
	case *ast.MappingKeyNode:
		return d.convert(n.Value)
	case ast.ScalarNode:
		// Numbers, booleans, infinities, NaN: keep the text as written, so
		// a name such as 1.10 is not read back as 1.1.
		return &node{kind: scalarKind, line: line, col: colOf(n), text: n.GetToken().Value}
	}
	d.problemAt(line, "", "unsupported YAML "+n.Type().String()+"; use plain mappings, lists and values")
	return &node{kind: invalidKind, line: line}
}

// mapping converts the entries of a mapping. Keys merged in with "<<" come
// after the mapping's own keys and never replace them; of several merged
// mappings, the first to have a key wins, as in YAML 1.1.
func (d *decoder) mapping(line int, entries []*ast.MappingValueNode) *node {
	m := &node{kind: mappingKind, line: line}
	var merged []field
	for _, entry := range entries {
		if entry.Key.IsMergeKey() {
			merged = append(merged, d.mergeSources(lineOf(entry.Key), d.convert(entry.Value))...)
			continue
		}
		key := d.convert(entry.Key)
		switch key.kind {
		case invalidKind:
			continue
		case scalarKind:
			m.fields = append(m.fields, field{key: key.text, line: key.line, value: d.convert(entry.Value)})
		default:
			d.problemAt(key.line, "", "a mapping key must be a single value; write key: value")
		}
	}
	for _, f := range merged {
		if !m.has(f.key) {
			m.fields = append(m.fields, f)
		}
	}
	return m
}

// mergeSources returns the fields a "<<" merge key brings in: those of one
// mapping, or of a list of mappings.
func (d *decoder) mergeSources(line int, merged *node) []field {
	sources := []*node{merged}
	if merged != nil && merged.kind == listKind {
		sources = merged.items
	}
	var fields []field
	for _, src := range sources {
		if src != nil && src.kind == invalidKind {
			continue
		}
		if src == nil || src.kind != mappingKind {
			d.problemAt(line, "", "<< merges mappings only; write <<: *anchor with an anchored mapping")
			continue
		}
		fields = append(fields, src.fields...)
	}
	return fields
}

// lineOf returns the line an AST node starts on.
func lineOf(n ast.Node) int {
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line
	}
	return 1
}

// colOf returns the column (1-based, in characters) an AST node starts at.
func colOf(n ast.Node) int {
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Column
	}
	return 1
}

// has reports whether a mapping node has the key.
func (n *node) has(key string) bool {
	for _, f := range n.fields {
		if f.key == key {
			return true
		}
	}
	return false
}
