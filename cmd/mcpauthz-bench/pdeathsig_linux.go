package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill the child if the harness dies
// without stopping it (SIGKILL, a crash). The signal is tied to the OS
// thread that started the child; the Go runtime does not end threads that
// no goroutine locked, so it fires when the process exits.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
