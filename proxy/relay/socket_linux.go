//go:build linux

package relay

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"time"
)

// Socket is the net.Conn under a crypto/tls server connection that the
// loops can take over. Until then it is the *net.TCPConn it wraps, and
// crypto/tls performs the handshake over it as usual. Once a loop owns the
// session, the Socket reads the loop's descriptor at most once per
// readiness event (a second read in the same event reports "would block",
// which crypto/tls treats as temporary and keeps its partial record for),
// and its writes go to the loop's writer, which sends what the socket takes
// and keeps the rest in the leg's one pending buffer. So an idle wss leg
// holds no goroutine and no buffer of the loop's: only what crypto/tls
// itself keeps (its record buffers).
//
// With a KeyLog (set as the tls.Config's KeyLogWriter) the Socket also
// follows the records crypto/tls reads and writes (see records.go), so
// that a TLS 1.3 connection can leave crypto/tls for the loop's own record
// layer, which keeps nothing while idle.
type Socket struct {
	*net.TCPConn

	leg     *evLeg // set when a loop owns the session
	didRead bool   // this readiness event's one read is done

	recTrack
}

// NewSocket wraps an accepted TCP connection for tls.Server. keys, if not
// nil, must be the KeyLogWriter of the config the connection is served
// with; without it the connection stays with crypto/tls for its life.
func NewSocket(c *net.TCPConn, keys *KeyLog) *Socket {
	return &Socket{TCPConn: c, recTrack: recTrack{keys: keys}}
}

// errWouldBlock says the loop's one read for this event is done, or the
// socket is empty: crypto/tls keeps what it has and returns the error.
var errWouldBlock = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "relay: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true } // crypto/tls keeps the conn usable

func (s *Socket) Read(p []byte) (int, error) {
	lg := s.leg
	if lg == nil {
		n, err := s.TCPConn.Read(p)
		s.tracked(p[:n], true)
		return n, err
	}
	if s.didRead || lg.fd < 0 {
		return 0, errWouldBlock
	}
	s.didRead = true
	n, err := readFD(lg.fd, p)
	switch {
	case err == syscall.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	lg.lastRead = lg.s.lp.now
	s.tracked(p[:n], true)
	return n, nil
}

// Write never fails once a loop owns the socket: crypto/tls makes any
// write error permanent, so the bytes the socket does not take are kept by
// the leg (and the source is not read until they drain, or write_timeout).
func (s *Socket) Write(p []byte) (int, error) {
	s.tracked(p, false)
	if s.leg == nil {
		return s.TCPConn.Write(p)
	}
	s.leg.rawWrite(p)
	return len(p), nil
}

// The rest is inert once a loop owns the socket: the loop closes it and
// needs no deadlines.
func (s *Socket) Close() error {
	if s.leg != nil {
		return nil
	}
	s.stopTracking()
	return s.TCPConn.Close()
}

func (s *Socket) SetDeadline(t time.Time) error {
	if s.leg != nil {
		return nil
	}
	return s.TCPConn.SetDeadline(t)
}

func (s *Socket) SetReadDeadline(t time.Time) error {
	if s.leg != nil {
		return nil
	}
	return s.TCPConn.SetReadDeadline(t)
}

func (s *Socket) SetWriteDeadline(t time.Time) error {
	if s.leg != nil {
		return nil
	}
	return s.TCPConn.SetWriteDeadline(t)
}

// tlsSocket returns the Socket under a TLS connection, if it has one.
func tlsSocket(c net.Conn) (*tls.Conn, *Socket) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	s, ok := tc.NetConn().(*Socket)
	if !ok {
		return nil, nil
	}
	return tc, s
}
