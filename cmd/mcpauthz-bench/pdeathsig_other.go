//go:build !linux

package main

import "os/exec"

// setParentDeathSignal is Linux-only; elsewhere the children are stopped
// only by the harness itself.
func setParentDeathSignal(*exec.Cmd) {}
