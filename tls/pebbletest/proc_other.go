//go:build !linux

package pebbletest

import "os/exec"

func setProcAttr(*exec.Cmd) {}
