// Package testport hands the test suite's servers loopback TCP ports that
// no other server of the suite holds and that no outgoing connection can
// take while the server is down.
//
// A port from net.Listen("127.0.0.1:0") comes from the kernel's ephemeral
// range, the range outgoing connections take their local ports from. A
// server stopped and started again on its port (a PostgreSQL restart
// test), or a port picked now and bound later by another process (an
// admin listener), can then find it taken by one of the thousands of
// connections a full run makes: "Address already in use". Ports below
// the ephemeral range are never taken that way, but picked at random they
// repeat across the suite's concurrent test processes. So Reserve takes a
// port below the ephemeral range and locks a file named after it
// (flock(2)) for the life of the process: every test process on the
// machine skips a port another one holds, and the kernel releases the
// lock however the process ends.
package testport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// span is how many ports below the ephemeral range Reserve uses.
const span = 12000

var (
	mu   sync.Mutex
	held []*os.File // the locks, kept open until the process ends
)

// Reserve returns a loopback TCP port that was free a moment ago and that
// no other caller of Reserve on this machine gets while this process
// lives. When the ephemeral range leaves no room below it, it falls back
// to a port the kernel picks.
func Reserve() (int, error) {
	lo, hi, ok := below()
	if !ok {
		return anyPort()
	}
	dir := filepath.Join(os.TempDir(), "walhook-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("reserve a port: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	n := hi - lo
	start := rand.IntN(n)
	for i := range n {
		port := lo + (start+i)%n
		f, err := lock(filepath.Join(dir, strconv.Itoa(port)))
		if err != nil {
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another test process holds it
			}
			return 0, fmt.Errorf("reserve a port: %w", err)
		}
		if !free(port) {
			f.Close() // some other program listens there
			continue
		}
		held = append(held, f)
		return port, nil
	}
	return 0, fmt.Errorf("reserve a port: every port from %d to %d is held or in use", lo, hi-1)
}

// Addr is Reserve's port as 127.0.0.1:port.
func Addr() (string, error) {
	port, err := Reserve()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// below returns the span of ports just below the ephemeral range, above
// the privileged ones.
func below() (lo, hi int, ok bool) {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(raw))
	if len(f) != 2 {
		return 0, 0, false
	}
	ephemeral, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, 0, false
	}
	hi = ephemeral
	lo = max(hi-span, 10000)
	return lo, hi, hi-lo >= 1000
}

// lock opens path and takes an exclusive lock on it without waiting.
func lock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// free reports whether nothing listens on 127.0.0.1:port.
func free(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// anyPort returns a port the kernel picks.
func anyPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
