package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// TestColumnSelection: a sink that excludes a secret column and one that
// includes two columns never receive a byte of it, in records, old values
// or unchanged_toast_columns, also when it is TOASTed; source.columns
// becomes the column list of the publication walhook creates, and check
// names the fix when the list is lost.
func TestColumnSelection(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	for _, sql := range []string{
		`CREATE TABLE people (id int PRIMARY KEY, name text, email text, hush_col text)`,
		`ALTER TABLE people REPLICA IDENTITY FULL`,                          // old values in changes and whole deleted rows
		`CREATE TABLE notes (id int PRIMARY KEY, name text, hush_col text)`, // default identity: unchanged TOAST is named
		`CREATE TABLE accounts (id int PRIMARY KEY, login text, ssn_col text)`,
		// Out of line and uncompressed, so that a 10 kB value is TOASTed.
		`ALTER TABLE people ALTER COLUMN hush_col SET STORAGE EXTERNAL`,
		`ALTER TABLE notes ALTER COLUMN hush_col SET STORAGE EXTERNAL`,
	} {
		exec1(t, conn, sql)
	}
	excl, two, control := webhooktest.New(t, ""), webhooktest.New(t, ""), webhooktest.New(t, "")
	for _, r := range []*webhooktest.Receiver{excl, two, control} {
		r.KeepBodies()
	}
	cfg := writeConfig(t, t.TempDir(), dsn, "c_columns",
		"  tables: [people, notes, accounts]\n  columns: {accounts: {exclude: [ssn_col]}}\n",
		sinkConf{Name: "excl", URL: excl.URL, Extra: "    columns: {people: {exclude: [hush_col]}, notes: {exclude: [hush_col]}}\n"},
		sinkConf{Name: "two", URL: two.URL, Extra: "    columns:\n      people: {include: [id, name]}\n      notes: {include: [id, name]}\n"},
		sinkConf{Name: "control", URL: control.URL})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "c_columns", d)

	for _, sql := range []string{
		`INSERT INTO people VALUES (1, 'ann', 'a@x', 'hushval-1'), (2, 'bob', 'b@x', 'hushval-2')`,
		`INSERT INTO notes VALUES (1, 'n1', 'hushbig-' || repeat('x', 10000))`,
		`UPDATE people SET hush_col = 'hushbig-' || repeat('y', 10000) WHERE id = 1`, // changes: the old secret
		`UPDATE people SET name = 'ann2' WHERE id = 1`,                               // the TOASTed secret, from the old row
		`UPDATE notes SET name = 'n2' WHERE id = 1`,                                  // the TOASTed secret, named as unchanged
		`DELETE FROM people WHERE id = 2`,                                            // the whole old row
		`INSERT INTO accounts VALUES (1, 'root', 'ssnval-1')`,
		`UPDATE accounts SET login = 'admin', ssn_col = 'ssnval-2'`,
		`DELETE FROM accounts`,
	} {
		exec1(t, conn, sql)
	}
	const total = 10
	got := map[string][]webhooktest.Message{}
	for name, r := range map[string]*webhooktest.Receiver{"excl": excl, "two": two, "control": control} {
		got[name] = r.WaitCount(t, total, 30*time.Second)
		for _, body := range r.Bodies() {
			if bytes.Contains(body, []byte("ssn")) {
				t.Errorf("sink %s got a column source.columns leaves out: %s", name, body)
			}
			if name != "control" && bytes.Contains(body, []byte("hush")) {
				t.Errorf("sink %s got the column its columns leave out: %.300s", name, body)
			}
		}
	}
	d.stop(t, syscall.SIGTERM, 30*time.Second)

	// The control sink shows that every path carried the secret.
	var ctl []string
	for _, m := range got["control"] {
		ctl = append(ctl, string(m.Raw))
	}
	for _, want := range []string{`"hush_col":"hushval-2"`, `"changes":{"hush_col":"hushval-1"}`, `"hush_col":"hushbig-yyy`, `"unchanged_toast_columns":["hush_col"]`} {
		if !strings.Contains(strings.Join(ctl, "\n"), want) {
			t.Errorf("control sink never got %s, so the test does not exercise it:\n%s", want, strings.Join(ctl, "\n"))
		}
	}

	wantKeys := map[string]map[string]string{
		"excl":    {"people": "email,id,name", "notes": "id,name", "accounts": "id,login"},
		"two":     {"people": "id,name", "notes": "id,name", "accounts": "id,login"},
		"control": {"people": "email,hush_col,id,name", "notes": "hush_col,id,name", "accounts": "id,login"},
	}
	for name, msgs := range got {
		for _, m := range msgs {
			want := wantKeys[name][m.Metadata.TableName]
			if m.Action == "delete" && m.Metadata.TableName == "accounts" {
				want = "id" // the key only
			}
			if m.Action == "update" && m.Metadata.TableName == "notes" && name == "control" {
				want = "id,name" // the TOASTed value is not in the record
			}
			if k := jsonKeys(t, m.Record); k != want {
				t.Errorf("sink %s, %s of %s: got record keys %s, want %s: %s", name, m.Action, m.Metadata.TableName, k, want, m.Raw)
			}
		}
	}
	// Old values arrive for the columns a sink gets.
	for _, name := range []string{"excl", "two"} {
		var changes []string
		for _, m := range got[name] {
			if m.Action == "update" && m.Metadata.TableName == "people" {
				changes = append(changes, string(m.Changes))
			}
		}
		if want := []string{`{}`, `{"name":"ann"}`}; !slices.Equal(changes, want) {
			t.Errorf("sink %s: got changes %v of people's updates, want %v", name, changes, want)
		}
	}

	if v := pgtest.Shared().Version(); v < 15 {
		// No column lists: walhook removed the columns itself (above), and
		// check says that they still leave PostgreSQL.
		code, out := runWalhook(t, "check", "--config", cfg)
		if code != 0 || !strings.Contains(out, "PostgreSQL before 15 has no publication column lists") {
			t.Errorf("check on PostgreSQL %d exited %d, want 0 and a warning that there are no column lists:\n%s", v, code, out)
		}
		return
	}
	// The publication walhook created holds the column list.
	var attnames string
	if err := conn.QueryRow(context.Background(), `SELECT attnames::text FROM pg_publication_tables WHERE pubname = 'c_columns' AND tablename = 'accounts'`).Scan(&attnames); err != nil {
		t.Fatal(err)
	}
	if attnames != "{id,login}" {
		t.Errorf("publication column list of accounts: got %s, want {id,login}", attnames)
	}
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "table public.accounts: publication column list (id, login)") || strings.Contains(out, "source.columns leaves out") ||
		strings.Contains(out, `ALTER TABLE "public"."accounts" REPLICA IDENTITY FULL`) {
		t.Errorf("check exited %d, want 0, the column list, no warning about it and no advice to use REPLICA IDENTITY FULL:\n%s", code, out)
	}
	// Someone drops the list: check warns and names the fix.
	exec1(t, conn, `ALTER PUBLICATION c_columns SET TABLE people, notes, accounts`)
	code, out = runWalhook(t, "check", "--config", cfg)
	fix := `ALTER PUBLICATION "c_columns" SET TABLE "public"."accounts" ("id", "login"), "public"."notes", "public"."people"`
	if code != 0 || !strings.Contains(out, "warning: the publication publishes ssn_col, which source.columns leaves out") || !strings.Contains(out, fix) {
		t.Errorf("check exited %d, want 0 and a warning naming %s:\n%s", code, fix, out)
	}
	// walhook leaves the publication as it is, and removes the column
	// itself.
	d = startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "c_columns", d)
	exec1(t, conn, `INSERT INTO accounts VALUES (2, 'guest', 'ssnval-3')`)
	for name, r := range map[string]*webhooktest.Receiver{"excl": excl, "two": two, "control": control} {
		msgs := r.WaitCount(t, total+1, 30*time.Second)
		if k := jsonKeys(t, msgs[total].Record); k != "id,login" {
			t.Errorf("sink %s, through a publication without the list: got record keys %s, want id,login", name, k)
		}
		for _, body := range r.Bodies() {
			if bytes.Contains(body, []byte("ssn")) {
				t.Errorf("sink %s got a column source.columns leaves out: %s", name, body)
			}
		}
	}
	d.stop(t, syscall.SIGTERM, 30*time.Second)
}

