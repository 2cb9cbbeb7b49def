//go:build !linux

package proctest

import "syscall"

// sysProcAttr: only Linux can tie the server's life to the test process;
// elsewhere the test's cleanup kills it.
func sysProcAttr() *syscall.SysProcAttr { return nil }
