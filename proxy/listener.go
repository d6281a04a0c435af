package proxy

import (
	cryptotls "crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsproxy/wsproxy/internal/fdreserve"
	"github.com/wsproxy/wsproxy/proxy/relay"
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
	// writeIdle bounds each write of what fasthttp answers (write_timeout;
	// not positive: off).
	writeIdle time.Duration
}

func (l hijackableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.tlsConfig != nil {
		if conf := l.tlsConfig(); conf != nil {
			// The handshake runs at fasthttp's first read, within its
			// ReadTimeout (handshake_timeout). Over a relay.Socket, so
			// that the event loops can take the connection over after
			// the 101 like a plain one, and, with the key log set
			// on every config the listeners serve (tls.go), move a TLS
			// 1.3 connection to their own record layer.
			raw := c
			if tc, ok := c.(*net.TCPConn); ok {
				keys, _ := conf.KeyLogWriter.(*relay.KeyLog)
				raw = relay.NewSocket(tc, keys)
			}
			return &hijackableTLSConn{hijackableConn{Conn: cryptotls.Server(raw, conf), writeIdle: l.writeIdle}}, nil
		}
	}
	return &hijackableConn{Conn: c, writeIdle: l.writeIdle}, nil
}

type hijackableConn struct {
	net.Conn
	taken atomic.Bool

	// bodyIdle, while a handler streams a request body to a backend, is
	// the request_body_timeout each read renews: fasthttp's ReadTimeout
	// (handshake_timeout) would otherwise bound the whole upload.
	// bodyErr is the first read error meanwhile, so the handler can tell
	// a client's failure from a backend's. Both belong to the goroutine
	// serving the connection.
	bodyIdle time.Duration
	bodyErr  error

	// writeIdle, if positive, is how long one write may wait for a client
	// that does not read: fasthttp writes answers (a streamed backend
	// body, an error page) with no deadline of its own, and a whole-answer
	// WriteTimeout would cut a long stream that is still moving.
	writeIdle time.Duration
}

func (c *hijackableConn) Write(p []byte) (int, error) {
	if c.writeIdle > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.writeIdle))
	}
	return c.Conn.Write(p)
}

func (c *hijackableConn) Read(p []byte) (int, error) {
	if c.bodyIdle > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.bodyIdle))
	}
	n, err := c.Conn.Read(p)
	if err != nil && c.bodyIdle != 0 && c.bodyErr == nil {
		c.bodyErr = err
	}
	return n, err
}

// take hands the underlying connection to the caller; fasthttp's later
// Close of the wrapper no longer reaches it.
func (c *hijackableConn) take() net.Conn {
	c.taken.Store(true)
	if c.writeIdle > 0 {
		c.Conn.SetWriteDeadline(time.Time{}) // the new owner sets its own
	}
	return c.Conn
}

func (c *hijackableConn) Close() error {
	if c.taken.Load() {
		return nil
	}
	return c.Conn.Close()
}

// acceptErrBackoff bounds the pause between accepts that keep failing for
// want of a resource; short, so a closed listener is noticed quickly.
const (
	acceptErrBackoffMin = 5 * time.Millisecond
	acceptErrBackoffMax = 200 * time.Millisecond
	acceptEpisodeQuiet  = time.Second
)

// resilientListener keeps accepting through fd and memory exhaustion
// (EMFILE, ENFILE, ENOBUFS, ENOMEM), which fasthttp's Serve treats as fatal:
// the port would stay in LISTEN with clients piling up in its backlog and
// nothing ever accepting them again.
//
// While accept fails it refuses the clients waiting in the backlog rather
// than leaving them to hang: it closes a reserved fd (an open /dev/null),
// accepts one client into the freed slot, closes it, and reserves the fd
// again. When even that fails (another goroutine took the fd) it backs off.
// The episode is told to an acceptEpisode.
//
// Accept must not be called concurrently (fasthttp calls it from one
// goroutine); release closes the reserve after Serve has returned.
type resilientListener struct {
	net.Listener
	ep      *acceptEpisode
	reserve fdreserve.Reserve
}

