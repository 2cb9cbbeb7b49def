package backfill

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/pgvalue"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testConn(t *testing.T, setup string) *pgx.Conn {
	t.Helper()
	m := &Manager{opts: Options{Source: config.Source{URL: pgtest.NewDatabase(t, pgtest.Shared())}}}
	conn, err := m.connectAs(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(context.Background(), setup); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestReadChunks: keyset pagination over a composite key reads every row
// once, in key order, whatever the chunk size and byte bound; records
// hold the published columns only (not dropped or generated ones) with
// their types' JSON, and keys are the stream's.
func TestReadChunks(t *testing.T) {
	ctx := context.Background()
	conn := testConn(t, `CREATE TYPE mood AS ENUM ('ok', 'sad');
		CREATE DOMAIN posint AS int CHECK (VALUE > 0);
		CREATE TABLE t (a int, gone int, b text, m mood, p posint, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (a, b));
		ALTER TABLE t DROP COLUMN gone;
		INSERT INTO t SELECT i / 5, 'k' || (i % 5), 'ok', i + 1 FROM generate_series(0, 99) i;
		CREATE TABLE nopk (v int)`)
	types := pgvalue.NewTypes(pgvalue.QueryCatalog(conn))
	tb, err := Describe(ctx, conn, types, config.Table{Schema: "public", Name: "t"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, bound := range []int{1 << 20, 100} {
		var key []byte
		var got []string
		for i := 0; ; i++ {
			c, err := tb.read(ctx, conn, "bf_1", "p % 2 = 1", key, 7, bound)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range c.msgs {
				got = append(got, string(m.Record))
				if !strings.HasPrefix(m.Key, "public.t\x00") || strings.Count(m.Key, "\x00") != 2 || m.BackfillID != "bf_1" {
					t.Fatalf("key %q", m.Key)
				}
			}
			if c.last {
				break
			}
			key = c.key
			if i > 100 {
				t.Fatal("no end")
			}
		}
		if len(got) != 50 || got[0] != `{"a":0,"b":"k0","m":"ok","p":1}` || got[1] != `{"a":0,"b":"k2","m":"ok","p":3}` || got[49] != `{"a":19,"b":"k3","m":"ok","p":99}` {
			t.Errorf("bound %d: got %d rows: %v ... %v", bound, len(got), got[:2], got[len(got)-1])
		}
	}
	if err := tb.CheckWhere(ctx, conn, "nope"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad where: got %v, want ErrInvalid", err)
	}
	for _, name := range []string{"nopk", "missing"} {
		if _, err := Describe(ctx, conn, types, config.Table{Schema: "public", Name: name}, ""); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "public."+name) {
			t.Errorf("%s: got %v, want ErrInvalid naming it", name, err)
		}
	}
}

// TestDescribeKeys: the ordering key follows the replica identity as the
// stream's does, and a partitioned table's estimate sums its partitions.
func TestDescribeKeys(t *testing.T) {
	ctx := context.Background()
	conn := testConn(t, `CREATE TABLE i (id int PRIMARY KEY, u int NOT NULL, v int);
		CREATE UNIQUE INDEX i_u ON i (u); ALTER TABLE i REPLICA IDENTITY USING INDEX i_u;
		CREATE TABLE f (x int, id int PRIMARY KEY); ALTER TABLE f REPLICA IDENTITY FULL;
		CREATE TABLE p (id int PRIMARY KEY) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
		CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);
		INSERT INTO p SELECT generate_series(0, 199); ANALYZE p`)
	types := pgvalue.NewTypes(pgvalue.QueryCatalog(conn))
	for _, tt := range []struct {
		table    string
		keyCols  []int
		estimate int64
	}{
		{"i", []int{1}, -1},
		{"f", []int{1}, -1},
		{"p", []int{0}, 200},
	} {
		tb, err := Describe(ctx, conn, types, config.Table{Schema: "public", Name: tt.table}, "")
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(tb.keyCols, tt.keyCols) || tb.Estimate != tt.estimate {
			t.Errorf("%s: key columns %v, estimate %d; want %v, %d", tt.table, tb.keyCols, tb.Estimate, tt.keyCols, tt.estimate)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestReadPublished: a backfill reads the columns and rows the
// publication carries (its column list and row filter); for a partition
// published through its root, the root's; a column list without the
// primary key is refused, naming it.
func TestReadPublished(t *testing.T) {
	ctx := context.Background()
	conn := testConn(t, `CREATE TABLE users (id int PRIMARY KEY, email text, password_hash text, private bool);
		INSERT INTO users SELECT i, 'u' || i || '@x', 'hash' || i, i % 3 = 0 FROM generate_series(1, 12) i;
		CREATE PUBLICATION p FOR TABLE users (id, email) WHERE (NOT private);
		CREATE PUBLICATION nokey FOR TABLE users (email) WITH (publish = 'insert');
		CREATE PUBLICATION everything FOR ALL TABLES;
		CREATE TABLE m (id int PRIMARY KEY, secret text, flag bool) PARTITION BY RANGE (id);
		CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);
		INSERT INTO m SELECT i, 's', i % 2 = 0 FROM generate_series(1, 6) i;
		CREATE PUBLICATION viaroot FOR TABLE m (id, flag) WHERE (flag) WITH (publish_via_partition_root = true)`)
	types := pgvalue.NewTypes(pgvalue.QueryCatalog(conn))
	for _, tt := range []struct {
		pub, table string
		want       []string
	}{
		{"p", "users", []string{`{"id":1,"email":"u1@x"}`, `{"id":2,"email":"u2@x"}`, `{"id":4,"email":"u4@x"}`, `{"id":5,"email":"u5@x"}`,
			`{"id":7,"email":"u7@x"}`, `{"id":8,"email":"u8@x"}`, `{"id":10,"email":"u10@x"}`, `{"id":11,"email":"u11@x"}`}},
		{"viaroot", "m1", []string{`{"id":2,"flag":true}`, `{"id":4,"flag":true}`, `{"id":6,"flag":true}`}},
		{"viaroot", "m", []string{`{"id":2,"flag":true}`, `{"id":4,"flag":true}`, `{"id":6,"flag":true}`}},
		{"everything", "m1", []string{`{"id":1,"secret":"s","flag":false}`, `{"id":2,"secret":"s","flag":true}`, `{"id":3,"secret":"s","flag":false}`,
			`{"id":4,"secret":"s","flag":true}`, `{"id":5,"secret":"s","flag":false}`, `{"id":6,"secret":"s","flag":true}`}},
	} {
		tb, err := Describe(ctx, conn, types, config.Table{Schema: "public", Name: tt.table}, tt.pub)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tb.read(ctx, conn, "bf_1", "", nil, 100, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range c.msgs {
			got = append(got, string(m.Record))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s in %s: got %v, want %v", tt.table, tt.pub, got, tt.want)
		}
	}
	_, err := Describe(ctx, conn, types, config.Table{Schema: "public", Name: "users"}, "nokey")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `publication "nokey" leaves primary key column "id" of public.users out of its column list`) {
		t.Errorf("a column list without the key: got %v, want ErrInvalid naming it", err)
	}
}
