package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/server"
)

// TestCELFilters: one sink filters on record, one on metadata; each gets
// exactly its messages, and what they filter out does not hold the slot.
func TestCELFilters(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE a (id int PRIMARY KEY, status text, amount numeric)`)
	exec1(t, conn, `CREATE TABLE b (id int PRIMARY KEY)`)
	paid, onlyB := webhooktest.New(t, ""), webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, dsn, "f_cel", "",
		sinkConf{Name: "paid", URL: paid.URL, Extra: "    filter: 'has(record.status) && record.status == \"paid\" && action != \"delete\"'\n"},
		sinkConf{Name: "only-b", URL: onlyB.URL, Extra: "    filter: metadata.table_name == \"b\" && metadata.sink == \"only-b\"\n"})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "f_cel", d)

	exec1(t, conn, `INSERT INTO a SELECT i, CASE WHEN i % 3 = 0 THEN 'paid' ELSE 'new' END, i FROM generate_series(1, 30) i`)
	exec1(t, conn, `UPDATE a SET status = 'paid' WHERE id = 1`)
	exec1(t, conn, `DELETE FROM a WHERE id = 3`) // the record holds only the key: has() keeps the filter safe
	exec1(t, conn, `INSERT INTO b SELECT i FROM generate_series(1, 5) i`)
	exec1(t, conn, `INSERT INTO a VALUES (100, 'paid', 1)`) // the last one for "paid"

	got := paid.WaitCount(t, 12, 30*time.Second)
	var ids []int
	for _, m := range got {
		if m.Metadata.TableName != "a" || !strings.Contains(string(m.Record), `"status":"paid"`) {
			t.Errorf("sink paid got %s %s.%s %s", m.Action, m.Metadata.TableSchema, m.Metadata.TableName, m.Record)
		}
		ids = append(ids, rowID(t, m))
	}
	sort.Ints(ids)
	if want := "[1 3 6 9 12 15 18 21 24 27 30 100]"; fmt.Sprint(ids) != want {
		t.Errorf("sink paid got rows %v, want %s", ids, want)
	}
	b := onlyB.WaitCount(t, 5, 30*time.Second)
	for _, m := range b {
		if m.Metadata.TableName != "b" {
			t.Errorf("sink only-b got a message of table %s", m.Metadata.TableName)
		}
	}
	// Filtered-out messages are acknowledged at once: the slot follows
	// the WAL.
	target := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "the slot catches up to "+target.String(), func() bool {
		return readSlot(t, conn, "f_cel").confirmed >= target
	})
	if n := len(onlyB.Messages()); n != 5 {
		t.Errorf("sink only-b got %d messages, want 5", n)
	}
	if n := len(paid.Messages()); n != 12 {
		t.Errorf("sink paid got %d messages, want 12", n)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestCELFilterErrors: a filter that does not compile, or is not boolean,
// is refused by check and run with exit 2 at its file:line:col.
func TestCELFilterErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, tc := range map[string]struct{ filter, want string }{
		"syntax":   {`'record.status == '`, ":11:31: sinks[0].filter: "},
		"not bool": {`'record.amount + 1'`, ":11:14: sinks[0].filter: "},
		"unknown":  {`'row.status == "paid"'`, ":11:14: sinks[0].filter: "},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
		yaml := fmt.Sprintf(`# line 1
source:
  url: postgres://localhost/app
server:
  listen: ""
state:
  path: %s
sinks:
  - name: s
    url: http://127.0.0.1:1/
    filter: %s
`, filepath.Join(dir, "state"), tc.filter)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"check", "run"} {
			code, out := runWalhook(t, cmd, "--config", path)
			if code != 2 || !strings.Contains(out, filepath.Base(path)+tc.want) {
				t.Errorf("%s: walhook %s exited %d, want 2 and %q in:\n%s", name, cmd, code, filepath.Base(path)+tc.want, out)
			}
		}
	}
}

// TestFilterErrorsCountedAndKept: a filter that fails on a message (a
// NULL compared with a number) leaves it out under filter_errors: skip and
// keeps it as a dead letter with reason filter_error under dead_letter;
// both count it in status and walhook_filter_errors_total, and neither
// holds the slot.
func TestFilterErrorsCountedAndKept(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE t (id int PRIMARY KEY, n int)`)
	skip, kept := webhooktest.New(t, ""), webhooktest.New(t, "")
	filter := "    filter: 'record.n > 0'\n"
	cfg := writeConfig(t, t.TempDir(), dsn, "f_errors", "  tables: [public.t]\n",
		sinkConf{Name: "skip", URL: skip.URL, Extra: filter},
		sinkConf{Name: "kept", URL: kept.URL, Extra: filter + "    filter_errors: dead_letter\n"})
	addr := withAdmin(t, cfg)
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "f_errors", d)
	exec1(t, conn, `INSERT INTO t VALUES (1, 1), (2, NULL), (3, 3)`)
	for name, r := range map[string]*webhooktest.Receiver{"skip": skip, "kept": kept} {
		got := r.WaitCount(t, 2, 30*time.Second)
		if ids := []int{rowID(t, got[0]), rowID(t, got[1])}; !slices.Equal(slices.Sorted(slices.Values(ids)), []int{1, 3}) {
			t.Errorf("sink %s got rows %v, want [1 3]", name, ids)
		}
	}
	target := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "the slot past the row the filter failed on", func() bool {
		return readSlot(t, conn, "f_errors").confirmed >= target
	})
	m := metrics(t, addr)
	for _, name := range []string{"skip", "kept"} {
		if v := m[`walhook_filter_errors_total{sink="`+name+`"}`]; v != 1 {
			t.Errorf("walhook_filter_errors_total of %s: got %v, want 1", name, v)
		}
	}
	code, body := adminGet(t, addr, "/api/v1/status", testToken)
	var st server.StatusReport
	if code != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("GET /api/v1/status: %d %s", code, body)
	}
	for _, s := range st.Sinks {
		if s.FilterErrors != 1 {
			t.Errorf("status of %s: got filter_errors %d, want 1", s.Name, s.FilterErrors)
		}
	}
	code, out := runWalhook(t, "dlq", "list", "--sink", "kept", "--json", "--config", cfg)
	var list []server.DeadLetter
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Count != 1 || list[0].Reason != "filter_error" {
		t.Fatalf("dlq list of kept: exit %d, want one dead letter of one message with reason filter_error:\n%s", code, out)
	}
	code, out = runWalhook(t, "dlq", "show", list[0].ID, "--sink", "kept", "--config", cfg)
	if code != 0 || !strings.Contains(out, `"id": 2`) && !strings.Contains(out, `"id":2`) {
		t.Errorf("dlq show: exit %d, want row 2 in:\n%s", code, out)
	}
	if code, out := runWalhook(t, "dlq", "list", "--sink", "skip", "--json", "--config", cfg); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("dlq list of skip: exit %d, want no dead letters:\n%s", code, out)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}
