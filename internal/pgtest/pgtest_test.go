package pgtest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestMain(m *testing.M) { Main(m) }

// startServer starts a cluster for one test and closes it when the test
// ends, printing the end of its log if the test failed.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	srv, err := Start(opts)
	if err != nil {
		t.Fatalf("Start(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", srv.LogTail(40))
		}
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

// connect opens a connection that the test closes when it ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// queryString runs a query that returns one text value.
func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestSharedServer(t *testing.T) {
	t.Parallel()
	srv := Shared()
	conn := connect(t, srv.DSN("postgres"))
	if got := queryString(t, conn, "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level: got %q, want %q", got, "logical")
	}
	if srv.Restartable() {
		if got := queryString(t, conn, "SHOW max_replication_slots"); got != "40" {
			t.Errorf("max_replication_slots: got %q, want %q", got, "40")
		}
		if got := queryString(t, conn, "SHOW fsync"); got != "off" {
			t.Errorf("fsync: got %q, want %q", got, "off")
		}
		if got := queryString(t, conn, "SHOW port"); got != strconv.Itoa(srv.Port()) {
			t.Errorf("port: got %s, want %d", got, srv.Port())
		}
		if !strings.Contains(srv.LogTail(0), "ready to accept connections") {
			t.Errorf("server log does not say the server is ready:\n%s", srv.LogTail(0))
		}
	}
}

func TestReplicationConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn, err := pgconn.Connect(ctx, Shared().ReplicationDSN("postgres"))
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	defer conn.Close(context.Background())
	results, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		t.Fatalf("IDENTIFY_SYSTEM: %v", err)
	}
	if len(results) != 1 || len(results[0].Rows) != 1 {
		t.Fatalf("IDENTIFY_SYSTEM: got %d results, want 1 result of 1 row", len(results))
	}
	row := results[0].Rows[0]
	if len(row) != 4 {
		t.Fatalf("IDENTIFY_SYSTEM: got %d columns, want 4 (systemid, timeline, xlogpos, dbname)", len(row))
	}
	if len(row[0]) == 0 {
		t.Errorf("IDENTIFY_SYSTEM: got empty systemid")
	}
	if got := string(row[3]); got != "postgres" {
		t.Errorf("IDENTIFY_SYSTEM dbname: got %q, want %q", got, "postgres")
	}
}

func TestStopStart(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{})
	if !srv.Restartable() {
		t.Fatal("Restartable: got false, want true")
	}
	ctx := t.Context()
	dsn := srv.DSN("postgres")
	conn := connect(t, dsn)
	// With synchronous_commit=off a commit may still sit in the WAL buffers
	// when the server stops at once; this session waits for the WAL write.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on; CREATE TABLE survivor (id int); INSERT INTO survivor VALUES (42)"); err != nil {
		t.Fatalf("create table: %v", err)
	}

	if err := srv.Stop("sideways"); err == nil {
		t.Error("Stop(\"sideways\"): got no error, want one")
	}
	if err := srv.Stop("immediate"); err != nil {
		t.Fatalf("Stop(immediate): %v", err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Error("ping after stop: got no error, want one")
	}
	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c, err := pgx.Connect(dialCtx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connect after stop: got no error, want one")
	}

	if err := srv.Start(); err != nil {
		t.Fatalf("Start after stop: %v", err)
	}
	conn = connect(t, dsn)
	if got := queryString(t, conn, "SELECT id::text FROM survivor"); got != "42" {
		t.Errorf("row after restart: got %s, want 42", got)
	}
	if !strings.Contains(srv.LogTail(0), "database system was interrupted") {
		t.Errorf("server log does not show crash recovery after an immediate stop:\n%s", srv.LogTail(20))
	}

	if err := srv.Stop("fast"); err != nil {
		t.Fatalf("Stop(fast): %v", err)
	}
	dir := srv.dir
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after stop: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory after Close: got %v, want it gone", err)
	}
	if err := srv.Start(); err == nil {
		t.Error("Start after Close: got no error, want one")
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{
		WALLevel:         "replica",
		WALSenderTimeout: 5 * time.Second,
		ExtraConf:        []string{"work_mem = '7MB'", "max_connections = 50"},
	})
	conn := connect(t, srv.DSN(""))
	tests := []struct{ setting, want string }{
		{"wal_level", "replica"},
		{"wal_sender_timeout", "5s"},
		{"work_mem", "7MB"},
		{"max_connections", "50"}, // ExtraConf overrides the package's settings
		{"shared_buffers", "32MB"},
		{"unix_socket_directories", srv.dir},
	}
	for _, tt := range tests {
		if got := queryString(t, conn, "SELECT current_setting($1)", tt.setting); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.setting, got, tt.want)
		}
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{
		{WALLevel: "archive"},
		{WALSenderTimeout: -time.Second},
	} {
		if srv, err := Start(opts); err == nil {
			srv.Close()
			t.Errorf("Start(%+v): got no error, want one", opts)
		}
	}
}

