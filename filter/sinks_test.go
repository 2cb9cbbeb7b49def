package filter

import (
	"errors"
	"os"
	"testing"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

func TestCompileSinks(t *testing.T) {
	const yaml = `source:
  url: postgres://localhost/app
sinks:
  - name: paid
    url: http://localhost/a
    filter: 'record.status == "paid" && metadata.sink == "paid"'
  - name: all
    url: http://localhost/b
`
	cfg, err := config.Parse("w.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := CompileSinks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) != 1 || exprs["all"] != nil {
		t.Fatalf("got %v, want a filter for sink paid only", exprs)
	}
	m := &change.Message{Action: change.Insert, Record: []byte(`{"status":"paid"}`)}
	for name, want := range map[string]bool{"paid": true, "all": true} {
		if got, err := exprs[name].Match(m); got != want || err != nil {
			t.Errorf("sink %s: got %v, %v; want %v", name, got, err, want)
		}
	}
}

// TestCompileSinksExample compiles the filter of the documented example
// configuration.
func TestCompileSinksExample(t *testing.T) {
	env := map[string]string{
		"PGPASSWORD": "pw", "WALHOOK_TOKEN": "token", "TOKEN": "bearer",
		"WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}
	data, err := os.ReadFile("../testdata/config/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("../testdata/config/full.yaml", data, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := CompileSinks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := exprs["orders"].String(); got != `record.status == "paid"` {
		t.Fatalf("got filter %q for sink orders, want the file's", got)
	}
}

func TestCompileSinksErrors(t *testing.T) {
	const yaml = `source:
  url: postgres://localhost/app
sinks:
  - name: a
    url: http://localhost/a
    filter: row.status == "paid"
  - name: b
    url: http://localhost/b
    filter: 'record.status == "paid" &&'
  - name: c
    url: http://localhost/c
    filter: |
      has(record.status)
        && record.status == nope
  - name: d
    url: http://localhost/d
    filter: "record.id + 1"
`
	cfg, err := config.Parse("w.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = CompileSinks(cfg)
	var cerr *config.Errors
	if !errors.As(err, &cerr) {
		t.Fatalf("got %v, want *config.Errors", err)
	}
	want := []string{
		`w.yaml:6:13: sinks[0].filter: undeclared reference to 'row'; a filter can use action, record, changes, metadata, prefix`,
		`w.yaml:9:40: sinks[1].filter: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`,
		`w.yaml:14:29: sinks[2].filter: undeclared reference to 'nope'; a filter can use action, record, changes, metadata, prefix`,
		`w.yaml:17:14: sinks[3].filter: the expression's type is int, not bool; write a condition such as record.status == "paid"`,
	}
	if len(cerr.Problems) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(cerr.Problems), len(want), err)
	}
	for i, p := range cerr.Problems {
		if p.String() != want[i] {
			t.Errorf("problem %d:\n got %s\nwant %s", i, p, want[i])
		}
	}
}
