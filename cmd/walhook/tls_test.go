package main

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
)

// withURL returns dsn connecting as user (with password, unless empty)
// and with the query parameters kv (key, value, ...) set.
func withURL(t *testing.T, dsn, user, password string, kv ...string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	if password != "" {
		u.User = url.UserPassword(user, password)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// walsender reports whether the walsender streaming from slot runs
// over TLS, and as which role, as the server sees it. It waits for the
// walsender to be listed: it takes the slot a moment before.
func walsender(t *testing.T, dsn, slot string) (ssl bool, role string) {
	t.Helper()
	conn := connect(t, dsn)
	waitUntil(t, 10*time.Second, "the walsender of slot "+slot+" is in pg_stat_replication", func() bool {
		err := conn.QueryRow(context.Background(), `
			SELECT s.ssl, r.usename FROM pg_replication_slots sl
			JOIN pg_stat_replication r ON r.pid = sl.active_pid
			JOIN pg_stat_ssl s ON s.pid = r.pid
			WHERE sl.slot_name = $1`, slot).Scan(&ssl, &role)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("read the walsender of slot %s: %v", slot, err)
		}
		return err == nil
	})
	return ssl, role
}

// TestTLSToPostgres runs walhook against a server with ssl on: with
// sslmode=verify-full and the server's CA, check passes and run streams
// over TLS, logging in with a client certificate, also after PostgreSQL
// restarts; with another CA both
// refuse, saying the certificate is not trusted, without printing the
// URL's password.
func TestTLSToPostgres(t *testing.T) {
	t.Parallel()
	const role = "walhook_cert"
	srv := startServer(t, pgtest.Options{TLS: true, CertUsers: []string{role}})
	files, _ := srv.TLS()
	dsn := pgtest.NewDatabase(t, srv)
	admin := connect(t, dsn)
	exec1(t, admin, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	exec1(t, admin, `CREATE ROLE `+role+` LOGIN REPLICATION`)
	exec1(t, admin, `GRANT SELECT ON t TO `+role)
	exec1(t, admin, `CREATE PUBLICATION tls_pub FOR TABLE t WITH (publish_via_partition_root = true)`)
	cert, key, err := srv.ClientCert(role)
	if err != nil {
		t.Fatal(err)
	}
	verified := withURL(t, dsn, role, "", "sslmode", "verify-full", "sslrootcert", files.RootCert, "sslcert", cert, "sslkey", key)

	rcv := webhooktest.New(t, "")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, verified, "tls_pub", "  tables: [t]\n", sinkConf{Name: "s", URL: rcv.URL})
	code, out := runWalhook(t, "check", "--config", cfg)
	if code != 0 {
		t.Fatalf("check with verify-full: exit code %d, want 0; output:\n%s", code, out)
	}
	for _, want := range []string{"server certificate and host name verified (ok)", "role " + role + ": REPLICATION (ok)"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	d := startWalhook(t, "run", "--config", cfg)
	waitStreaming(t, admin, "tls_pub", d)
	if ssl, user := walsender(t, dsn, "tls_pub"); !ssl || user != role {
		t.Errorf("walhook's walsender: ssl %t as %s, want ssl true as %s", ssl, user, role)
	}
	exec1(t, admin, `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g`)
	msgs := rcv.WaitCount(t, 3, 30*time.Second)
	for i, m := range msgs {
		if m.Action != "insert" || m.Metadata.TableName != "t" {
			t.Errorf("message %d: %s on %s, want insert on t", i, m.Action, m.Metadata.TableName)
		}
	}
	// A restart of PostgreSQL ends the TLS connections: that is a lost
	// connection, which walhook reconnects, not a TLS failure.
	if err := srv.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	admin = connect(t, dsn)
	exec1(t, admin, `INSERT INTO t VALUES (4, 'after the restart')`)
	rcv.WaitFor(t, 60*time.Second, "the insert after the restart", func(ms []webhooktest.Message) bool {
		return len(ms) > 0 && strings.Contains(string(ms[len(ms)-1].Record), "after the restart")
	})
	if ssl, user := walsender(t, dsn, "tls_pub"); !ssl || user != role {
		t.Errorf("walhook's walsender after the restart: ssl %t as %s, want ssl true as %s", ssl, user, role)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exit code after SIGTERM: %d, want 0\n%s", code, d.out.String())
	}

	// Another CA: the server's certificate is not trusted. A password in
	// the URL must not appear in what walhook prints.
	const password = "s3cret-Pa55word"
	untrusted := withURL(t, dsn, role, password, "sslmode", "verify-full", "sslrootcert", files.OtherRootCert, "sslcert", cert, "sslkey", key)
	cfg = writeConfig(t, t.TempDir(), untrusted, "tls_pub", "  tables: [t]\n", sinkConf{Name: "s", URL: rcv.URL})
	for _, cmd := range []string{"check", "run"} {
		code, out := runWalhook(t, cmd, "--config", cfg)
		if code != 1 {
			t.Errorf("%s with another CA: exit code %d, want 1; output:\n%s", cmd, code, out)
		}
		if !strings.Contains(out, "the server's TLS certificate is not trusted") || !strings.Contains(out, "sslrootcert") {
			t.Errorf("%s with another CA: output does not say that the certificate is not trusted and what to set:\n%s", cmd, out)
		}
		if strings.Contains(out, password) {
			t.Errorf("%s with another CA: output shows the password:\n%s", cmd, out)
		}
	}
}
