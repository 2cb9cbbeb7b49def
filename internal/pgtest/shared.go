package pgtest

import (
	"fmt"
	"os"
	"testing"
)

// shared is the server Main runs for the package under test.
var shared *Server

// Main runs a package's tests with a shared server; call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// It starts a cluster with the default [Options] (or uses the server named by
// WALHOOK_TEST_DSN), runs the tests, closes the cluster and exits with the
// tests' status. If the server cannot be had, Main prints why and exits with
// status 1: a missing PostgreSQL fails the run rather than skipping tests.
// When the tests fail, Main prints the end of the shared server's log.
func Main(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	srv, err := startShared()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	shared = srv
	defer func() {
		if code != 0 && srv.Restartable() {
			fmt.Fprintf(os.Stderr, "pgtest: last lines of the shared server's log:\n%s\n", srv.LogTail(30))
		}
		if err := srv.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: close the shared server: %v\n", err)
			code = max(code, 1)
		}
	}()
	return m.Run()
}

// startShared returns the external server if WALHOOK_TEST_DSN names one,
// else a new cluster.
func startShared() (*Server, error) {
	if dsn := os.Getenv(ExternalEnv); dsn != "" {
		return external(dsn)
	}
	srv, err := Start(Options{})
	if err != nil {
		return nil, fmt.Errorf("start the shared PostgreSQL server: %w", err)
	}
	return srv, nil
}

// Shared returns the server [Main] runs for the package's tests, or nil
// when TestMain did not call Main. Tests share it: a test that needs a
// database of its own asks [NewDatabase] for one, and a test that stops or
// reconfigures a server starts its own with [Start].
func Shared() *Server {
	return shared
}
