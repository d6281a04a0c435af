//go:build linux

package proxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// delayACKs sets TCP_QUICKACK 0 on a listening socket, which the sockets
// it accepts inherit (see listenTCP). Best effort: without it the kernel
// only sends one more segment per connection.
func delayACKs(ln net.Listener) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	if raw, err := tl.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0) })
	}
}
