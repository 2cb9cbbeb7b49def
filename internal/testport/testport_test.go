package testport

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

const childEnv = "WALHOOK_TESTPORT_CHILD"

// TestReserveIsExclusiveAcrossProcesses: ports another test process holds
// are never handed out, nor one held in this process, and all lie below
// the ephemeral range.
func TestReserveIsExclusiveAcrossProcesses(t *testing.T) {
	const n = 300
	lo, hi, ok := below()
	if !ok {
		t.Skip("the ephemeral range leaves no room below it")
	}
	// The child reserves n ports, prints them, and holds them until its
	// stdin closes.
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	theirs := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	for lines := 0; lines < n && sc.Scan(); lines++ {
		p, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("the child printed %q, want a port", sc.Text())
		}
		theirs[p] = true
	}
	if len(theirs) != n {
		t.Fatalf("the child reserved %d distinct ports of %d, want no port twice (%v)", len(theirs), n, sc.Err())
	}
	ours := map[int]bool{}
	for range n {
		p, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case theirs[p]:
			t.Fatalf("port %d reserved by both processes", p)
		case ours[p]:
			t.Fatalf("port %d reserved twice in one process", p)
		case p < lo || p >= hi:
			t.Fatalf("port %d outside %d-%d, below the ephemeral range", p, lo, hi-1)
		}
		ours[p] = true
	}
}

// TestChild is the other process of TestReserveIsExclusiveAcrossProcesses.
func TestChild(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(childEnv))
	if err != nil {
		t.Skip("run by TestReserveIsExclusiveAcrossProcesses")
	}
	for range n {
		p, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(p)
	}
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent is done
}

// TestSkipsAPortInUse: a port some program listens on is not free.
func TestSkipsAPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if free(l.Addr().(*net.TCPAddr).Port) {
		t.Fatal("a port with a listener counts as free")
	}
	p, err := Reserve()
	if err != nil {
		t.Fatal(err)
	}
	if !free(p) {
		t.Fatalf("reserved port %d is in use", p)
	}
}
