package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/state/pgstore"
)

// useStateURL makes the configuration at path keep its state at url.
func useStateURL(t *testing.T, path, url string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^state:\n  (path|url): .*$`)
	if !re.Match(b) {
		t.Fatalf("%s has no state.path to replace:\n%s", path, b)
	}
	b = re.ReplaceAll(b, []byte(fmt.Sprintf("state:\n  url: %q", url)))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCheckStateURL: walhook check connects to state.url and names what
// keeps walhook from keeping its state there, with the statement that
// fixes it.
func TestCheckStateURL(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	admin := connect(t, dsn)
	exec1(t, admin, `CREATE TABLE t (id int PRIMARY KEY)`)
	role := fmt.Sprintf("walhook_state_%08x", rand.Uint32())
	exec1(t, admin, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, sql := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
			if _, err := admin.Exec(ctx, sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
	})
	rcv := webhooktest.New(t, "")
	cfg := writeConfig(t, t.TempDir(), dsn, "checkstate", "", sinkConf{Name: "s", URL: rcv.URL})

	// Nothing listens there.
	useStateURL(t, cfg, replaceHost(t, dsn, freeAddr(t)))
	checkFails(t, cfg, "state.url: cannot connect", "state.url cannot be reached")

	// A role that may not create the schema.
	useStateURL(t, cfg, withURL(t, dsn, role, ""))
	var db string
	if err := admin.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	checkFails(t, cfg, "schema walhook is missing, and role "+role+" cannot create it: GRANT CREATE ON DATABASE "+db+" TO "+role)

	exec1(t, admin, `GRANT CREATE ON DATABASE `+db+` TO `+role)
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "schema walhook missing (walhook run creates it)") {
		t.Fatalf("check after the grant: exit code %d, want 0 saying walhook creates the schema:\n%s", code, out)
	}

	// Made by walhook as that role: at the newest migration, nobody active.
	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, admin, "checkstate", d)
	code, out = runWalhook(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("schema walhook at migration %d (ok)", pgstore.SchemaVersion())) ||
		!strings.Contains(out, fmt.Sprintf("relayed by the walhook with pid %d", d.cmd.Process.Pid)) {
		t.Fatalf("check with walhook running: exit code %d, want 0 naming the migration and the active pid %d:\n%s", code, d.cmd.Process.Pid, out)
	}
	d.stop(t, syscall.SIGTERM, 30*time.Second)

	// Its tables taken away from it.
	exec1(t, admin, `REVOKE USAGE ON SCHEMA walhook FROM `+role)
	exec1(t, admin, `ALTER SCHEMA walhook OWNER TO postgres`)
	checkFails(t, cfg, "cannot use schema walhook: GRANT USAGE, CREATE ON SCHEMA walhook TO "+role)
}
