package replication

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
)

// The tests in this file run a Stream against a real PostgreSQL and check
// the shape of what it emits for each kind of change.

func TestReplicaIdentityDefault(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t, `CREATE TABLE t (id int PRIMARY KEY, v text, n int)`)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO t VALUES (1, 'a', 10)`,
		`UPDATE t SET v = 'b' WHERE id = 1`,
		`UPDATE t SET id = 2, n = 20 WHERE id = 1`,
		`DELETE FROM t WHERE id = 2`,
	)
	msgs := ts.sync(t)
	wantMessages(t, msgs,
		`{"action":"insert","table":"public.t","record":{"id":1,"v":"a","n":10},"changes":null}`,
		`{"action":"update","table":"public.t","record":{"id":1,"v":"b","n":10},"changes":{}}`,
		`{"action":"update","table":"public.t","record":{"id":2,"v":"b","n":20},"changes":{"id":1}}`,
		`{"action":"delete","table":"public.t","record":{"id":2},"changes":null}`,
	)
	wantKeys(t, msgs, "public.t\x001", "public.t\x001", "public.t\x002", "public.t\x002")
}

func TestReplicaIdentityFull(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE t (id int PRIMARY KEY, v text, n int)`,
		`ALTER TABLE t REPLICA IDENTITY FULL`,
		`CREATE TABLE nokey (v text, n int)`,
		`ALTER TABLE nokey REPLICA IDENTITY FULL`,
	)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO t VALUES (1, 'a', 10)`,
		`UPDATE t SET v = 'b' WHERE id = 1`,
		`UPDATE t SET v = 'b' WHERE id = 1`,
		`UPDATE t SET id = 2, n = NULL WHERE id = 1`,
		`DELETE FROM t WHERE id = 2`,
		`INSERT INTO nokey VALUES ('x', 1), ('x', 1)`,
		`UPDATE nokey SET n = 2`,
		`DELETE FROM nokey`,
	)
	msgs := ts.sync(t)
	wantMessages(t, msgs,
		`{"action":"insert","table":"public.t","record":{"id":1,"v":"a","n":10},"changes":null}`,
		`{"action":"update","table":"public.t","record":{"id":1,"v":"b","n":10},"changes":{"v":"a"}}`,
		`{"action":"update","table":"public.t","record":{"id":1,"v":"b","n":10},"changes":{}}`,
		`{"action":"update","table":"public.t","record":{"id":2,"v":"b","n":null},"changes":{"id":1,"n":10}}`,
		`{"action":"delete","table":"public.t","record":{"id":2,"v":"b","n":null},"changes":null}`,
		`{"action":"insert","table":"public.nokey","record":{"v":"x","n":1},"changes":null}`,
		`{"action":"insert","table":"public.nokey","record":{"v":"x","n":1},"changes":null}`,
		`{"action":"update","table":"public.nokey","record":{"v":"x","n":2},"changes":{"n":1}}`,
		`{"action":"update","table":"public.nokey","record":{"v":"x","n":2},"changes":{"n":1}}`,
		`{"action":"delete","table":"public.nokey","record":{"v":"x","n":2},"changes":null}`,
		`{"action":"delete","table":"public.nokey","record":{"v":"x","n":2},"changes":null}`,
	)
	wantKeys(t, msgs, "public.t\x001", "public.t\x001", "public.t\x001", "public.t\x002", "public.t\x002",
		"public.nokey", "public.nokey", "public.nokey", "public.nokey", "public.nokey", "public.nokey")
}

func TestReplicaIdentityUsingIndex(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE t (id int PRIMARY KEY, email text NOT NULL, v text)`,
		`CREATE UNIQUE INDEX t_email ON t (email)`,
		`ALTER TABLE t REPLICA IDENTITY USING INDEX t_email`,
	)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO t VALUES (1, 'a@x', 'v1')`,
		`UPDATE t SET v = 'v2' WHERE id = 1`,
		`UPDATE t SET email = 'b@x' WHERE id = 1`,
		`UPDATE t SET id = 5 WHERE id = 1`,
		`DELETE FROM t WHERE id = 5`,
	)
	msgs := ts.sync(t)
	wantMessages(t, msgs,
		`{"action":"insert","table":"public.t","record":{"id":1,"email":"a@x","v":"v1"},"changes":null}`,
		`{"action":"update","table":"public.t","record":{"id":1,"email":"a@x","v":"v2"},"changes":{}}`,
		`{"action":"update","table":"public.t","record":{"id":1,"email":"b@x","v":"v2"},"changes":{"email":"a@x"}}`,
		// The primary key is not the identity: its change is not visible.
		`{"action":"update","table":"public.t","record":{"id":5,"email":"b@x","v":"v2"},"changes":{}}`,
		`{"action":"delete","table":"public.t","record":{"email":"b@x"},"changes":null}`,
	)
	// Rows group by the identity index, the only key a delete carries.
	wantKeys(t, msgs, "public.t\x00a@x", "public.t\x00a@x", "public.t\x00b@x", "public.t\x00b@x", "public.t\x00b@x")
}

func TestReplicaIdentityNothing(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE t (id int PRIMARY KEY, v text)`,
		`ALTER TABLE t REPLICA IDENTITY NOTHING`,
		`CREATE TABLE log (at int, line text)`, // DEFAULT without a primary key: no identity either
	)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO t VALUES (1, 'a')`,
		`INSERT INTO log VALUES (1, 'started'), (2, 'stopped')`,
	)
	// PostgreSQL refuses updates and deletes of a published table without
	// a replica identity: the application's statement fails.
	for _, stmt := range []string{`UPDATE t SET v = 'b'`, `DELETE FROM t`, `UPDATE log SET at = 3`, `DELETE FROM log`} {
		if _, err := db.conn.Exec(t.Context(), stmt); err == nil || !strings.Contains(err.Error(), "replica identity") {
			t.Errorf("%s: got error %v, want one about the replica identity", stmt, err)
		}
	}
	msgs := ts.sync(t)
	wantMessages(t, msgs,
		`{"action":"insert","table":"public.t","record":{"id":1,"v":"a"},"changes":null}`,
		`{"action":"insert","table":"public.log","record":{"at":1,"line":"started"},"changes":null}`,
		`{"action":"insert","table":"public.log","record":{"at":2,"line":"stopped"},"changes":null}`,
	)
	wantKeys(t, msgs, "public.t\x001", "public.log", "public.log")
}

func wantKeys(t *testing.T, msgs []*change.Message, want ...string) {
	t.Helper()
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i] = m.Key
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got keys %q, want %q", got, want)
	}
}

func TestUnchangedToast(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	// md5 hex compresses to about half: 40 kB of it is stored out of line.
	const big = `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1250) i)`
	db.exec(t, `CREATE TABLE t (id int PRIMARY KEY, big text, doc jsonb, n int)`)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO t VALUES (1, `+big+`, jsonb_build_object('k', `+big+`), 1)`,
		`UPDATE t SET n = 2`,
		`UPDATE t SET n = 3, big = 'small'`,
		`ALTER TABLE t REPLICA IDENTITY FULL`,
		`UPDATE t SET n = 4`,
		`DELETE FROM t`,
	)
	var bigText string
	if err := db.conn.QueryRow(t.Context(), `SELECT `+big).Scan(&bigText); err != nil {
		t.Fatal(err)
	}
	bigJSON, _ := json.Marshal(bigText)
	docJSON := `{"k": ` + string(bigJSON) + `}`
	msgs := ts.sync(t)
	wantMessages(t, msgs,
		`{"action":"insert","table":"public.t","record":{"id":1,"big":`+string(bigJSON)+`,"doc":`+docJSON+`,"n":1},"changes":null}`,
		// DEFAULT: the TOASTed values the update left alone are not sent.
		`{"action":"update","table":"public.t","record":{"id":1,"n":2},"changes":{},"unchanged_toast_columns":["big","doc"]}`,
		`{"action":"update","table":"public.t","record":{"id":1,"big":"small","n":3},"changes":{},"unchanged_toast_columns":["doc"]}`,
		// FULL: they come from the old row.
		`{"action":"update","table":"public.t","record":{"id":1,"big":"small","doc":`+docJSON+`,"n":4},"changes":{"n":3}}`,
		`{"action":"delete","table":"public.t","record":{"id":1,"big":"small","doc":`+docJSON+`,"n":4},"changes":null}`,
	)
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE a (id serial PRIMARY KEY)`,
		`CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a)`,
		`CREATE TABLE c (id int PRIMARY KEY)`,
		`CREATE TABLE d (id int PRIMARY KEY)`,
	)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO a DEFAULT VALUES`,
		`INSERT INTO b VALUES (1, 1)`,
		`TRUNCATE a CASCADE`,
		`TRUNCATE c, d RESTART IDENTITY`,
		`BEGIN`,
		`INSERT INTO c VALUES (1)`,
		`TRUNCATE a RESTART IDENTITY CASCADE`,
		`INSERT INTO c VALUES (2)`,
		`COMMIT`,
	)
	msgs := ts.sync(t)
	// CASCADE adds b; the order inside one statement is PostgreSQL's.
	var got []string
	for _, m := range msgs {
		got = append(got, string(m.Action)+" "+m.QualifiedTable()+" "+strconv.Itoa(int(m.Pos.Idx)))
		if m.Action == change.Truncate && (m.Record != nil || m.Changes != nil || m.Key != m.QualifiedTable()) {
			t.Errorf("truncate of %s: got record %s, changes %s, key %q; want null, null, the table", m.QualifiedTable(), m.Record, m.Changes, m.Key)
		}
	}
	want := []string{
		"insert public.a 0", "insert public.b 0",
		"truncate public.a 0", "truncate public.b 1",
		"truncate public.c 0", "truncate public.d 1",
		"insert public.c 0", "truncate public.a 1", "truncate public.b 2", "insert public.c 3",
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("got %s\nwant %s", strings.Join(got, ", "), strings.Join(want, ", "))
	}
}

