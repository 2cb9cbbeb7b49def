package replication

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/pgtest"
)

func table(name string) config.Table { return config.Table{Schema: "public", Name: name} }

// publishedColumns returns each table of a publication with its column
// list as pg_publication_tables shows it, and "*" for a table without one.
func publishedColumns(t *testing.T, db *testDB, pub string) string {
	t.Helper()
	var out string
	err := db.conn.QueryRow(context.Background(), `
		SELECT string_agg(p.tablename || CASE WHEN r.prattrs IS NULL THEN ' *' ELSE ' ' || p.attnames::text END, '; ' ORDER BY p.tablename)
		FROM pg_publication_tables p
		JOIN pg_publication pub ON pub.pubname = p.pubname
		JOIN pg_publication_rel r ON r.prpubid = pub.oid AND r.prrelid = format('%I.%I', p.schemaname, p.tablename)::regclass
		WHERE p.pubname = $1`, pub).Scan(&out)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPublicationColumnLists: source.columns becomes the column lists of
// the publication walhook creates; pgoutput then sends only those columns,
// and check reports how to repair a publication that lost them.
func TestPublicationColumnLists(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text, bio text)`,
		`CREATE TABLE orders (id int PRIMARY KEY, status text, note text, total int GENERATED ALWAYS AS (id * 2) STORED)`,
		`CREATE TABLE plain (id int PRIMARY KEY, x text)`,
		`CREATE TABLE "Keep All" (id int PRIMARY KEY, "X" text)`,
	)
	tables := []config.Table{table("users"), table("orders"), table("plain"), table("Keep All")}
	columns := map[config.Table]config.Columns{
		table("users"):    {Exclude: []string{"password_hash"}},
		table("orders"):   {Include: []string{"id", "status"}},
		table("Keep All"): {Include: []string{"id", "X"}}, // every column: no list needed
	}
	if pgtest.Shared().Version() < 15 {
		noColumnLists(t, db, tables, columns)
		return
	}
	ts := startStream(t, db, streamOpts{tables: tables, columns: columns})
	if got, want := publishedColumns(t, db, "walhook"), `Keep All *; orders {id,status}; plain *; users {id,email,bio}`; got != want {
		t.Errorf("publication: got %s, want %s", got, want)
	}

	db.exec(t,
		`INSERT INTO users VALUES (1, 'a@x', 'hash-1', 'hi')`,
		`UPDATE users SET password_hash = 'hash-2', bio = 'ho' WHERE id = 1`,
		`DELETE FROM users WHERE id = 1`,
		`INSERT INTO orders VALUES (1, 'new', 'secret note')`,
	)
	wantMessages(t, ts.sync(t),
		`{"action":"insert","table":"public.users","record":{"id":1,"email":"a@x","bio":"hi"},"changes":null}`,
		`{"action":"update","table":"public.users","record":{"id":1,"email":"a@x","bio":"ho"},"changes":{}}`,
		`{"action":"delete","table":"public.users","record":{"id":1},"changes":null}`,
		`{"action":"insert","table":"public.orders","record":{"id":1,"status":"new"},"changes":null}`,
	)

	src := config.Source{Publication: "walhook", Tables: tables, Columns: columns}
	rep, err := CheckColumnLists(t.Context(), db.conn, src)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Supported || !rep.Exists || rep.Fix != "" || rep.FixErr != nil {
		t.Errorf("publication as created: got %+v, want it supported, existing, in agreement", rep)
	}
	for _, pc := range rep.Tables {
		if len(pc.Leaked) > 0 || len(pc.Missing) > 0 || pc.Blocking != "" {
			t.Errorf("table %s: got %+v, want it in agreement", pc.Table, pc)
		}
	}

	// REPLICA IDENTITY FULL is not suggested where a list forbids it.
	ids, err := CheckReplicaIdentity(t.Context(), db.conn, src, IdentityNeeds{OldValues: true, ColumnLists: rep.Listed()})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		for _, f := range id.Findings {
			if suggests := strings.Contains(f.Message, "ALTER TABLE"); suggests == (id.Table == table("users") || id.Table == table("orders")) {
				t.Errorf("table %s, with a column list %t: got finding %q", id.Table, !suggests, f.Message)
			}
		}
	}

	// Someone replaces the lists: check names the statement that restores
	// them, and it does.
	db.exec(t, `ALTER PUBLICATION walhook SET TABLE users, orders (id), plain, "Keep All"`)
	rep, err = CheckColumnLists(t.Context(), db.conn, src)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, pc := range rep.Tables {
		got = append(got, pc.Table.Name+" ["+strings.Join(pc.Columns, ",")+"] leaked ["+strings.Join(pc.Leaked, ",")+"] missing ["+strings.Join(pc.Missing, ",")+"]")
	}
	want := []string{
		"Keep All [id,X] leaked [] missing []",
		"orders [id] leaked [] missing [status]",
		"plain [id,x] leaked [] missing []",
		"users [id,email,password_hash,bio] leaked [password_hash] missing []",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantFix := `ALTER PUBLICATION "walhook" SET TABLE "public"."Keep All", "public"."orders" ("id", "status"), "public"."plain", "public"."users" ("id", "email", "bio")`
	if rep.Fix != wantFix {
		t.Fatalf("fix: got %s (%v), want %s", rep.Fix, rep.FixErr, wantFix)
	}
	db.exec(t, rep.Fix)
	if got, want := publishedColumns(t, db, "walhook"), `Keep All *; orders {id,status}; plain *; users {id,email,bio}`; got != want {
		t.Errorf("after the fix: got %s, want %s", got, want)
	}
}

// noColumnLists is TestPublicationColumnLists before PostgreSQL 15, which
// has no column lists: walhook creates the publication without them, and
// CheckColumnLists says that the server cannot have them. The stream then
// carries every column; the relay removes what source.columns leaves out
// (cmd/walhook's TestColumnSelection).
func noColumnLists(t *testing.T, db *testDB, tables []config.Table, columns map[config.Table]config.Columns) {
	t.Helper()
	ts := startStream(t, db, streamOpts{tables: tables, columns: columns})
	var published string
	if err := db.conn.QueryRow(t.Context(), `SELECT string_agg(tablename, '; ' ORDER BY tablename) FROM pg_publication_tables
		WHERE pubname = 'walhook'`).Scan(&published); err != nil {
		t.Fatal(err)
	}
	if want := "Keep All; orders; plain; users"; published != want {
		t.Errorf("publication: got %s, want %s", published, want)
	}
	db.exec(t, `INSERT INTO users VALUES (1, 'a@x', 'hash-1', 'hi')`)
	wantMessages(t, ts.sync(t),
		`{"action":"insert","table":"public.users","record":{"id":1,"email":"a@x","password_hash":"hash-1","bio":"hi"},"changes":null}`)
	rep, err := CheckColumnLists(t.Context(), db.conn, config.Source{Publication: "walhook", Tables: tables, Columns: columns})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Supported {
		t.Errorf("CheckColumnLists on PostgreSQL %d: got Supported, want not", pgtest.Shared().Version())
	}
}

// TestPublicationColumnListRefused: a column list PostgreSQL would make
// every UPDATE or DELETE fail over (it checks at each statement), or one
// naming a column the table lacks, is refused, and no publication is made.
func TestPublicationColumnListRefused(t *testing.T) {
	t.Parallel()
	if v := pgtest.Shared().Version(); v < 15 {
		t.Skipf("PostgreSQL %d has no column lists to refuse (TestPublicationColumnLists checks what walhook does there)", v)
	}
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text)`,
		`CREATE TABLE full_users (id int PRIMARY KEY, email text, password_hash text)`,
		`ALTER TABLE full_users REPLICA IDENTITY FULL`,
		`CREATE TABLE by_index (id int PRIMARY KEY, email text NOT NULL, password_hash text)`,
		`CREATE UNIQUE INDEX by_index_email ON by_index (email)`,
		`ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_email`,
		`CREATE TABLE parent (id int, region text, secret text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`,
		`CREATE TABLE parent_eu PARTITION OF parent FOR VALUES IN ('eu')`,
		`CREATE TABLE parent_us PARTITION OF parent FOR VALUES IN ('us')`,
		`ALTER TABLE parent_us REPLICA IDENTITY FULL`,
	)
	// Why: PostgreSQL accepts such a list, then rejects the application's
	// statements.
	db.exec(t, `CREATE PUBLICATION by_hand FOR TABLE users (email)`, `INSERT INTO users VALUES (1, 'a', 'h')`)
	if _, err := db.conn.Exec(t.Context(), `UPDATE users SET email = 'b'`); err == nil || !strings.Contains(err.Error(), "cannot update table") {
		t.Fatalf("update under a list without the key: got %v, want PostgreSQL to refuse it", err)
	}
	db.exec(t, `DROP PUBLICATION by_hand`)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range []struct {
		name  string
		table string
		sel   config.Columns
		want  []string
	}{
		{"primary key left out", "users", config.Columns{Exclude: []string{"id"}},
			[]string{`source.columns public.users leaves out id, of the replica identity (id) of public.users`, "keep id in source.columns", "sinks[].columns"}},
		{"include without the key", "users", config.Columns{Include: []string{"email"}},
			[]string{"leaves out id, of the replica identity (id)"}},
		{"identity full", "full_users", config.Columns{Exclude: []string{"password_hash"}},
			[]string{"public.full_users has REPLICA IDENTITY FULL", `ALTER TABLE "public"."full_users" REPLICA IDENTITY DEFAULT`}},
		{"identity index", "by_index", config.Columns{Include: []string{"id", "password_hash"}},
			[]string{"leaves out email, of the replica identity (email) of public.by_index"}},
		{"a partition with identity full", "parent", config.Columns{Exclude: []string{"secret"}},
			[]string{"public.parent (partition public.parent_us) has REPLICA IDENTITY FULL"}},
		{"a column the table lacks", "users", config.Columns{Exclude: []string{"password"}},
			[]string{`public.users has no column "password"; name columns of the table (id, email, password_hash)`}},
		{"no column left", "users", config.Columns{Exclude: []string{"id", "email", "password_hash"}},
			[]string{"leaves out every column of the table"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := config.Source{Publication: "refused", Tables: []config.Table{table(tt.table)}, Columns: map[config.Table]config.Columns{table(tt.table): tt.sel}}
			err := ensurePublication(t.Context(), db.conn, src, log)
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error\n%v\nwant it to contain\n%s", err, w)
				}
			}
			rep, err := CheckColumnLists(t.Context(), db.conn, src)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Exists {
				t.Fatal("the publication was created")
			}
			if rep.PlanErr == nil || !strings.Contains(rep.PlanErr.Error(), tt.want[0]) {
				t.Errorf("check: got plan error %v, want %s", rep.PlanErr, tt.want[0])
			}
		})
	}
	// The key kept: fine, for a partitioned table too.
	src := config.Source{Publication: "accepted", Tables: []config.Table{table("users"), table("by_index")},
		Columns: map[config.Table]config.Columns{table("users"): {Include: []string{"id", "email"}}, table("by_index"): {Exclude: []string{"password_hash"}}}}
	if err := ensurePublication(t.Context(), db.conn, src, log); err != nil {
		t.Fatal(err)
	}
	if got, want := publishedColumns(t, db, "accepted"), `by_index {id,email}; users {id,email}`; got != want {
		t.Errorf("publication: got %s, want %s", got, want)
	}
	db.exec(t, `UPDATE users SET email = 'c'`, `DELETE FROM users`)
}
