package consultest

import (
	"os/exec"
	"syscall"
)

// setProcAttr has the kernel kill the agent if the test process dies
// without stopping it (a panic, a timeout, kill -9), so that no agent
// outlives its test.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
