package config

import (
	"strings"
	"unicode/utf8"
)

// Origin says where a string value was written in the file, so that a
// position inside the value, such as a filter's compile error, can be
// reported as a position in the file.
type Origin struct {
	// Line and Col (1-based, Col in characters) are where the value
	// starts in the file: its first character, its opening quote, or the
	// | or > of a block scalar. Both are 0 when the value is absent.
	Line, Col int

	// chars holds, per line of the value, the file position of each of
	// its characters; nil when they could not be worked out.
	chars [][]filePos
}

type filePos struct{ line, col int }

// At returns the file position of the character at line and col (1-based,
// col in characters) of the value; col may be one past the end of its line,
// where an expression that ends too early is reported. Every character maps
// exactly for plain, single-quoted and double-quoted scalars (escapes and
// folded line breaks included) and for literal (|) and folded (>) block
// scalars. Where that is not possible (a value changed by ${VAR}
// expansion, from the first expanded character on, or a position outside
// the value) At returns where the value starts.
func (o Origin) At(line, col int) (fileLine, fileCol int) {
	if line < 1 || line > len(o.chars) || col < 1 {
		return o.Line, o.Col
	}
	chars := o.chars[line-1]
	switch {
	case col <= len(chars):
		p := chars[col-1]
		return p.line, p.col
	case col == len(chars)+1 && len(chars) > 0:
		p := chars[len(chars)-1]
		return p.line, p.col + 1
	}
	return o.Line, o.Col
}

// scalarStyle is how a scalar was written.
type scalarStyle int

const (
	plainStyle scalarStyle = iota
	singleQuoted
	doubleQuoted
	literalBlock // |
	foldedBlock  // >
)

// origin returns where v, a scalar whose text after ${VAR} expansion is
// expanded, was written.
func (d *decoder) origin(v value, expanded string) Origin {
	if !v.present() || v.node.kind != scalarKind {
		return Origin{}
	}
	n := v.node
	o := Origin{Line: n.line, Col: n.col}
	chars := locate(d.sourceLines(), n.style, n.line, n.col, []rune(n.text))
	if chars == nil {
		return o
	}
	// Expansion changes the text from the first ${ on; keep only what
	// precedes the first difference.
	same := commonPrefix([]rune(n.text), []rune(expanded))
	chars = chars[:same]
	for _, text := range strings.Split(string([]rune(expanded)[:same]), "\n") {
		k := utf8.RuneCountInString(text)
		o.chars = append(o.chars, chars[:k])
		chars = chars[min(k+1, len(chars)):]
	}
	return o
}

// sourceLines returns the file as lines of characters.
func (d *decoder) sourceLines() [][]rune {
	if d.lines == nil {
		for _, l := range strings.Split(string(d.src), "\n") {
			d.lines = append(d.lines, []rune(strings.TrimSuffix(l, "\r")))
		}
	}
	return d.lines
}

func commonPrefix(a, b []rune) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// locate finds the file position of every character of text, the value of
// a scalar of the given style that starts at line and col, by walking the
// source as YAML reads it. It returns nil when the source does not give
// text the way it expects, so a position is never wrong, only missing.
func locate(src [][]rune, style scalarStyle, line, col int, text []rune) []filePos {
	s := scanner{src: src, line: line - 1, col: col - 1, indent: -1}
	switch style {
	case singleQuoted, doubleQuoted:
		s.col++ // the opening quote
	case literalBlock, foldedBlock:
		if !s.startBlock(text) {
			return nil
		}
	}
	out := make([]filePos, 0, len(text))
	for i := 0; i < len(text); i++ {
		r := text[i]
		pos := filePos{s.line + 1, s.col + 1}
		switch {
		case style == literalBlock:
			if !s.literal(r) {
				return nil
			}
		case style == singleQuoted && r == '\'' && s.at(0) == '\'' && s.at(1) == '\'':
			s.col += 2
		case style == doubleQuoted && s.at(0) == '\\' && s.restBlank(1):
			// A backslash before a line break joins the lines.
			s.nextLine()
			i--
			continue
		case style == doubleQuoted && s.at(0) == '\\':
			n := escapeLen(s.at(1))
			if n == 0 {
				return nil
			}
			s.col += n
		case s.restBlank(0) && s.line+1 < len(s.src) && (r == ' ' || r == '\n'):
			// A line break: folded into a space, or kept as \n for
			// each blank line (and, in a folded block, before a more
			// indented line).
			pos = filePos{s.line + 1, len(s.src[s.line]) + 1}
			if !s.fold(r, style) {
				return nil
			}
		case s.at(0) == r:
			s.col++
		default:
			return nil
		}
		out = append(out, pos)
	}
	return out
}

