//go:build linux

package proxy

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenTCPIsPlainTCP: the ports listen with plain TCP, not the
// Multipath TCP Go defaults to, which would refuse the options the event
// loops set on the listening socket and cost every accept more; and the
// sockets Go accepts there (TLS ports) start with delayed ACKs.
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
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if raw, err = ac.(*net.TCPConn).SyscallConn(); err != nil {
		t.Fatal(err)
	}
	quick := -1
	raw.Control(func(fd uintptr) { quick, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK) })
	if gerr != nil || quick != 0 {
		t.Fatalf("accepted socket: TCP_QUICKACK %d (%v); want 0, delayed ACKs", quick, gerr)
	}
}
