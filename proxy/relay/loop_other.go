//go:build !linux

package relay

import (
	"errors"
	"net"
	"syscall"
)

// Loops are implemented on Linux only; elsewhere every session runs a
// goroutine per direction.
type Loops struct{}

// NewLoops fails on this platform.
func NewLoops(n, bufSize int) (*Loops, error) {
	return nil, errors.New("relay: event loops need Linux")
}

// Close does nothing.
func (ls *Loops) Close() error { return nil }

// Dial takes nothing on this platform: the caller dials from a goroutine.
func (ls *Loops) Dial(client net.Conn, pre []byte, up Upstream) bool { return false }

// Listen fails on this platform: Go accepts.
func (ls *Loops) Listen(ln net.Listener, front Front) (*Listener, error) {
	return nil, errors.New("relay: event loops need Linux")
}

// Listener is not available on this platform.
type Listener struct{ net.Listener }

type evSession struct{}

func (e *evSession) sockets() (client, backend syscall.Conn) { return nil, nil }

func (e *evSession) post(op uint8, toClient, toBackend uint16, reason string) {}

func (s *Session) startOnLoop(client net.Conn, clientPre []byte, backend net.Conn, backendPre []byte) bool {
	return false
}

// Socket is the net.Conn under a TLS server connection; without loops it
// is just the TCP connection.
type Socket struct{ *net.TCPConn }

// NewSocket wraps an accepted TCP connection for tls.Server.
func NewSocket(c *net.TCPConn) *Socket { return &Socket{TCPConn: c} }
