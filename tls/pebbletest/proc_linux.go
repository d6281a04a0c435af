package pebbletest

import (
	"os/exec"
	"syscall"
)

// setProcAttr has the kernel kill Pebble if the test process dies without
// stopping it (a panic, a timeout, kill -9), so that none outlives its test.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