func TestStartRetriesTakenPort(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	picks := 0
	pick := func() (int, error) {
		picks++
		if picks == 1 {
			return takenPort, nil
		}
		return freePort()
	}
	srv, err := start(Options{}, pick)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer srv.Close()
	if picks != 2 {
		t.Errorf("ports picked: got %d, want 2", picks)
	}
	if srv.Port() == takenPort {
		t.Errorf("port: got the taken port %d, want another", takenPort)
	}
	conn := connect(t, srv.DSN(""))
	if got := queryString(t, conn, "SHOW port"); got != strconv.Itoa(srv.Port()) {
		t.Errorf("port: got %s, want %d", got, srv.Port())
	}
}

func TestNewDatabase(t *testing.T) {
	t.Parallel()
	srv := Shared()
	admin := connect(t, srv.DSN("postgres"))
	var name, slot string
	var streaming *pgconn.PgConn

	t.Run("use", func(t *testing.T) {
		dsn := NewDatabase(t, srv)
		conn := connect(t, dsn)
		name = queryString(t, conn, "SELECT current_database()")
		if !strings.HasPrefix(name, "testnewdatabase_use_") {
			t.Errorf("database name: got %q, want it to start with testnewdatabase_use_", name)
		}
		ctx := t.Context()
		if _, err := conn.Exec(ctx, "CREATE TABLE mine (id int); CREATE PUBLICATION pub FOR ALL TABLES"); err != nil {
			t.Fatalf("create table: %v", err)
		}

		// Another database does not see this one's table.
		other := connect(t, NewDatabase(t, srv))
		if got := queryString(t, other, "SELECT coalesce(to_regclass('mine')::text, 'none')"); got != "none" {
			t.Errorf("table in another database: got %s, want none", got)
		}

		// A slot, streamed from, must not keep the database alive.
		slot = name + "_slot"
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
			t.Fatalf("create slot: %v", err)
		}
		streaming = startStreaming(t, srv.ReplicationDSN(name), slot)
		var active bool
		if err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active); err != nil || !active {
			t.Fatalf("slot active: got %v (err %v), want true", active, err)
		}
	})
	if streaming != nil {
		defer streaming.Close(context.Background())
	}
	if name == "" {
		t.Fatal("subtest did not get a database")
	}

	ctx := t.Context()
	var databases, slots int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&databases); err != nil {
		t.Fatal(err)
	}
	if databases != 0 {
		t.Errorf("database %s after the subtest: still there, want it dropped", name)
	}
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != 0 {
		t.Errorf("slot %s after the subtest: still there, want it dropped", slot)
	}
}

// startStreaming starts logical replication from slot, leaving the
// connection in copy-both mode so the slot stays active.
func startStreaming(t *testing.T, dsn, slot string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	sql := "START_REPLICATION SLOT " + pgx.Identifier{slot}.Sanitize() +
		" LOGICAL 0/0 (proto_version '1', publication_names 'pub')"
	conn.Frontend().Send(&pgproto3.Query{String: sql})
	if err := conn.Frontend().Flush(); err != nil {
		t.Fatalf("START_REPLICATION: %v", err)
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("START_REPLICATION: %v", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return conn
		case *pgproto3.ErrorResponse:
			t.Fatalf("START_REPLICATION: %v", pgconn.ErrorResponseToPgError(msg))
		}
	}
}

