package replication

import (
	"strings"
	"testing"

	"github.com/walhook/walhook/config"
)

func TestCheckReplicaIdentity(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(t,
		`CREATE TABLE keyed (id int PRIMARY KEY, n int)`,
		`CREATE TABLE docs (id int PRIMARY KEY, body text)`,
		`CREATE TABLE full_nokey (n int)`,
		`ALTER TABLE full_nokey REPLICA IDENTITY FULL`,
		`CREATE TABLE nothing (id int PRIMARY KEY)`,
		`ALTER TABLE nothing REPLICA IDENTITY NOTHING`,
		`CREATE TABLE nokey (n int)`,
		`CREATE TABLE by_index (id int PRIMARY KEY, email text NOT NULL)`,
		`CREATE UNIQUE INDEX by_index_email ON by_index (email)`,
		`ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_email`,
		`CREATE TABLE parent (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`,
		`CREATE TABLE parent_eu PARTITION OF parent FOR VALUES IN ('eu')`,
		`CREATE TABLE parent_us PARTITION OF parent FOR VALUES IN ('us')`,
		`ALTER TABLE parent_us REPLICA IDENTITY NOTHING`,
	)
	src := config.Source{URL: db.dsn, Publication: "walhook"} // no publication yet: every table
	ids, err := CheckReplicaIdentity(t.Context(), db.conn, src, IdentityNeeds{OldValues: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range ids {
		line := id.Table.String() + " " + id.Mode + " [" + strings.Join(id.Key, ",") + "]"
		for _, f := range id.Findings {
			if f.Blocking {
				line += " BLOCKING"
			}
			line += " | " + f.Message
		}
		got = append(got, line)
	}
	want := []string{
		`public.by_index index [email] | rows are grouped by the replica identity index by_index_email (email), not the primary key: a delete carries only those columns | changes holds old values only when the key changes, and a delete carries only the key; ALTER TABLE "public"."by_index" REPLICA IDENTITY FULL gives every old value | an update that leaves a large (TOASTed) value alone leaves it out of record and names it in metadata.unchanged_toast_columns; run ALTER TABLE "public"."by_index" REPLICA IDENTITY FULL to fill it in from the old row`,
		`public.docs default [id] | changes holds old values only when the key changes, and a delete carries only the key; ALTER TABLE "public"."docs" REPLICA IDENTITY FULL gives every old value | an update that leaves a large (TOASTed) value alone leaves it out of record and names it in metadata.unchanged_toast_columns; run ALTER TABLE "public"."docs" REPLICA IDENTITY FULL to fill it in from the old row`,
		`public.full_nokey full [] | no primary key to group rows by: all its messages travel in one lane, one batch at a time; a primary key lets rows travel in parallel`,
		`public.keyed default [id] | changes holds old values only when the key changes, and a delete carries only the key; ALTER TABLE "public"."keyed" REPLICA IDENTITY FULL gives every old value`,
		`public.nokey default [] BLOCKING | it has no primary key and REPLICA IDENTITY DEFAULT: PostgreSQL rejects UPDATE and DELETE on it while it is published; add a primary key, or run ALTER TABLE "public"."nokey" REPLICA IDENTITY FULL | no primary key to group rows by: all its messages travel in one lane, one batch at a time; a primary key lets rows travel in parallel | changes holds old values only when the key changes, and a delete carries only the key; ALTER TABLE "public"."nokey" REPLICA IDENTITY FULL gives every old value`,
		`public.nothing nothing [id] BLOCKING | it has REPLICA IDENTITY NOTHING: PostgreSQL rejects UPDATE and DELETE on it while it is published; add a primary key, or run ALTER TABLE "public"."nothing" REPLICA IDENTITY FULL | changes holds old values only when the key changes, and a delete carries only the key; ALTER TABLE "public"."nothing" REPLICA IDENTITY FULL gives every old value`,
		`public.parent default [id,region] BLOCKING | partition "public"."parent_us" has REPLICA IDENTITY NOTHING: PostgreSQL rejects UPDATE and DELETE on it while it is published; add a primary key, or run ALTER TABLE "public"."parent_us" REPLICA IDENTITY FULL | changes holds old values only when the key changes, and a delete carries only the key; ALTER TABLE "public"."parent" REPLICA IDENTITY FULL gives every old value | an update that leaves a large (TOASTed) value alone leaves it out of record and names it in metadata.unchanged_toast_columns; run ALTER TABLE "public"."parent" REPLICA IDENTITY FULL to fill it in from the old row`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// With the publication, only its tables; configured tables likewise.
	db.exec(t, `CREATE PUBLICATION walhook FOR TABLE keyed, parent WITH (publish_via_partition_root = true)`)
	for _, src := range []config.Source{
		{Publication: "walhook"},
		{Publication: "absent", Tables: []config.Table{{Schema: "public", Name: "keyed"}, {Schema: "public", Name: "missing"}, {Schema: "public", Name: "parent"}}},
	} {
		ids, err := CheckReplicaIdentity(t.Context(), db.conn, src, IdentityNeeds{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, id := range ids {
			names = append(names, id.Table.String())
		}
		if strings.Join(names, ",") != "public.keyed,public.parent" {
			t.Errorf("publication %q, tables %v: got tables %v, want public.keyed and public.parent", src.Publication, src.Tables, names)
		}
	}
}
