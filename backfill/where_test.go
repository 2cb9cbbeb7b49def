package backfill

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/pgvalue"
)

// TestWhereIsOneExpression: a --where is one boolean expression over the
// table, checked and read as Start and a run do (on a connection from
// Manager.connect). What tries to be more (several statements, COMMIT,
// BEGIN or SET inside, a write through a CTE or a function, a comment
// hiding a parenthesis, an escape from the keyset condition) is refused,
// or fails when read, and never changes the table; valid expressions read
// exactly the rows they select.
func TestWhereIsOneExpression(t *testing.T) {
	ctx := context.Background()
	m := &Manager{opts: Options{Source: config.Source{URL: pgtest.NewDatabase(t, pgtest.Shared())}}}
	admin, err := m.connectAs(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	const fill = `TRUNCATE t; INSERT INTO t SELECT i, CASE WHEN i % 3 = 0 THEN 'a)b;c' ELSE 'n' || i END, i % 4, i % 5 = 0 FROM generate_series(1, 50) i`
	if _, err := admin.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, name text, "Odd Col" int, private bool);
		CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (2), (4), (8), (16), (32);
		CREATE FUNCTION zap() RETURNS bool VOLATILE LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t; RETURN true; END $$`); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name, where string
		refused     bool // by the check; otherwise reading may fail, but nothing is written
	}{
		{"several statements", `true); DELETE FROM t; SELECT (true`, true},
		{"COMMIT and BEGIN READ WRITE", `true); COMMIT; BEGIN READ WRITE; DELETE FROM public.t; COMMIT; SELECT 1 AS "id" WHERE (true`, true},
		{"SET", `true); SET default_transaction_read_only = off; DELETE FROM t; SELECT (true`, true},
		{"set_config of the session default, then a write", `CASE WHEN id < 20 THEN set_config('default_transaction_read_only', 'off', false) = 'off' ELSE zap() END`, false},
		{"set_config of the transaction", `set_config('transaction_read_only', 'off', false) = 'off'`, true},
		{"data-modifying CTE", `id IN (WITH d AS (DELETE FROM t RETURNING id) SELECT id FROM d)`, true},
		{"volatile function that deletes", `zap()`, true},
		{"keyset escape", `false) OR (true`, true},
		{"comment -- hiding a parenthesis", "id > 0 -- (\n) OR (true", true},
		{"comment /* */ hiding a parenthesis", `id > 0 /* ( */ ) OR (true`, true},
		{"not boolean", `id + 1`, true},
		{"text, not boolean", `'true'`, true},
		{"a parameter", `id > $1`, true},
		{"unterminated string", `name = 'abc`, true},
		{"unbalanced", `(id > 1`, true},
		{"empty", `  `, true},
		{"a harmless comment", "name LIKE 'n1%' -- comments are refused", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := admin.Exec(ctx, fill); err != nil {
				t.Fatal(err)
			}
			ids, err := backfillWhere(t, m, tt.where)
			if tt.refused && !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v (rows %v), want an error wrapping ErrInvalid", err, ids)
			}
			if err == nil {
				t.Errorf("read rows %v, want an error", ids)
			}
			t.Logf("%v", err)
			var n int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 50 {
				t.Errorf("the table has %d rows (%v), want 50", n, err)
			}
		})
	}

	for _, where := range []string{
		`name <> 'a)b;c'`,
		`name = 'a)b;c' AND "Odd Col" = 1`,
		`"Odd Col" IN (0, 2)`,
		`id IN (SELECT id FROM other)`,
		`EXISTS (SELECT 1 FROM other o WHERE o.id = t.id + 1)`,
		`name = $$a)b;c$$ OR id < 5`,
		`name = $q$a)b;c$q$`,
		`name <> E'a)b;c' AND name <> E'\')'`,
		`NOT private AND (id > 10 AND (id < 40))`,
	} {
		t.Run(where, func(t *testing.T) {
			want, err := pgx.CollectRows(mustQuery(t, admin, `SELECT id FROM t WHERE `+where+` ORDER BY id`), pgx.RowTo[int])
			if err != nil {
				t.Fatal(err)
			}
			got, err := backfillWhere(t, m, where)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func mustQuery(t *testing.T, conn *pgx.Conn, sql string) pgx.Rows {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// backfillWhere checks where on table t and reads its rows in chunks of 7
// as a backfill does, returning their ids.
func backfillWhere(t *testing.T, m *Manager, where string) ([]int, error) {
	t.Helper()
	ctx := context.Background()
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tb, err := Describe(ctx, conn, pgvalue.NewTypes(pgvalue.QueryCatalog(conn)), config.Table{Schema: "public", Name: "t"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.CheckWhere(ctx, conn, where); err != nil {
		return nil, err
	}
	var ids []int
	var key []byte
	for range 50 {
		c, err := tb.read(ctx, conn, "bf_1", where, key, 7, 1<<20)
		if err != nil {
			return ids, err
		}
		for _, msg := range c.msgs {
			id, err := strconv.Atoi(string(msg.Record[len(`{"id":`):indexByte(msg.Record, ',')]))
			if err != nil {
				t.Fatalf("record %s: %v", msg.Record, err)
			}
			ids = append(ids, id)
		}
		if c.last {
			return ids, nil
		}
		key = c.key
	}
	return ids, errors.New("the reads never ended (the keyset condition was escaped)")
}

func indexByte(b []byte, c byte) int { return slices.Index(b, c) }

// TestCheckExpression: the lexical check knows where literals, quoted
// identifiers and dollar quotes end as the server does, with and without
// standard_conforming_strings, so what it takes for a literal cannot hide
// a parenthesis or a ";" that the server would read as code.
func TestCheckExpression(t *testing.T) {
	for _, tt := range []struct {
		where    string
		standard bool
		ok       bool
	}{
		{`a = 'x)'`, true, true},
		{`a = 'it''s ;)'`, true, true},
		{`a = '\' AND b = 1`, true, true},                      // a backslash is a backslash
		{`a = '\') OR (true`, true, false},                     // so the ")" is code
		{`a = '\') OR (true '`, false, true},                   // escapes the quote: one literal
		{`a = '\'') OR (true'`, false, false},                  // an escaped quote, then code
		{`a = E'\') OR (true'`, true, true},                    // E'' escapes whatever the session says
		{`a = e'\\') OR (true`, true, false},                   // an escaped backslash, then code
		{`a = B'\') OR (true OR a = '`, false, false},          // no escapes in B'': the ")" is code
		{`a = X'\') OR (true`, false, false},                   //
		{`a = N'\') OR (true'`, false, true},                   // N'' is a standard literal
		{`"a)""b" = 1`, true, true},                            // a quoted identifier with "" and ")"
		{`"a\" = 1) OR (true`, true, false},                    // no escapes in identifiers
		{`U&"a\0061" = 1`, true, true},                         //
		{`U&'\') OR (true`, false, false},                      // U&'' never escapes the quote
		{`a = $$x);$$`, true, true},                            //
		{`a = $t$x $$ ); $t$`, true, true},                     // another tag does not end it
		{`a = $t$x);`, true, false},                            // unterminated
		{`a$b$ = 1) OR (a$b$ = 2`, true, false},                // $ inside an identifier: no quote
		{`1$a$ ' $a$ ) OR (true OR ''=' $a$ = '`, true, false}, // 1 then a dollar quote, as the server reads it
		{`a = 1 OR a = $1`, true, false},                       // a parameter
		{`(a = 1) AND ((b))`, true, true},                      //
		{`a = 1)`, true, false},                                //
		{`((a = 1)`, true, false},                              //
		{`a = 1; `, true, false},                               //
		{`a = 1 --`, true, false},                              //
		{`a /* */ = 1`, true, false},                           //
		{`a = 'x`, true, false},                                //
		{`"a = 1`, true, false},                                //
		{"a = 1\x00", true, false},                             // a NUL byte
		{"a = '\x00'", true, false},                            // in a literal too
		{"", true, false},                                      //
	} {
		err := checkExpression(tt.where, tt.standard)
		if (err == nil) != tt.ok {
			t.Errorf("%q (standard_conforming_strings %v): got %v, want ok %v", tt.where, tt.standard, err, tt.ok)
		}
	}
}

// TestWhereStandardStringsOff: on a session where standard_conforming_strings
// is off, a backslash in '...' escapes, and the check reads literals as the
// server does: a literal with an escaped quote is one literal, and a ")"
// after an escaped quote and the closing one is code.
func TestWhereStandardStringsOff(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t, pgtest.Shared()) + "&options=-c%20standard_conforming_strings%3Doff"
	m := &Manager{opts: Options{Source: config.Source{URL: url}}}
	admin, err := m.connectAs(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, name text);
		INSERT INTO t VALUES (1, 'n1'), (2, E'a\'b'), (3, 'n3')`); err != nil {
		t.Fatal(err)
	}
	if got, err := backfillWhere(t, m, `name = 'a\'b' OR id = 1`); err != nil || !slices.Equal(got, []int{1, 2}) {
		t.Errorf("an escaped quote: got %v, %v; want [1 2]", got, err)
	}
	if got, err := backfillWhere(t, m, `id = 1 OR name = '\'') OR (true`); !errors.Is(err, ErrInvalid) {
		t.Errorf("a parenthesis after an escaped quote: got %v, %v; want a refusal", got, err)
	}
}

// TestWhereTrialBounded: the check runs the chunk query for its first row
// under a time bound, and a condition that takes longer is accepted and
// left to the backfill rather than make the request wait.
func TestWhereTrialBounded(t *testing.T) {
	ctx := context.Background()
	m := &Manager{opts: Options{Source: config.Source{URL: pgtest.NewDatabase(t, pgtest.Shared())}}}
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `BEGIN READ WRITE; CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1); COMMIT`); err != nil {
		t.Fatal(err)
	}
	tb, err := Describe(ctx, conn, pgvalue.NewTypes(pgvalue.QueryCatalog(conn)), config.Table{Schema: "public", Name: "t"}, "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := tb.CheckWhere(ctx, conn, "pg_sleep(30) IS NOT NULL"); err != nil {
		t.Errorf("got %v, want the condition accepted", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the check took %v, want about %s", took, whereTrialTimeout)
	}
}