func TestSchemaChanges(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE t (id int PRIMARY KEY, a int, b text)`,
		`CREATE TYPE color AS ENUM ('red')`,
	)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO t VALUES (1, 1, 'one')`,
		`ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 7`,
		`INSERT INTO t VALUES (2, 2, 'two')`,
		`UPDATE t SET a = 10 WHERE id = 1`,
		`ALTER TABLE t DROP COLUMN b`,
		`INSERT INTO t VALUES (3, 3)`,
		`ALTER TABLE t RENAME COLUMN a TO alpha`,
		`INSERT INTO t VALUES (4, 4)`,
		`ALTER TABLE t ALTER COLUMN alpha TYPE text USING 'x' || alpha`,
		`INSERT INTO t VALUES (5, 'five')`,
		`ALTER TYPE color ADD VALUE 'green'`,
		`ALTER TABLE t ADD COLUMN col color`,
		`INSERT INTO t VALUES (6, 'six', 6, 'green')`,
		`CREATE TABLE fresh (id int PRIMARY KEY, v jsonb)`,
		`INSERT INTO fresh VALUES (1, '{"new": true}')`,
		// A transaction is sent when it commits: this insert is decoded
		// after its table and types were dropped.
		`BEGIN`,
		`CREATE TYPE mood AS ENUM ('calm')`,
		`CREATE TYPE pair AS (x int, y int)`,
		`CREATE TABLE doomed (id int PRIMARY KEY, m mood, p pair)`,
		`INSERT INTO doomed VALUES (1, 'calm', ROW(1, 2))`,
		`DROP TABLE doomed`,
		`DROP TYPE mood`,
		`DROP TYPE pair`,
		`COMMIT`,
		`INSERT INTO t VALUES (7, 'seven')`,
	)
	wantMessages(t, ts.sync(t),
		`{"action":"insert","table":"public.t","record":{"id":1,"a":1,"b":"one"},"changes":null}`,
		`{"action":"insert","table":"public.t","record":{"id":2,"a":2,"b":"two","c":7},"changes":null}`,
		`{"action":"update","table":"public.t","record":{"id":1,"a":10,"b":"one","c":7},"changes":{}}`,
		`{"action":"insert","table":"public.t","record":{"id":3,"a":3,"c":7},"changes":null}`,
		`{"action":"insert","table":"public.t","record":{"id":4,"alpha":4,"c":7},"changes":null}`,
		`{"action":"insert","table":"public.t","record":{"id":5,"alpha":"five","c":7},"changes":null}`,
		`{"action":"insert","table":"public.t","record":{"id":6,"alpha":"six","c":6,"col":"green"},"changes":null}`,
		`{"action":"insert","table":"public.fresh","record":{"id":1,"v":{"new": true}},"changes":null}`,
		// The types are gone from the catalog: their text is all there is.
		`{"action":"insert","table":"public.doomed","record":{"id":1,"m":"calm","p":"(1,2)"},"changes":null}`,
		`{"action":"insert","table":"public.t","record":{"id":7,"alpha":"seven","c":7,"col":null},"changes":null}`,
	)
}

