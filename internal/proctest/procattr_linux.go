package proctest

import (
	"os"
	"syscall"
)

// sysProcAttr has the server killed when the test process dies, in a
// process group of its own.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// kill kills the server's process group with SIGKILL: a start script's
// children (an Erlang node's helpers) go with it.
func kill(p *os.Process) { _ = syscall.Kill(-p.Pid, syscall.SIGKILL) }
