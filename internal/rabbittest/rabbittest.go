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
// A package whose TestMain is another's (cmd/walhook's is pgtest's) shares
// a node through Lazy and StopLazy, and gives a test that kills its node
// one of its own (New).
package rabbittest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	// URL is amqp://guest:guest@127.0.0.1:port/.
	URL  string
	Port int
	Dir  string
	node string
	dist int

	mu     sync.Mutex
	proc   *os.Process
	exited chan error
}

var shared *Server

// Main starts the package's node, runs its tests and kills the node. When
// rabbitmq-server is not installed, the tests that ask for the node skip
// (make test installs it).
// startTimeout bounds a node's start: about 5 s on an idle machine, but
// the Erlang VM's boot is CPU-bound, and the whole suite shares the
// machine with it (a node took over a minute under a load average of 30).
const startTimeout = 3 * time.Minute

func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "rabbittest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "rabbittest:", err)
		os.Exit(1)
	}
	var startErr error
	if _, err := os.Stat(program); err == nil {
		shared, startErr = Start(dir)
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
	shared.mu.Lock()
	down := shared.proc == nil
	shared.mu.Unlock()
	if down {
		if err := shared.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	return shared
}

// Start starts a node in a directory under dir (see startIn).
func Start(dir string) (*Server, error) {
	s, err := startIn(filepath.Join(dir, "1"))
	if !errors.Is(err, errNotReady) {
		return s, err
	}
	// Once in a full run on a loaded machine a node stalled for the whole
	// startTimeout after naming its database directory: it is killed, and
	// a new one gets one more try, with ports and a directory of its own.
	fmt.Fprintf(os.Stderr, "rabbittest: %v\nrabbittest: starting a new node\n", err)
	return startIn(filepath.Join(dir, "2"))
}

// errNotReady is a node that did not answer within startTimeout.
var errNotReady = errors.New("not ready")

// startIn starts a node in dir.
func startIn(dir string) (*Server, error) {
	port, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	dist, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port), Port: port, Dir: dir, dist: dist,
		node: fmt.Sprintf("walhooktest%d@localhost", port),
	}
	for _, d := range []string{"mnesia", "log", "home"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"rabbitmq.conf":   "loopback_users = none\nlog.console = false\nlog.file.level = info\n",
		"enabled_plugins": "[].\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	return s, s.start()
}

// env is the node's environment: everything of its own under Dir.
func (s *Server) env() []string {
	env := []string{
		"HOME=" + filepath.Join(s.Dir, "home"), // the Erlang cookie
		"RABBITMQ_NODENAME=" + s.node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", s.Port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", s.dist),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(s.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(s.Dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(s.Dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(s.Dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(s.Dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE=" + filepath.Join(s.Dir, "rabbit.pid"),
		"RABBITMQ_ALLOW_INPUT=1", // exec the node rather than wait for it in a shell
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RABBITMQ_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "ERL_") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *Server) start() error {
	log, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(program)
	cmd.Dir = s.Dir
	cmd.Env = s.env()
	cmd.Stdout, cmd.Stderr = log, log
	// The node's Erlang shell reads stdin and halts at its end: a pipe
	// kept open while the node should run, closed when this process dies.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", program, err)
	}
	exited := make(chan error, 1)
	go func() { err := cmd.Wait(); stdin.Close(); exited <- err }()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited at start: %v\n%s", program, err, s.LogTail(30))
		default:
		}
		c, err := amqp.DialConfig(s.URL, amqp.Config{Dial: amqp.DefaultDial(time.Second)})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			return fmt.Errorf("%s %w after %v: %v\n%s", program, errNotReady, startTimeout, err, s.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.mu.Lock()
	s.proc, s.exited = cmd.Process, exited
	s.mu.Unlock()
	return nil
}

// Kill kills the node (its whole process group) with SIGKILL and waits for
// it to exit; killing a killed node does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	proc, exited := s.proc, s.exited
	s.proc, s.exited = nil, nil
	s.mu.Unlock()
	if proc == nil {
		return
	}
	_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
	<-exited
}

// Restart starts the node again on its port and data, after Kill.
func (s *Server) Restart() error { return s.start() }

// LogTail is the last n lines of the node's output.
func (s *Server) LogTail(n int) string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

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

var lazy struct {
	once sync.Once
	srv  *Server
	dir  string
	err  error
}

// Lazy is a node shared by the tests of a package that cannot give its
// TestMain to Main (one that runs PostgreSQL too): the first test that
// asks starts it, the others wait for it, and StopLazy, called after the
// package's tests, kills it (as does the test process's death). A node
// boots in seconds of CPU, so tests that only publish and declare share
// one, each with exchanges and queues of its own; a test that kills or
// restarts its node uses New. It skips the test when rabbitmq-server is
// not installed.
func Lazy(t testing.TB) *Server {
	t.Helper()
	skipWithoutServer(t)
	lazy.once.Do(func() {
		if lazy.dir, lazy.err = os.MkdirTemp("", "rabbittest-"); lazy.err == nil {
			lazy.srv, lazy.err = Start(lazy.dir)
		}
	})
	if lazy.err != nil {
		t.Fatal(lazy.err)
	}
	return lazy.srv
}

// skipWithoutServer skips t when rabbitmq-server is not installed.
func skipWithoutServer(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(program); err != nil {
		t.Skipf("%s is not installed (make test installs it)", program)
	}
}

// StopLazy kills the node Lazy started, if it did, and removes its files.
func StopLazy() {
	if lazy.srv != nil {
		lazy.srv.Kill()
	}
	if lazy.dir != "" {
		os.RemoveAll(lazy.dir)
	}
}

// New starts a node of t's own, killed when t ends: for a test that kills
// or restarts it, in a package that cannot give its TestMain to Main (see
// Lazy). It skips the test when rabbitmq-server is not installed.
func New(t testing.TB) *Server {
	t.Helper()
	skipWithoutServer(t)
	s, err := Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}
