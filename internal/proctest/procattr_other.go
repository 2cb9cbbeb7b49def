//go:build !linux

package proctest

import (
	"os"
	"syscall"
)

// sysProcAttr: only Linux can tie the server's life to the test process;
// elsewhere the test's cleanup kills it.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// kill kills the server with SIGKILL.
func kill(p *os.Process) { _ = p.Kill() }
