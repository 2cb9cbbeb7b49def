package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// reaperScript waits for end-of-file on its standard input, then stops the
// cluster in $1 (pg_ctl is $0) and removes the directory $2.
const reaperScript = `read -r _; "$0" stop -D "$1" -m immediate -w >/dev/null 2>&1; rm -rf "$2"`

// A reaper cleans up a cluster when the test process ends without closing
// it: after a panic, a test timeout, a signal or os.Exit. pg_ctl runs the
// postmaster in a session of its own, so nothing else would stop it.
//
// The reaper is a small shell process reading a pipe whose write end only the
// test process holds. The kernel closes that end however the test process
// ends, the read returns, and the shell stops the cluster and removes its
// directory. The shell runs in a process group of its own, so a Ctrl-C
// meant for the tests does not kill it first.
type reaper struct {
	cmd *exec.Cmd
	w   *os.File // never written; closed by the kernel when the process ends
}

// startReaper starts a reaper for the cluster in dataDir, inside dir.
func startReaper(o owner, bin binaries, dataDir, dir string) (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", reaperScript, bin.pgCtl, dataDir, dir)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: o.cred}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	return &reaper{cmd: cmd, w: w}, nil
}

// stop ends the reaper once the cluster is gone. It is safe on a nil reaper.
func (rp *reaper) stop() error {
	if rp == nil {
		return nil
	}
	errKill := rp.cmd.Process.Kill()
	_ = rp.cmd.Wait() // "signal: killed" is the expected outcome
	errClose := rp.w.Close()
	if errKill != nil && !errors.Is(errKill, os.ErrProcessDone) {
		return fmt.Errorf("stop reaper: %w", errKill)
	}
	if errClose != nil {
		return fmt.Errorf("stop reaper: %w", errClose)
	}
	return nil
}