func resilient(ln net.Listener, ep *acceptEpisode) *resilientListener {
	rl := &resilientListener{Listener: ln, ep: ep}
	rl.reserve.Take(1) // without one, exhaustion only backs off
	return rl
}

func (l *resilientListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		// A descriptor that came free goes to a lost reserve before any
		// client.
		l.reserve.Take(1)
		c, err := l.Listener.Accept()
		if err == nil {
			l.ep.succeeded()
			return c, nil
		}
		if _, ok := exhaustion(err); !ok {
			return nil, err
		}
		refused := l.refuseOne()
		l.ep.failed(err, refused)
		if refused {
			pause = 0
			continue
		}
		pause = min(max(2*pause, acceptErrBackoffMin), acceptErrBackoffMax)
		time.Sleep(pause)
	}
}

// refuseOne closes the reserved fd, accepts the first waiting client with
// it and closes that client at once. It reports whether it refused one.
func (l *resilientListener) refuseOne() bool {
	if !l.reserve.Release() {
		return false
	}
	c, err := l.Listener.Accept()
	if err == nil {
		c.Close() // before taking the fd back: it is the one c was given
	}
	l.reserve.Take(fdreserve.Tries)
	return err == nil
}

func (l *resilientListener) release() { l.reserve.Release() }

// acceptEpisode logs and counts a port's accept failures for want of a
// resource: a warning when an episode starts, and when accepts work again
// (after a second without failures) its count of errors and refused
// clients; each error in wsproxy_accept_errors_total, each refused client
// in wsproxy_accept_refused_total. Safe for concurrent use: the event
// loops accept on one socket together.
type acceptEpisode struct {
	port    string
	log     *slog.Logger
	errs    *prometheus.CounterVec // port, error
	refused prometheus.Counter

	failing        atomic.Bool // failures > 0, read without mu on every accept
	mu             sync.Mutex
	failures, shed int // in the current episode
	lastFailure    time.Time
}

func (s *Server) acceptEpisode(port int) *acceptEpisode {
	p := strconv.Itoa(port)
	return &acceptEpisode{port: p, log: s.log, errs: s.metrics.acceptErrors, refused: s.metrics.acceptRefused.WithLabelValues(p)}
}

func (a *acceptEpisode) failed(err error, refused bool) {
	name, _ := exhaustion(err)
	a.mu.Lock()
	if a.failures == 0 {
		a.log.Warn("accept failing: refusing new clients until resources are freed", "port", a.port, "err", err)
	}
	a.failures++
	a.lastFailure = time.Now()
	if refused {
		a.shed++
	}
	a.failing.Store(true)
	a.mu.Unlock()
	a.errs.WithLabelValues(a.port, name).Inc()
	if refused {
		a.refused.Inc()
	}
}

// succeeded ends the episode at an accept a quiet second after the last
// failure: at the limit, accepts fail and succeed by turns as fds come and
// go.
func (a *acceptEpisode) succeeded() {
	if !a.failing.Load() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failures > 0 && time.Since(a.lastFailure) >= acceptEpisodeQuiet {
		a.log.Info("accepting again", "port", a.port, "errors", a.failures, "refused_clients", a.shed)
		a.failures, a.shed = 0, 0
		a.failing.Store(false)
	}
}

// exhaustion reports whether an accept error means the process or system
// is out of a resource that frees up again, and the errno's name.
func exhaustion(err error) (string, bool) {
	for _, e := range []struct {
		errno syscall.Errno
		name  string
	}{{syscall.EMFILE, "EMFILE"}, {syscall.ENFILE, "ENFILE"}, {syscall.ENOBUFS, "ENOBUFS"}, {syscall.ENOMEM, "ENOMEM"}} {
		if errors.Is(err, e.errno) {
			return e.name, true
		}
	}
	return "", false
}
