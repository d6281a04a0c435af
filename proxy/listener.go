package proxy

import (
	cryptotls "crypto/tls"
	"net"
	"sync/atomic"
)

// hijackableListener wraps accepted connections so that the proxy can take
// one over from fasthttp without fasthttp keeping anything of it.
//
// fasthttp either keeps a hijacked connection's header reader forever
// (KeepHijackedConns, a max_header_bytes buffer dropped as garbage per
// WebSocket) or recycles the reader and closes the connection after the
// hijack handler. With this wrapper it does the latter and its Close is a
// no-op once the proxy owns the socket.
type hijackableListener struct {
	net.Listener
	// tlsConfig, if set, returns the TLS config to serve each new
	// connection with, or nil to serve it plain (see tls.go).
	tlsConfig func() *cryptotls.Config
}

func (l hijackableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.tlsConfig != nil {
		if conf := l.tlsConfig(); conf != nil {
			// The handshake runs at fasthttp's first read, within its
			// ReadTimeout (handshake_timeout).
			return &hijackableTLSConn{hijackableConn{Conn: cryptotls.Server(c, conf)}}, nil
		}
	}
	return &hijackableConn{Conn: c}, nil
}

type hijackableConn struct {
	net.Conn
	taken atomic.Bool
}

// take hands the underlying connection to the caller; fasthttp's later
// Close of the wrapper no longer reaches it.
func (c *hijackableConn) take() net.Conn {
	c.taken.Store(true)
	return c.Conn
}

func (c *hijackableConn) Close() error {
	if c.taken.Load() {
		return nil
	}
	return c.Conn.Close()
}