// scanner is a position in the source lines.
type scanner struct {
	src       [][]rune
	line, col int // 0-based
	indent    int // a block scalar's content indentation; -1 for flow scalars
}

// at returns the character k places after the position, or -1.
func (s *scanner) at(k int) rune {
	if s.line < len(s.src) && s.col+k < len(s.src[s.line]) {
		return s.src[s.line][s.col+k]
	}
	return -1
}

// restBlank reports whether the line holds only spaces and tabs from k
// places after the position on.
func (s *scanner) restBlank(k int) bool {
	if s.line >= len(s.src) {
		return false
	}
	for _, c := range s.src[s.line][min(s.col+k, len(s.src[s.line])):] {
		if c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

func (s *scanner) blankLine(line int) bool {
	return strings.TrimSpace(string(s.src[line])) == ""
}

// nextLine moves to the first content character of the next line: past
// all leading white space in a flow scalar, past the indentation in a
// block scalar.
func (s *scanner) nextLine() {
	s.line++
	s.col = 0
	if s.indent >= 0 {
		s.col = min(s.indent, len(s.src[s.line]))
		return
	}
	for s.col < len(s.src[s.line]) && (s.src[s.line][s.col] == ' ' || s.src[s.line][s.col] == '\t') {
		s.col++
	}
}

// fold consumes a line break that the value holds as r.
func (s *scanner) fold(r rune, style scalarStyle) bool {
	next := s.line + 1
	switch {
	case r == '\n' && style == foldedBlock && (s.moreIndented(s.line) || s.moreIndented(s.nextContent())):
		// Around a more indented line every break is kept: this one
		// is the \n, and each blank line after it another.
		s.line++
		if s.blankLine(s.line) {
			s.col = len(s.src[s.line])
		} else {
			s.col = min(s.indent, len(s.src[s.line]))
		}
		return true
	case r == '\n' && s.blankLine(next):
		s.line++ // the blank line is the \n; the break before it is dropped
		s.col = len(s.src[s.line])
		if next+1 < len(s.src) && !s.blankLine(next+1) {
			s.nextLine()
		}
		return true
	case r == ' ' && !s.blankLine(next):
		s.nextLine()
		return true
	case r == '\n' && style == foldedBlock:
		s.nextLine() // before or after a more indented line
		return true
	}
	return false
}

// nextContent returns the next line after the position that is not blank,
// or -1.
func (s *scanner) nextContent() int {
	for l := s.line + 1; l < len(s.src); l++ {
		if !s.blankLine(l) {
			return l
		}
	}
	return -1
}

// moreIndented reports whether a line of a block scalar starts with white
// space beyond the block's indentation.
func (s *scanner) moreIndented(line int) bool {
	if line < 0 || s.indent < 0 || s.indent >= len(s.src[line]) {
		return false
	}
	c := s.src[line][s.indent]
	return c == ' ' || c == '\t'
}

// startBlock moves to the content of a block scalar, on the line after its
// header, and works out its indentation: the first content line's leading
// spaces less those the value keeps.
func (s *scanner) startBlock(text []rune) bool {
	s.line++
	first := s.line
	for first < len(s.src) && s.blankLine(first) {
		first++
	}
	if first >= len(s.src) {
		return false
	}
	lead := 0
	for lead < len(s.src[first]) && s.src[first][lead] == ' ' {
		lead++
	}
	kept := 0
	for _, r := range text {
		if r == '\n' {
			kept = 0
			continue
		}
		if r != ' ' {
			break
		}
		kept++
	}
	if kept > lead {
		return false
	}
	s.indent = lead - kept
	s.col = min(s.indent, len(s.src[s.line]))
	return true
}

// literal consumes one character of a literal block scalar, whose lines are
// the file's lines less their indentation.
func (s *scanner) literal(r rune) bool {
	if r == '\n' {
		if s.line+1 >= len(s.src) {
			return true // the final line break
		}
		s.nextLine()
		return true
	}
	if s.at(0) != r {
		return false
	}
	s.col++
	return true
}

// escapeLen returns the length of a double-quoted escape whose letter is
// c, or 0 for an unknown one.
func escapeLen(c rune) int {
	switch c {
	case 'x':
		return 4
	case 'u':
		return 6
	case 'U':
		return 10
	case '0', 'a', 'b', 't', '\t', 'n', 'v', 'f', 'r', 'e', ' ', '"', '/', '\\', 'N', '_', 'L', 'P':
		return 2
	}
	return 0
}
