package config

import (
	"strings"
	"testing"
)

// filterYAML is a configuration whose one sink has the filter written as
// the given YAML lines (starting with "filter:"), at line 6 of the file.
func filterYAML(filter ...string) string {
	return "source:\n  url: postgres://localhost/app\nsinks:\n  - name: s\n    url: http://localhost/hooks\n    " +
		strings.Join(filter, "\n    ") + "\n    batch_size: 1\n"
}

func TestFilterOrigin(t *testing.T) {
	type at struct{ line, col, fileLine, fileCol int }
	tests := []struct {
		name   string
		yaml   []string
		filter string // the value as parsed
		at     []at   // positions in the expression and where they are in the file
	}{
		{
			name:   "plain",
			yaml:   []string{`filter: record.status == "paid"`},
			filter: `record.status == "paid"`,
			at:     []at{{1, 1, 6, 13}, {1, 8, 6, 20}, {1, 23, 6, 35}, {1, 24, 6, 36}},
		},
		{
			name:   "single-quoted with a doubled quote",
			yaml:   []string{`filter: 'record.name == ''o''''neil'' && x'`},
			filter: `record.name == 'o''neil' && x`,
			at:     []at{{1, 1, 6, 14}, {1, 16, 6, 29}, {1, 18, 6, 32}, {1, 19, 6, 34}, {1, 29, 6, 46}},
		},
		{
			name:   "double-quoted with escapes",
			yaml:   []string{`filter: "record.s == \"\u00e9\" && \t x"`},
			filter: "record.s == \"é\" && \t x",
			at:     []at{{1, 1, 6, 14}, {1, 13, 6, 26}, {1, 14, 6, 28}, {1, 15, 6, 34}, {1, 20, 6, 40}, {1, 22, 6, 43}},
		},
		{
			name:   "plain over two lines",
			yaml:   []string{`filter: record.a == 1 &&`, `  record.b == 2`},
			filter: `record.a == 1 && record.b == 2`,
			at:     []at{{1, 1, 6, 13}, {1, 17, 6, 29}, {1, 18, 7, 7}, {1, 30, 7, 19}},
		},
		{
			name:   "double-quoted over lines, with a continuation",
			yaml:   []string{`filter: "record.a == 1`, `  && rec\`, `  ord.b == 2"`},
			filter: `record.a == 1 && record.b == 2`,
			at:     []at{{1, 14, 6, 27}, {1, 15, 7, 7}, {1, 21, 8, 7}},
		},
		{
			name:   "literal block",
			yaml:   []string{`filter: |`, `  record.a == 1`, ``, `    && nope`},
			filter: "record.a == 1\n\n  && nope\n",
			at:     []at{{1, 1, 7, 7}, {1, 13, 7, 19}, {3, 6, 9, 12}, {3, 10, 9, 16}},
		},
		{
			name:   "literal block with a comment and an indentation indicator",
			yaml:   []string{`filter: |2-  # the filter`, `     record.a`},
			filter: "   record.a", // indented 2 more than the key
			at:     []at{{1, 1, 7, 7}, {1, 4, 7, 10}},
		},
		{
			name:   "folded block",
			yaml:   []string{`filter: >`, `  record.a == 1`, `  && record.b == 2`},
			filter: "record.a == 1 && record.b == 2\n",
			at:     []at{{1, 1, 7, 7}, {1, 14, 7, 20}, {1, 15, 8, 7}, {1, 18, 8, 10}},
		},
		{
			name:   "outside the value",
			yaml:   []string{`filter: x == 1`},
			filter: `x == 1`,
			at:     []at{{2, 1, 6, 13}, {1, 9, 6, 13}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("f.yaml", []byte(filterYAML(tt.yaml...)), nil)
			if err != nil {
				t.Fatal(err)
			}
			s := c.Sinks[0]
			if s.Filter != tt.filter {
				t.Fatalf("got filter %q, want %q", s.Filter, tt.filter)
			}
			if s.FilterOrigin.chars == nil {
				t.Fatalf("no character positions for %q", tt.filter)
			}
			for _, a := range tt.at {
				if l, c := s.FilterOrigin.At(a.line, a.col); l != a.fileLine || c != a.fileCol {
					t.Errorf("At(%d, %d): got %d:%d, want %d:%d", a.line, a.col, l, c, a.fileLine, a.fileCol)
				}
			}
		})
	}
}

// TestFilterOriginEveryCharacter checks, for scalars without escapes, that
// every character of the value maps onto the same character in the file.
func TestFilterOriginEveryCharacter(t *testing.T) {
	for _, yaml := range [][]string{
		{`filter: record.status == "paid" && metadata.sink == "s"`},
		{`filter: 'record.status == "paid"'`},
		{`filter: "record.status == 'paid'"`},
		{`filter: record.a == 1`, `  &&`, ``, `  record.b ==`, `     2`},
		{`filter: |`, `  record.a == 1`, `    && record.b == 2`, ``, `  || record.c`},
		{`filter: >-`, `  record.a == 1`, `  && record.b == 2`, ``, `    || record.c`, `  && x`},
	} {
		data := filterYAML(yaml...)
		c, err := Parse("f.yaml", []byte(data), nil)
		if err != nil {
			t.Fatal(err)
		}
		o := c.Sinks[0].FilterOrigin
		if o.chars == nil {
			t.Fatalf("%q: no character positions", yaml)
		}
		file := strings.Split(data, "\n")
		for i, line := range strings.Split(c.Sinks[0].Filter, "\n") {
			for j, r := range []rune(line) {
				if r == ' ' {
					continue // a folded line break reads as a space
				}
				fl, fc := o.At(i+1, j+1)
				if got := []rune(file[fl-1]); fc > len(got) || got[fc-1] != r {
					t.Errorf("%q: character %d:%d %q maps to %d:%d, which is not it", yaml, i+1, j+1, r, fl, fc)
				}
			}
		}
	}
}

// TestFilterOriginWideCharacters checks that columns count characters, not
// bytes, also for what precedes the value on its line.
func TestFilterOriginWideCharacters(t *testing.T) {
	data := "source: {url: postgres://localhost/app}\nsinks:\n  - {url: \"http://h/é😀\", name: s, filter: 'x == \"é\" && y'}\n"
	c, err := Parse("f.yaml", []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The quote is the 43rd character of line 3; "y" is the 13th of the value.
	if l, c := c.Sinks[0].FilterOrigin.At(1, 13); l != 3 || c != 56 {
		t.Errorf("got %d:%d, want 3:56", l, c)
	}
}

func TestFilterOriginAfterExpansion(t *testing.T) {
	data := filterYAML(`filter: metadata.sink == "${SINK}" && nope`)
	c, err := Parse("f.yaml", []byte(data), lookup(map[string]string{"SINK": "orders-v2"}))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Sinks[0].FilterOrigin
	if l, c := o.At(1, 5); l != 6 || c != 17 {
		t.Errorf("before the expansion: got %d:%d, want 6:17", l, c)
	}
	if l, c := o.At(1, 40); l != 6 || c != 13 {
		t.Errorf("after the expansion: got %d:%d, want the value's start 6:13", l, c)
	}
}

func TestProblemWithColumn(t *testing.T) {
	p := Problem{File: "w.yaml", Line: 3, Col: 9, Field: "sinks[0].filter", Msg: "bad"}
	if got, want := p.String(), "w.yaml:3:9: sinks[0].filter: bad"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	p.Col = 0
	if got, want := p.String(), "w.yaml:3: sinks[0].filter: bad"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
