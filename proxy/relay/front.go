package relay

import (
	"net"
	"net/netip"
	"time"
)

// Front is what a Listener asks of its owner about each connection the
// loops accept. Its methods run on a loop's thread and must not block.
type Front interface {
	// Plain reports whether the loops read the new connection's first
	// request themselves; false hands it to Go (Accept) at once, as for a
	// TLS port.
	Plain() bool
	// Limits bound reading a request head: its size in bytes (a larger one
	// is handed to Go, whose server answers it) and the time it may take
	// (the client then gets a 408 and is closed).
	Limits() (maxHead int, timeout time.Duration)
	// Request judges a complete request head. It returns an Upstream for a
	// WebSocket the loop is to complete with a backend (rest, what the
	// client sent after the head, is relayed first), or an answer to write
	// before closing the connection, or neither to hand the connection,
	// head and rest included, to Go.
	Request(head, rest []byte, remote netip.AddrPort) (up Upstream, answer []byte)
	// AcceptFailed is told when accept fails for want of a resource
	// (EMFILE, ENFILE, ENOBUFS, ENOMEM) and whether a waiting client was
	// refused (closed at once) meanwhile; Accepted after each accept that
	// worked, so that an episode of failures can be seen to end.
	AcceptFailed(err error, refused bool)
	Accepted()
}

// prefixConn is a connection handed to Go with the bytes a loop already
// read from it.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}
