//go:build linux

package proxy

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenTCPIsPlainTCP: the ports listen with plain TCP, not the
// Multipath TCP Go defaults to, which would refuse the options the event
// loops set on the listening socket and cost every accept more.
func TestListenTCPIsPlainTCP(t *testing.T) {
	ln, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	proto, gerr := 0, error(nil)
	raw.Control(func(fd uintptr) { proto, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if gerr != nil || proto != unix.IPPROTO_TCP {
		t.Fatalf("listening socket protocol %d (%v); want IPPROTO_TCP (%d)", proto, gerr, unix.IPPROTO_TCP)
	}
}
