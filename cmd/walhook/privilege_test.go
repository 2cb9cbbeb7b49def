package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// checkFails runs `walhook check` and wants exit code 1 with every one of
// wants in its output.
func checkFails(t *testing.T, cfg string, wants ...string) {
	t.Helper()
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 1 {
		t.Errorf("check: exit code %d, want 1; output:\n%s", code, out)
	}
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// TestLeastPrivilege runs walhook as a role with only LOGIN REPLICATION
// and SELECT on the published table, the publication made by an
// administrator, as docs/least-privilege.md describes. Then it takes
// privileges away one at a time, and `walhook check` must name each and
// the statement that gives it back.
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	admin := connect(t, dsn)
	// Roles belong to the whole server, which other tests share.
	role := fmt.Sprintf("walhook_least_%08x", rand.Uint32())
	exec1(t, admin, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	exec1(t, admin, `CREATE ROLE `+role+` LOGIN REPLICATION`)
	t.Cleanup(func() {
		// Before the database goes (cleanups run last first): the
		// role's grants are in it.
		ctx := context.Background()
		for _, sql := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
			if _, err := admin.Exec(ctx, sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
	})
	exec1(t, admin, `GRANT SELECT ON t TO `+role)
	exec1(t, admin, `CREATE PUBLICATION least_pub FOR TABLE t WITH (publish_via_partition_root = true)`)

	asRole := withURL(t, dsn, role, "")
	rcv := webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, asRole, "least_pub", "  tables: [t]\n", sinkConf{Name: "s", URL: rcv.URL})
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "role "+role+": REPLICATION (ok)") || strings.Contains(out, "error:") {
		t.Fatalf("check as %s: exit code %d, want 0 with REPLICATION ok and no error; output:\n%s", role, code, out)
	}

	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, admin, "least_pub", d)
	if _, user := walsender(t, dsn, "least_pub"); user != role {
		t.Errorf("walhook's walsender runs as %s, want %s", user, role)
	}
	exec1(t, admin, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`)
	exec1(t, admin, `UPDATE t SET v = 'c' WHERE id = 1`)
	perRow := map[int][]string{}
	for _, m := range rcv.WaitCount(t, 3, 30*time.Second) {
		var rec struct{ ID int }
		if err := json.Unmarshal(m.Record, &rec); err != nil {
			t.Fatalf("record %s: %v", m.Record, err)
		}
		perRow[rec.ID] = append(perRow[rec.ID], m.Action)
	}
	if got := fmt.Sprint(perRow); got != "map[1:[insert update] 2:[insert]]" {
		t.Errorf("actions per row: got %s, want map[1:[insert update] 2:[insert]]", got)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exit code after SIGTERM: %d, want 0\n%s", code, d.out.String())
	}

	t.Run("no SELECT", func(t *testing.T) {
		exec1(t, admin, `REVOKE SELECT ON t FROM `+role)
		defer exec1(t, admin, `GRANT SELECT ON t TO `+role)
		checkFails(t, cfg, "lacks SELECT on public.t", "GRANT SELECT ON public.t TO "+role+";")
	})
	t.Run("no USAGE on the schema", func(t *testing.T) {
		exec1(t, admin, `CREATE SCHEMA sales`)
		exec1(t, admin, `CREATE TABLE sales.orders (id int PRIMARY KEY)`)
		exec1(t, admin, `GRANT SELECT ON sales.orders TO `+role)
		exec1(t, admin, `ALTER PUBLICATION least_pub ADD TABLE sales.orders`)
		defer exec1(t, admin, `ALTER PUBLICATION least_pub DROP TABLE sales.orders`)
		cfg := writeConfig(t, t.TempDir(), asRole, "least_pub", "  tables: [t, sales.orders]\n", sinkConf{Name: "s", URL: rcv.URL})
		checkFails(t, cfg, "lacks USAGE on schema sales", "GRANT USAGE ON SCHEMA sales TO "+role+";")
	})
	t.Run("no heartbeat", func(t *testing.T) {
		const fn = "pg_catalog.pg_logical_emit_message(boolean, text, text)"
		exec1(t, admin, `REVOKE EXECUTE ON FUNCTION `+fn+` FROM PUBLIC`)
		defer exec1(t, admin, `GRANT EXECUTE ON FUNCTION `+fn+` TO PUBLIC`)
		checkFails(t, cfg, "lacks EXECUTE on pg_logical_emit_message", "GRANT EXECUTE ON FUNCTION "+fn+" TO "+role+";")
	})
	t.Run("no REPLICATION", func(t *testing.T) {
		exec1(t, admin, `ALTER ROLE `+role+` NOREPLICATION`)
		defer exec1(t, admin, `ALTER ROLE `+role+` REPLICATION`)
		checkFails(t, cfg, "role "+role+": no REPLICATION", "lacks the REPLICATION attribute", "ALTER ROLE "+role+" WITH REPLICATION;")
		// run finds the slot it made before, and its replication
		// connection is refused: the error says what to grant.
		code, out := runWalhook(t, "run", "--config", cfg)
		if code != 1 || !strings.Contains(out, `ALTER ROLE "`+role+`" WITH REPLICATION`) {
			t.Errorf("run without REPLICATION: exit code %d, want 1 naming ALTER ROLE ... WITH REPLICATION; output:\n%s", code, out)
		}
	})
	t.Run("no REPLICATION on Amazon RDS", func(t *testing.T) {
		// RDS replaces the attribute by membership in rds_replication; a
		// role of that name stands in for it.
		exec1(t, admin, `ALTER ROLE `+role+` NOREPLICATION`)
		defer exec1(t, admin, `ALTER ROLE `+role+` REPLICATION`)
		exec1(t, admin, `CREATE ROLE rds_replication NOLOGIN`)
		defer exec1(t, admin, `DROP ROLE rds_replication`)
		checkFails(t, cfg, "GRANT rds_replication TO "+role+";")
		exec1(t, admin, `GRANT rds_replication TO `+role)
		exec1(t, admin, `REVOKE SELECT ON t FROM `+role) // so that check still fails, and prints the rest
		defer exec1(t, admin, `GRANT SELECT ON t TO `+role)
		code, out := runWalhook(t, "check", "--config", cfg)
		if code != 1 || !strings.Contains(out, "role "+role+": REPLICATION (ok)") || strings.Contains(out, "rds_replication") {
			t.Errorf("check as a member of rds_replication: exit code %d, want 1 (for SELECT) with REPLICATION ok; output:\n%s", code, out)
		}
	})
	t.Run("no CONNECT", func(t *testing.T) {
		var db string
		if err := admin.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
			t.Fatal(err)
		}
		exec1(t, admin, `REVOKE CONNECT ON DATABASE `+db+` FROM PUBLIC`)
		defer exec1(t, admin, `GRANT CONNECT ON DATABASE `+db+` TO PUBLIC`)
		for _, cmd := range []string{"check", "run"} {
			code, out := runWalhook(t, cmd, "--config", cfg)
			if code != 1 || !strings.Contains(out, `GRANT CONNECT ON DATABASE "`+db+`" TO "`+role+`"`) {
				t.Errorf("%s without CONNECT: exit code %d, want 1 naming GRANT CONNECT; output:\n%s", cmd, code, out)
			}
		}
	})
	t.Run("no publication", func(t *testing.T) {
		// The role cannot create a publication for a table it does not
		// own: an administrator must, and check and run say how.
		cfg := writeConfig(t, t.TempDir(), asRole, "least_new", "  tables: [t]\n", sinkConf{Name: "s", URL: rcv.URL})
		stmt := `CREATE PUBLICATION "least_new" FOR TABLE "public"."t" WITH (publish_via_partition_root = true)`
		checkFails(t, cfg, `lacks the right to create the publication "least_new"`, "does not own public.t",
			"lacks CREATE on database", "have an administrator", stmt+";")
		code, out := runWalhook(t, "run", "--config", cfg)
		if code != 1 || !strings.Contains(out, "permission denied") || !strings.Contains(out, stmt) {
			t.Errorf("run without the publication: exit code %d, want 1 naming the statement; output:\n%s", code, out)
		}
		// Owning the table, it still lacks CREATE on the database.
		exec1(t, admin, `ALTER TABLE t OWNER TO `+role)
		defer exec1(t, admin, `ALTER TABLE t OWNER TO postgres`)
		checkFails(t, cfg, "lacks CREATE on database", "GRANT CREATE ON DATABASE ")
	})
}