func TestDatabaseName(t *testing.T) {
	tests := []struct{ testName, wantPrefix string }{
		{"TestFoo", "testfoo_"},
		{"TestFoo/sub-test_2", "testfoo_sub_test_2_"},
		{"TestÜnicode/a b", "test_nicode_a_b_"},
		{strings.Repeat("TestLong", 20), strings.ToLower(strings.Repeat("TestLong", 20))[:54] + "_"},
	}
	for _, tt := range tests {
		got := databaseName(tt.testName)
		if !strings.HasPrefix(got, tt.wantPrefix) || len(got) != len(tt.wantPrefix)+8 || len(got) > 63 {
			t.Errorf("databaseName(%q): got %q, want %q followed by 8 hex digits", tt.testName, got, tt.wantPrefix)
		}
	}
	if a, b := databaseName("TestFoo"), databaseName("TestFoo"); a == b {
		t.Errorf("databaseName twice: got %q both times, want different names", a)
	}
}

func TestExternalServerDSN(t *testing.T) {
	tests := []struct {
		dsn, wantDSN, wantReplication string
	}{
		{
			dsn:             "postgres://walhook:secret@db.example:6543/app?sslmode=disable",
			wantDSN:         "postgres://walhook:secret@db.example:6543/other?sslmode=disable",
			wantReplication: "postgres://walhook:secret@db.example:6543/other?replication=database&sslmode=disable",
		},
		{
			dsn:             "host=db.example port=6543 dbname=app",
			wantDSN:         "host=db.example port=6543 dbname=app dbname='other'",
			wantReplication: "host=db.example port=6543 dbname=app dbname='other' replication='database'",
		},
	}
	for _, tt := range tests {
		srv := &Server{externalDSN: tt.dsn}
		if got := srv.DSN("other"); got != tt.wantDSN {
			t.Errorf("DSN(other) for %q: got %q, want %q", tt.dsn, got, tt.wantDSN)
		}
		if got := srv.ReplicationDSN("other"); got != tt.wantReplication {
			t.Errorf("ReplicationDSN(other) for %q: got %q, want %q", tt.dsn, got, tt.wantReplication)
		}
		cfg, err := pgconn.ParseConfig(srv.DSN("other"))
		if err != nil || cfg.Database != "other" {
			t.Errorf("parse DSN(other) for %q: got database %q (err %v), want other", tt.dsn, cfg.Database, err)
		}
		if srv.Restartable() {
			t.Errorf("Restartable for %q: got true, want false", tt.dsn)
		}
		if err := srv.Stop("fast"); err == nil || !strings.Contains(err.Error(), "cannot be stopped or restarted") {
			t.Errorf("Stop for %q: got %v, want a cannot-be-restarted error", tt.dsn, err)
		}
		if err := srv.Start(); err == nil || !strings.Contains(err.Error(), "cannot be stopped or restarted") {
			t.Errorf("Start for %q: got %v, want a cannot-be-restarted error", tt.dsn, err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("Close for %q: got %v, want nil", tt.dsn, err)
		}
	}
}

func TestVersionDirs(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "10", "common", "16.1"} {
		if err := os.MkdirAll(filepath.Join(root, v, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got := versionDirs(root)
	want := []string{"16.1", "15", "10", "9.6"}
	if len(got) != len(want) {
		t.Fatalf("versionDirs: got %q, want versions %q", got, want)
	}
	for i, v := range want {
		if w := filepath.Join(root, v, "bin"); got[i] != w {
			t.Errorf("versionDirs[%d]: got %q, want %q", i, got[i], w)
		}
	}
}

func TestFindBinaries(t *testing.T) {
	b, err := findBinaries(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{b.initdb, b.pgCtl, b.postgres} {
		if filepath.Dir(p) != b.dir {
			t.Errorf("binary %s: got it outside %s, want all in one directory", p, b.dir)
		}
	}

	// Nothing on PATH, no pg_config, no version directories.
	t.Setenv("PATH", t.TempDir())
	_, err = locateBinaries(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "install Debian's postgresql package") {
		t.Errorf("locateBinaries with nothing installed: got %v, want an error saying what to install", err)
	}
}
