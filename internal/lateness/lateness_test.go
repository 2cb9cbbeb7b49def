package lateness

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestProbeSeesAStall: the whole process is stopped (SIGSTOP) for 300 ms,
// as a loaded machine may leave it unscheduled; the probe reports at least
// that much lateness, and little on an idle stretch before it.
func TestProbeSeesAStall(t *testing.T) {
	idle := Probe(t)
	time.Sleep(100 * time.Millisecond)
	if got := idle(); got > 250*time.Millisecond {
		t.Logf("lateness %v while idle: a busy machine", got)
	}

	late := Probe(t)
	time.Sleep(20 * time.Millisecond)
	// A child resumes the process after 300 ms.
	resume := exec.Command("sh", "-c", fmt.Sprintf("sleep 0.3; kill -CONT %d", os.Getpid()))
	if err := resume.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := resume.Wait(); err != nil {
		t.Fatal(err)
	}
	stall := time.Since(stopped)
	time.Sleep(20 * time.Millisecond)
	if got := late(); got < stall-50*time.Millisecond {
		t.Fatalf("lateness %v after the process was stopped for %v, want about that much", got, stall)
	}
}
