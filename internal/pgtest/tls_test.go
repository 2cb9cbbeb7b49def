package pgtest

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// withQuery returns dsn as user with the query parameters kv (key, value,
// ...) set.
func withQuery(t *testing.T, dsn, user string, kv ...string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func tryConnect(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{TLS: true, CertUsers: []string{"certuser"}})
	files, ok := srv.TLS()
	if !ok {
		t.Fatal("TLS: got false, want the files of a cluster started with TLS")
	}
	admin := connect(t, srv.DSN(""))
	if _, err := admin.Exec(t.Context(), "CREATE ROLE certuser LOGIN"); err != nil {
		t.Fatal(err)
	}

	// The server's key must be the server user's and private, or
	// PostgreSQL would not have started; check the client files too.
	for _, path := range []string{filepath.Join(srv.dataDir, serverKeyFile), files.RootCert, files.OtherRootCert} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: mode %o, want 600", path, got)
		}
		if srv.owner.cred != nil {
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != srv.owner.cred.Uid {
				t.Errorf("%s: owned by uid %d, want %d (%s)", path, st.Uid, srv.owner.cred.Uid, serverUser)
			}
		}
	}

	for _, host := range []string{"127.0.0.1", "localhost"} {
		dsn := withQuery(t, srv.DSN(""), "postgres", "sslmode", "verify-full", "sslrootcert", files.RootCert)
		u, _ := url.Parse(dsn)
		u.Host = host + ":" + u.Port()
		conn := connect(t, u.String())
		if got := queryString(t, conn, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "true" {
			t.Errorf("verify-full to %s: pg_stat_ssl.ssl = %s, want true", host, got)
		}
	}

	err := tryConnect(withQuery(t, srv.DSN(""), "postgres", "sslmode", "verify-full", "sslrootcert", files.OtherRootCert))
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("verify-full with the other CA: got %v, want an x509.UnknownAuthorityError", err)
	}

	if err := tryConnect(withQuery(t, srv.DSN(""), "certuser", "sslmode", "disable")); err == nil {
		t.Error("certuser without TLS: got no error, want pg_hba's reject")
	}
	if err := tryConnect(withQuery(t, srv.DSN(""), "certuser", "sslmode", "verify-full", "sslrootcert", files.RootCert)); err == nil {
		t.Error("certuser without a client certificate: got no error, want one")
	}
	cert, key, err := srv.ClientCert("certuser")
	if err != nil {
		t.Fatal(err)
	}
	if err := tryConnect(withQuery(t, srv.DSN(""), "certuser", "sslmode", "verify-full", "sslrootcert", files.RootCert,
		"sslcert", cert, "sslkey", key)); err != nil {
		t.Errorf("certuser with its client certificate: %v", err)
	}
	other, otherKey, err := srv.ClientCert("someone_else")
	if err != nil {
		t.Fatal(err)
	}
	if err := tryConnect(withQuery(t, srv.DSN(""), "certuser", "sslmode", "verify-full", "sslrootcert", files.RootCert,
		"sslcert", other, "sslkey", otherKey)); err == nil {
		t.Error("certuser with another role's certificate: got no error, want one")
	}
}

func TestTLSOptionsRefused(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{
		{CertUsers: []string{"a"}},                // needs TLS
		{TLS: true, CertUsers: []string{"A b"}},   // not written as it is into pg_hba.conf
		{TLS: true, CertUsers: []string{"a,all"}}, // would widen the line
	} {
		if _, err := opts.settings(); err == nil {
			t.Errorf("settings(%+v): got no error, want one", opts)
		}
	}
	srv := Shared()
	if _, ok := srv.TLS(); ok {
		t.Error("TLS of a cluster without Options.TLS: got true, want false")
	}
	if _, _, err := srv.ClientCert("x"); err == nil {
		t.Error("ClientCert of a cluster without Options.TLS: got no error, want one")
	}
}
