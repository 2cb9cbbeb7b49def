// Package redistest runs redis-server for tests (Debian's redis-server
// package): on a free loopback port, with its files in a temporary
// directory, killed when the test ends. With Options.AOF every write is
// fsynced to an append-only file, so a test may kill it with SIGKILL and
// restart it without losing what it acknowledged.
//
//	srv := redistest.Start(t, redistest.Options{})
//	entries := srv.Stream(t, "walhook:public.orders")
package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/walhook/walhook/internal/proctest"
)

// Options configure a server.
type Options struct {
	// AOF keeps every write in an append-only file, fsynced always.
	AOF bool
	// Password is requirepass; "" for none.
	Password string
}

// Server is a running redis-server.
type Server struct {
	*proctest.Process
	// URL is redis://[:password@]127.0.0.1:port/0.
	URL  string
	opts Options
}

// Start starts a server for t; it is killed when t ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	p := proctest.Start(t, proctest.Spec{
		Program: "redis-server",
		Args: func(port int, dir string) []string {
			args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
				"--save", "", "--protected-mode", "no", "--logfile", ""}
			if opts.AOF {
				args = append(args, "--appendonly", "yes", "--appendfsync", "always")
			}
			if opts.Password != "" {
				args = append(args, "--requirepass", opts.Password)
			}
			return args
		},
		Ready: ready,
	})
	url := "redis://" + p.Addr() + "/0"
	if opts.Password != "" {
		url = "redis://:" + opts.Password + "@" + p.Addr() + "/0"
	}
	return &Server{Process: p, URL: url, opts: opts}
}

// ready returns nil once the server answers PING (or asks for a
// password), and is not loading its data.
func ready(addr string) error {
	line, err := proctest.Line(addr, "PING\r\n")
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("PING: %q", strings.TrimSpace(line))
}

// Client is a client of the test's own.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// Stream returns every entry of a stream, in order.
func (s *Server) Stream(t testing.TB, key string) []redis.XMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entries, err := s.Client(t).XRange(ctx, key, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", key, err)
	}
	return entries
}