// jsonKeys returns the keys of a JSON object, sorted and joined by commas.
func jsonKeys(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("record %s: %v", raw, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// TestColumnListRefused: a source.columns that would make PostgreSQL
// reject the table's updates is refused by run and check, naming the fix,
// and no publication is created.
func TestColumnListRefused(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE people (id int PRIMARY KEY, hush_col text)`)
	exec1(t, conn, `ALTER TABLE people REPLICA IDENTITY FULL`)
	cfg := writeConfig(t, t.TempDir(), dsn, "c_columns_refused", "  tables: [people]\n  columns: {people: {exclude: [hush_col]}}\n",
		sinkConf{Name: "s", URL: "http://127.0.0.1:1/"})
	for _, cmd := range []string{"check", "run"} {
		code, out := runWalhook(t, cmd, "--config", cfg)
		if code != 1 || !strings.Contains(out, "REPLICA IDENTITY FULL") || !strings.Contains(out, `ALTER TABLE "public"."people" REPLICA IDENTITY DEFAULT`) {
			t.Errorf("walhook %s exited %d, want 1 and the fix:\n%s", cmd, code, out)
		}
	}
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_publication WHERE pubname = 'c_columns_refused'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("got %d publications (%v), want none", n, err)
	}
}

// TestSourceColumnsKeepTheBudget: when walhook applies source.columns
// itself (the publication has no column list), the stream's byte budget
// is given back in full: far more than the budget's 16 MiB of left-out
// bytes pass, and every row arrives.
func TestSourceColumnsKeepTheBudget(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	exec1(t, conn, `CREATE TABLE padded (id int PRIMARY KEY, pad_col text)`)
	exec1(t, conn, `CREATE PUBLICATION c_budget FOR TABLE padded`) // no column list: walhook projects
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "c_budget",
		"  tables: [padded]\n  columns: {padded: {exclude: [pad_col]}}\n",
		sinkConf{Name: "one", URL: rcv.URL, Extra: "    batch_size: 1000\n"})
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, conn, "c_budget", d)
	// 40,000 rows of about 1 kB each: about 40 MiB left out by walhook.
	const rows = 40000
	exec1(t, conn, `INSERT INTO padded SELECT g, repeat('x', 1000) FROM generate_series(1, 40000) g`)
	msgs := rcv.WaitCount(t, rows, 120*time.Second)
	if bytes.Contains(msgs[0].Raw, []byte("pad_col")) {
		t.Errorf("got a column source.columns leaves out: %s", msgs[0].Raw)
	}
	d.stop(t, syscall.SIGTERM, 30*time.Second)
}
