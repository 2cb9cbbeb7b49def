// Package rabbittest runs rabbitmq-server for tests (Debian's
// rabbitmq-server package): a node of its own, with a private node name,
// AMQP port, distribution port, data and log directories and Erlang
// cookie, all under a temporary directory, killed with SIGKILL at the end
// (and, on Linux, when the test process dies). RabbitMQ takes seconds to
// start, so a test package starts one node in TestMain and its tests
// share it, each with exchanges and queues of its own:
//
//	func TestMain(m *testing.M) { rabbittest.Main(m) }
//
//	srv := rabbittest.Shared(t)
//	srv.Declare(t, "walhook", "topic", "q", "#")
//
// A test may kill the node and restart it on the same port and data, as a
// broker restart; tests that do so must not run in parallel with others.
package rabbittest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walhook/walhook/internal/proctest"
)

// program is the server's start script; run directly, not through
// /usr/sbin's wrapper, which switches to the rabbitmq user and its
// system-wide directories.
const program = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// Server is a running (or killed) RabbitMQ node.
type Server struct {
	*proctest.Process
	// URL is amqp://guest:guest@127.0.0.1:port/.
	URL string
}

var shared *Server

// Main starts the package's node, runs its tests and kills the node. When
// rabbitmq-server is not installed, the tests that ask for the node skip
// (make test installs it).
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "rabbittest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "rabbittest:", err)
		os.Exit(1)
	}
	var startErr error
	if _, err := os.Stat(program); err == nil {
		shared, startErr = launch(dir)
	}
	if startErr != nil {
		fmt.Fprintf(os.Stderr, "rabbittest: %v\n", startErr)
		os.Exit(1)
	}
	code := m.Run()
	if shared != nil {
		shared.Kill()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// Shared is the node Main started; it skips the test when there is none.
// A test that killed it finds it restarted.
func Shared(t testing.TB) *Server {
	t.Helper()
	if shared == nil {
		t.Skipf("%s is not installed (make test installs it)", program)
	}
	if !shared.Running() {
		if err := shared.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	return shared
}

// New starts a node of t's own, killed when t ends: for a test package
// that cannot give its TestMain to Main (one that runs PostgreSQL too). It
// skips the test when rabbitmq-server is not installed.
func New(t testing.TB) *Server {
	t.Helper()
	dist, err := proctest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return newServer(proctest.Start(t, spec(dist)))
}

// launch starts a node in dir, without a test.
func launch(dir string) (*Server, error) {
	port, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	dist, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	p, err := proctest.Launch(spec(dist), port, dir)
	if err != nil {
		return nil, err
	}
	return newServer(p), nil
}

func newServer(p *proctest.Process) *Server {
	return &Server{Process: p, URL: amqpURL(p.Addr())}
}

func amqpURL(addr string) string { return "amqp://guest:guest@" + addr + "/" }

// spec runs a node whose Erlang distribution listens on dist: a private
// node name, AMQP port, data and log directories and Erlang cookie, all
// under the process's directory.
func spec(dist int) proctest.Spec {
	return proctest.Spec{
		Program: program,
		Args: func(_ int, dir string) []string {
			if err := prepare(dir); err != nil {
				// The node then fails to start, and says why.
				fmt.Fprintln(os.Stderr, "rabbittest:", err)
			}
			return nil
		},
		Env: func(port int, dir string) []string { return env(port, dist, dir) },
		// The node's Erlang shell reads stdin and halts at its end.
		Stdin: true,
		Ready: func(addr string) error {
			c, err := amqp.DialConfig(amqpURL(addr), amqp.Config{Dial: amqp.DefaultDial(time.Second)})
			if err == nil {
				c.Close()
			}
			return err
		},
		ReadyTimeout: 60 * time.Second, // RabbitMQ takes seconds to start
	}
}

// prepare makes the node's directories and configuration files in dir.
func prepare(dir string) error {
	for _, d := range []string{"mnesia", "log", "home"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	files := map[string]string{
		"rabbitmq.conf":   "loopback_users = none\nlog.console = false\nlog.file.level = info\n",
		"enabled_plugins": "[].\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// env is the node's environment: everything of its own under dir.
func env(port, dist int, dir string) []string {
	env := []string{
		"HOME=" + filepath.Join(dir, "home"), // the Erlang cookie
		fmt.Sprintf("RABBITMQ_NODENAME=walhooktest%d@localhost", port),
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", dist),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "rabbit.pid"),
		"RABBITMQ_ALLOW_INPUT=1", // exec the node rather than wait for it in a shell
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RABBITMQ_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "ERL_") {
			env = append(env, kv)
		}
	}
	return env
}

// Kill kills the node (its whole process group) with SIGKILL and waits for
// it to exit; killing a killed node does nothing.
func (s *Server) Kill() { _ = s.Process.Kill() }

// Restart starts the node again on its port and data, after Kill.
func (s *Server) Restart() error { return s.StartAgain() }

// Channel is a channel on a new connection of the test's, closed when the
// test ends.
func (s *Server) Channel(t testing.TB) *amqp.Channel {
	t.Helper()
	c, err := amqp.Dial(s.URL)
	if err != nil {
		t.Fatalf("connect to %s: %v", s.URL, err)
	}
	t.Cleanup(func() { c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// Declare declares a durable exchange of kind and, when queue is not
// empty, a durable queue bound to it with key.
func (s *Server) Declare(t testing.TB, exchange, kind, queue, key string) {
	t.Helper()
	ch := s.Channel(t)
	if err := ch.ExchangeDeclare(exchange, kind, true, false, false, false, nil); err != nil {
		t.Fatalf("declare exchange %s: %v", exchange, err)
	}
	if queue == "" {
		return
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("declare queue %s: %v", queue, err)
	}
	if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		t.Fatalf("bind queue %s: %v", queue, err)
	}
}

// DeleteExchange deletes an exchange.
func (s *Server) DeleteExchange(t testing.TB, exchange string) {
	t.Helper()
	if err := s.Channel(t).ExchangeDelete(exchange, false, false); err != nil {
		t.Fatalf("delete exchange %s: %v", exchange, err)
	}
}

// Get takes every message queue holds now, in queue order.
func (s *Server) Get(t testing.TB, queue string) []amqp.Delivery {
	t.Helper()
	ch := s.Channel(t)
	var got []amqp.Delivery
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get from %s: %v", queue, err)
		}
		if !ok {
			return got
		}
		got = append(got, d)
	}
}
