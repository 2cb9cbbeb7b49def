// Package proctest runs a server program (a message broker) for tests: on
// a free loopback port, in a temporary directory, logging to a file there,
// killed with SIGKILL when the test ends (and, on Linux, when the test
// process dies). A test may kill it and start it again on the same port
// and directory, as a broker restart. internal/natstest and
// internal/redistest build on it; Line is the question their Ready asks.
package proctest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walhook/walhook/internal/testport"
)

// Spec says how to run one server.
type Spec struct {
	// Program is the executable, looked up on PATH and then in /usr/sbin
	// and /usr/bin.
	Program string
	// Args are its arguments for a port and a directory of its own.
	Args func(port int, dir string) []string
	// Ready returns nil once the server on addr answers.
	Ready func(addr string) error
}

// Process is a running (or killed) server.
type Process struct {
	t    testing.TB
	spec Spec
	path string
	// Port and Dir are the server's, the same across restarts.
	Port int
	Dir  string

	mu     sync.Mutex
	proc   *os.Process
	exited chan error // receives the running server's exit, once
}

// Start starts a server for t; it is killed when t ends. Start skips the
// test when the program is not installed (make test installs it).
func Start(t testing.TB, spec Spec) *Process {
	t.Helper()
	path, err := lookPath(spec.Program)
	if err != nil {
		t.Skipf("%s is not installed (make test installs it): %v", spec.Program, err)
	}
	p := &Process{t: t, spec: spec, path: path, Dir: t.TempDir()}
	t.Cleanup(func() { _ = p.Kill() })
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		p.Port = port
		err = p.start()
		if err == nil {
			return p
		}
		if attempt == 2 {
			t.Fatalf("start %s: %v\n%s", spec.Program, err, p.LogTail(20))
		}
	}
}

// Addr is the server's address, 127.0.0.1:port.
func (p *Process) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.Port) }

// Restart starts the server again on its port and directory, after Kill.
func (p *Process) Restart() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatalf("restart %s: %v\n%s", p.spec.Program, err, p.LogTail(20))
	}
}

// Kill kills the server with SIGKILL and waits for it to exit. Killing a
// killed server does nothing.
func (p *Process) Kill() error {
	p.mu.Lock()
	proc, exited := p.proc, p.exited
	p.proc, p.exited = nil, nil
	p.mu.Unlock()
	if proc == nil {
		return nil
	}
	_ = proc.Kill()
	<-exited
	return nil
}

// LogTail returns the last n lines of the server's log.
func (p *Process) LogTail(n int) string {
	data, _ := os.ReadFile(filepath.Join(p.Dir, "server.log"))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *Process) start() error {
	log, err := os.OpenFile(filepath.Join(p.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(p.path, p.spec.Args(p.Port, p.Dir)...)
	cmd.Dir = p.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited at start: %v", p.spec.Program, err)
		default:
		}
		err := p.spec.Ready(p.Addr())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s not ready after 15s: %w", p.spec.Program, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.mu.Lock()
	p.proc, p.exited = cmd.Process, exited
	p.mu.Unlock()
	return nil
}

// FreePort returns a loopback port nothing listens on now, which stays
// this process's for a restart on the same port (see testport).
func FreePort() (int, error) { return testport.Reserve() }

func lookPath(program string) (string, error) {
	if path, err := exec.LookPath(program); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
		path := filepath.Join(dir, program)
		if st, err := os.Stat(path); err == nil && !st.IsDir() {
			return path, nil
		}
	}
	return "", errors.New("not on PATH nor in /usr/sbin, /usr/bin or /usr/local/bin")
}

// Line dials addr, writes send (if any) and returns the first line the
// server writes back, all within a second: the question a Spec's Ready
// asks of a line-based protocol.
func Line(addr, send string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if send != "" {
		if _, err := c.Write([]byte(send)); err != nil {
			return "", err
		}
	}
	return bufio.NewReader(c).ReadString('\n')
}