func TestPartitionsReportTheirRoot(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE parent (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`,
		`CREATE TABLE parent_eu PARTITION OF parent FOR VALUES IN ('eu')`,
		`CREATE TABLE parent_us PARTITION OF parent FOR VALUES IN ('us') PARTITION BY RANGE (id)`,
		`CREATE TABLE parent_us_low PARTITION OF parent_us FOR VALUES FROM (0) TO (100)`,
		`CREATE TABLE parent_us_high PARTITION OF parent_us FOR VALUES FROM (100) TO (MAXVALUE)`,
		`CREATE TABLE other (id int PRIMARY KEY)`,
	)
	ts := startStream(t, db, streamOpts{tables: []config.Table{{Schema: "public", Name: "parent"}}})
	db.exec(t,
		`INSERT INTO parent VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (200, 'us', 'c')`,
		`INSERT INTO parent_eu VALUES (3, 'eu', 'd')`,
		`INSERT INTO other VALUES (1)`,
		`UPDATE parent SET v = 'bb' WHERE id = 2`,
		`UPDATE parent SET region = 'eu' WHERE id = 2`, // moves the row to another partition
		`DELETE FROM parent_us_high`,
		// A partition attached later, with its columns in another order.
		`CREATE TABLE parent_asia (v text, region text NOT NULL, id int NOT NULL)`,
		`ALTER TABLE parent ATTACH PARTITION parent_asia FOR VALUES IN ('asia')`,
		`INSERT INTO parent VALUES (4, 'asia', 'e')`,
		`TRUNCATE parent`,
	)
	wantMessages(t, ts.sync(t),
		`{"action":"insert","table":"public.parent","record":{"id":1,"region":"eu","v":"a"},"changes":null}`,
		`{"action":"insert","table":"public.parent","record":{"id":2,"region":"us","v":"b"},"changes":null}`,
		`{"action":"insert","table":"public.parent","record":{"id":200,"region":"us","v":"c"},"changes":null}`,
		`{"action":"insert","table":"public.parent","record":{"id":3,"region":"eu","v":"d"},"changes":null}`,
		`{"action":"update","table":"public.parent","record":{"id":2,"region":"us","v":"bb"},"changes":{}}`,
		// PostgreSQL publishes a move between partitions as a delete and an insert.
		`{"action":"delete","table":"public.parent","record":{"id":2,"region":"us"},"changes":null}`,
		`{"action":"insert","table":"public.parent","record":{"id":2,"region":"eu","v":"bb"},"changes":null}`,
		`{"action":"delete","table":"public.parent","record":{"id":200,"region":"us"},"changes":null}`,
		`{"action":"insert","table":"public.parent","record":{"id":4,"region":"asia","v":"e"},"changes":null}`,
		`{"action":"truncate","table":"public.parent","record":null,"changes":null}`,
	)
}

func TestLogicalMessages(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	ts := startStream(t, db, streamOpts{messages: []string{"audit", heartbeatPrefix}})
	db.exec(t,
		`SELECT pg_logical_emit_message(false, 'audit', 'outside "a" transaction')`,
		`SELECT pg_logical_emit_message(false, 'other', 'not configured')`,
		`SELECT pg_logical_emit_message(false, 'walhook.heartbeat', '')`,
		`SELECT pg_logical_emit_message(true, 'walhook.heartbeat', '')`,
		`BEGIN`,
		`INSERT INTO t VALUES (1)`,
		`SELECT pg_logical_emit_message(true, 'audit', 'ünïcode')`,
		`SELECT pg_logical_emit_message(true, 'audit', '\x00ff'::bytea)`,
		`SELECT pg_logical_emit_message(true, 'audit.sub', 'prefixes match exactly')`,
		`INSERT INTO t VALUES (2)`,
		`COMMIT`,
		`BEGIN`,
		`SELECT pg_logical_emit_message(true, 'audit', 'rolled back')`,
		`ROLLBACK`,
	)
	msgs := ts.sync(t)
	wantMessages(t, msgs,
		`{"action":"message","prefix":"audit","content":"outside \"a\" transaction","record":null,"changes":null}`,
		`{"action":"insert","table":"public.t","record":{"id":1},"changes":null}`,
		`{"action":"message","prefix":"audit","content":"ünïcode","record":null,"changes":null}`,
		`{"action":"message","prefix":"audit","content":{"base64":"AP8="},"record":null,"changes":null}`,
		`{"action":"insert","table":"public.t","record":{"id":2},"changes":null}`,
	)
	if len(msgs) == 5 {
		if m := msgs[0]; m.XID != 0 || m.Pos.Idx != 0 || m.Pos.CommitLSN == 0 {
			t.Errorf("message outside a transaction: got xid %d, position %s; want 0, its own LSN and index 0", m.XID, m.Pos)
		}
		// The unpassed 'audit.sub' message still takes index 3: positions
		// come from the WAL, not from source.messages.
		for i, m := range msgs[1:] {
			want := []uint32{0, 1, 2, 4}[i]
			if m.Pos.Idx != want || m.XID != msgs[1].XID || m.Pos.CommitLSN != msgs[1].Pos.CommitLSN {
				t.Errorf("message %d of the transaction: got position %s, xid %d; want index %d in the transaction", i, m.Pos, m.XID, want)
			}
		}
	}
	var out []byte
	out = msgs[0].AppendJSON(out, "s")
	var decoded map[string]any
	if err := json.Unmarshal(out, &decoded); err != nil {
		t.Fatalf("message JSON: %v\n%s", err, out)
	}
	if md := decoded["metadata"].(map[string]any); md["table_name"] != nil {
		t.Errorf("message metadata has table fields: %s", out)
	}
}

func TestHeartbeatsNeverReachSinks(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	ts := startStream(t, db, streamOpts{heartbeat: 20 * time.Millisecond, messages: []string{heartbeatPrefix}})
	idle := 0
	deadline := time.Now().Add(10 * time.Second)
	for idle < 3 && time.Now().Before(deadline) {
		ev := ts.next(t, 10*time.Second)
		switch ev.Kind {
		case EventIdle:
			idle++
		case EventChange:
			t.Fatalf("got a change while only heartbeats were written: %s", render(ev.Msg))
		}
	}
	if idle < 3 {
		t.Fatalf("got %d idle events in 10s, want heartbeats to produce some", idle)
	}
	db.exec(t, `INSERT INTO t VALUES (1)`)
	wantMessages(t, ts.sync(t), `{"action":"insert","table":"public.t","record":{"id":1},"changes":null}`)
}

// TestCatalogSchema: pgoutput sends an empty namespace for a table in
// pg_catalog (a user table made there is publishable); its messages name
// the schema.
func TestCatalogSchema(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`SET allow_system_table_mods = on`,
		`CREATE TABLE pg_catalog.walhook_t (id int PRIMARY KEY)`,
		`RESET allow_system_table_mods`,
	)
	ts := startStream(t, db, streamOpts{})
	db.exec(t, `INSERT INTO pg_catalog.walhook_t VALUES (1)`)
	msgs := ts.sync(t)
	wantMessages(t, msgs, `{"action":"insert","table":"pg_catalog.walhook_t","record":{"id":1},"changes":null}`)
	var md struct {
		Metadata struct {
			Schema string `json:"table_schema"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(msgs[0].AppendJSON(nil, "s"), &md); err != nil {
		t.Fatal(err)
	}
	if md.Metadata.Schema != "pg_catalog" {
		t.Errorf("got metadata.table_schema %q, want pg_catalog", md.Metadata.Schema)
	}
}

// TestPartitionOldRows: with publish_via_partition_root, pgoutput describes
// the root (its identity flags, its kind of old tuple) but sends the
// partition's old row, which holds what the partition's own identity
// logged. Every value logged is kept; a NULL only where it can only be one.
// A root with REPLICA IDENTITY FULL sends whole rows ('O') whatever its
// partitions logged: their NULLs are values only if every partition is
// FULL.
func TestPartitionOldRows(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		// A root without a key of its own, partitions with their own identity.
		`CREATE TABLE r (id int, v text, n int) PARTITION BY RANGE (id)`,
		`CREATE TABLE r_pk PARTITION OF r (PRIMARY KEY (id)) FOR VALUES FROM (0) TO (100)`,
		`CREATE TABLE r_full PARTITION OF r FOR VALUES FROM (100) TO (200)`,
		`ALTER TABLE r_full REPLICA IDENTITY FULL`,
		`CREATE TABLE r_rest PARTITION OF r DEFAULT`,
		`ALTER TABLE r_rest REPLICA IDENTITY FULL`,
		// Two levels under a key-less root, the leaf with a key.
		`CREATE TABLE m (id int, region text, v text) PARTITION BY LIST (region)`,
		`CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu') PARTITION BY RANGE (id)`,
		`CREATE TABLE m_eu_low PARTITION OF m_eu (PRIMARY KEY (id, region)) FOR VALUES FROM (0) TO (100)`,
		// A root with a key, one partition with REPLICA IDENTITY FULL.
		`CREATE TABLE k (id int PRIMARY KEY, v text, n int) PARTITION BY RANGE (id)`,
		`CREATE TABLE k_low PARTITION OF k FOR VALUES FROM (0) TO (100)`,
		`CREATE TABLE k_full PARTITION OF k FOR VALUES FROM (100) TO (200)`,
		`ALTER TABLE k_full REPLICA IDENTITY FULL`,
		// A root with REPLICA IDENTITY FULL: pgoutput sends 'O', whole
		// rows, but a partition with a key logs only its key.
		`CREATE TABLE f (id int, v text, n int) PARTITION BY RANGE (id)`,
		`ALTER TABLE f REPLICA IDENTITY FULL`,
		`CREATE TABLE f_pk PARTITION OF f (PRIMARY KEY (id)) FOR VALUES FROM (0) TO (100)`,
		`CREATE TABLE f_full PARTITION OF f FOR VALUES FROM (100) TO (200)`,
		`ALTER TABLE f_full REPLICA IDENTITY FULL`,
		// ... and one whose every partition is FULL: its NULLs are values.
		`CREATE TABLE g (id int, v text) PARTITION BY RANGE (id)`,
		`ALTER TABLE g REPLICA IDENTITY FULL`,
		`CREATE TABLE g_full PARTITION OF g FOR VALUES FROM (0) TO (100)`,
		`ALTER TABLE g_full REPLICA IDENTITY FULL`,
	)
	ts := startStream(t, db, streamOpts{})
	db.exec(t,
		`INSERT INTO r VALUES (1, 'a', 10), (101, 'b', NULL), (NULL, NULL, NULL)`,
		`UPDATE r SET v = 'aa' WHERE id = 1`,
		`UPDATE r SET id = 2 WHERE id = 1`,
		`UPDATE r SET v = 'bb', n = 11 WHERE id = 101`,
		`DELETE FROM r WHERE id = 2`,
		`DELETE FROM r WHERE id = 101`,
		`DELETE FROM r WHERE id IS NULL`,
		`INSERT INTO m VALUES (1, 'eu', 'a')`,
		`UPDATE m SET id = 2`,
		`DELETE FROM m`,
		`INSERT INTO k VALUES (1, 'a', 10), (101, 'b', NULL)`,
		`UPDATE k SET v = 'bb' WHERE id = 101`,
		`DELETE FROM k`,
		`INSERT INTO f VALUES (1, 'a', 10), (101, 'b', NULL)`,
		`UPDATE f SET id = 2 WHERE id = 1`,
		`UPDATE f SET v = 'bb' WHERE id = 101`,
		`DELETE FROM f`,
		`INSERT INTO g VALUES (1, NULL)`,
		`UPDATE g SET v = 'x'`,
		`DELETE FROM g`,
	)
	wantMessages(t, ts.sync(t),
		`{"action":"insert","table":"public.r","record":{"id":1,"v":"a","n":10},"changes":null}`,
		`{"action":"insert","table":"public.r","record":{"id":101,"v":"b","n":null},"changes":null}`,
		`{"action":"insert","table":"public.r","record":{"id":null,"v":null,"n":null},"changes":null}`,
		`{"action":"update","table":"public.r","record":{"id":1,"v":"aa","n":10},"changes":{}}`,
		// The partition's key changed: its old key is logged.
		`{"action":"update","table":"public.r","record":{"id":2,"v":"aa","n":10},"changes":{"id":1}}`,
		// FULL logs the whole old row; its NULL cannot be told from a
		// column an identity did not log, so it is left out.
		`{"action":"update","table":"public.r","record":{"id":101,"v":"bb","n":11},"changes":{"v":"b"}}`,
		`{"action":"delete","table":"public.r","record":{"id":2},"changes":null}`,
		`{"action":"delete","table":"public.r","record":{"id":101,"v":"bb","n":11},"changes":null}`,
		// Only a FULL partition's row of NULLs logs nothing but NULLs.
		`{"action":"delete","table":"public.r","record":{"id":null,"v":null,"n":null},"changes":null}`,
		`{"action":"insert","table":"public.m","record":{"id":1,"region":"eu","v":"a"},"changes":null}`,
		`{"action":"update","table":"public.m","record":{"id":2,"region":"eu","v":"a"},"changes":{"id":1}}`,
		`{"action":"delete","table":"public.m","record":{"id":2,"region":"eu"},"changes":null}`,
		`{"action":"insert","table":"public.k","record":{"id":1,"v":"a","n":10},"changes":null}`,
		`{"action":"insert","table":"public.k","record":{"id":101,"v":"b","n":null},"changes":null}`,
		`{"action":"update","table":"public.k","record":{"id":101,"v":"bb","n":null},"changes":{"v":"b"}}`,
		`{"action":"delete","table":"public.k","record":{"id":1},"changes":null}`,
		`{"action":"delete","table":"public.k","record":{"id":101,"v":"bb"},"changes":null}`,
		`{"action":"insert","table":"public.f","record":{"id":1,"v":"a","n":10},"changes":null}`,
		`{"action":"insert","table":"public.f","record":{"id":101,"v":"b","n":null},"changes":null}`,
		// Not {"id":1,"v":null,"n":null}: f_pk logged only its key.
		`{"action":"update","table":"public.f","record":{"id":2,"v":"a","n":10},"changes":{"id":1}}`,
		`{"action":"update","table":"public.f","record":{"id":101,"v":"bb","n":null},"changes":{"v":"b"}}`,
		`{"action":"delete","table":"public.f","record":{"id":2},"changes":null}`,
		`{"action":"delete","table":"public.f","record":{"id":101,"v":"bb"},"changes":null}`,
		`{"action":"insert","table":"public.g","record":{"id":1,"v":null},"changes":null}`,
		`{"action":"update","table":"public.g","record":{"id":1,"v":"x"},"changes":{"v":null}}`,
		`{"action":"delete","table":"public.g","record":{"id":1,"v":"x"},"changes":null}`,
	)
}
