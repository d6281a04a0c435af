//go:build linux

package testnet

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// SockoptInt reads an integer option (unix.GetsockoptInt's level and
// name) of the socket under c, a listener or a connection.
func SockoptInt(t testing.TB, c syscall.Conn, level, opt int) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v, gerr := 0, error(nil)
	if err := raw.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, opt, gerr)
	}
	return v
}

// Accepted dials ln and returns the connection ln accepts for it; both
// ends are closed when the test ends.
func Accepted(t testing.TB, ln net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ac.Close() })
	return ac
}
