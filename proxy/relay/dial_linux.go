//go:build linux

package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/keepalive"
)

// The backend handshake on a loop: connect a non-blocking socket, write
// the request, read until Upstream.Response has a verdict, and either
// start relaying on the same loop or try the next backend. Compared with
// a dial from a goroutine, the backend socket skips Go's poller (its
// registration, the parked goroutine and its wake-up, and the descriptor
// duplication that takes it out again) and the address lookups the net
// package makes for every connection.

// dialConfig stands in for a session's Config until Upstream.Switched
// gives the real one: no timers of its own, no callbacks.
var dialConfig Config

// maxResponse bounds what is kept of a backend's answer: a head of
// upgrade.ReadBufferSize and an error body of upgrade.MaxErrorBodySize.
const maxResponse = 4<<10 + 64<<10

// responsePool lends the buffers a backend's answer is gathered in while
// it arrives in pieces; most fit in the first read.
var responsePool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// dialState is a session's backend handshake in progress.
type dialState struct {
	fs        *frontState // reading the client's request (Listener), before up is known: &front
	front     frontState  // fs's storage: one allocation for both
	up        Upstream
	a         Attempt
	sent      int // bytes of a.Request written
	resp      *[]byte
	connected bool
	deadline  int64 // unix ns: the current step's bound
	timer     keepalive.Timer
	timerAt   int64 // what timer is set for; 0 if not armed

	// lookup is the current attempt's host name lookup, nil if none is
	// under way: an attempt that timed out during its lookup leaves that
	// goroutine behind, and its late answer must not be taken for a later
	// attempt's.
	lookup *lookup
}

// lookup is one host name lookup's answer, written by its goroutine
// before done is set and opResolved posted.
type lookup struct {
	ap   netip.AddrPort
	err  error
	done atomic.Bool
}

// Dial starts a session whose backend the loop connects and upgrades
// itself (see Upstream). client is the client's connection once its
// request has been read, plain TCP or TLS over a Socket, and pre any bytes
// read past the request. It reports false, taking nothing, if client is
// not a connection the loops can own; otherwise the loop owns it and
// exactly one of up.Switched or up.Failed will be called.
func (ls *Loops) Dial(client net.Conn, pre []byte, up Upstream) bool {
	s := &Session{cfg: &dialConfig}
	e, ok := ls.adopt(s, client, pre)
	if !ok {
		return false
	}
	if e == nil {
		// The client's descriptor could not be duplicated (out of fds).
		// Nothing can be written to it any more; the caller's admission
		// is released through Failed.
		up.Failed(&UpstreamError{Reason: "taking over the client connection failed"})
		return true
	}
	e.dial = &dialState{up: up}
	e.dial.timer.Init(dialAlarm{e})
	e.lp.post(task{s: e, op: opDial})
	return true
}

// dialNext starts the next attempt Upstream offers, or gives up.
func (e *evSession) dialNext(prev error) {
	d := e.dial
	for {
		a, ok := d.up.Next(prev)
		if !ok {
			e.dialFailed(prev)
			return
		}
		d.a, d.sent, d.connected, d.lookup = a, 0, false, nil
		if d.resp != nil {
			*d.resp = (*d.resp)[:0]
		}
		ap, err := netip.ParseAddrPort(a.Addr)
		if err != nil {
			e.resolve(a)
			return
		}
		if err := e.connect(ap); err != nil {
			prev = err
			continue
		}
		return
	}
}

// resolve looks a backend's host name up off the loop; the answer comes
// back as an opResolved task.
func (e *evSession) resolve(a Attempt) {
	d := e.dial
	d.deadline = e.lp.now + int64(dialTimeout(a))
	e.dialNeedTimer(d.deadline)
	r := &lookup{}
	d.lookup = r
	resolve := e.lp.owner.lookup
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout(a))
		defer cancel()
		host, port, err := net.SplitHostPort(a.Addr)
		if err == nil {
			var p uint16
			if p, err = parsePort(port); err == nil {
				var ips []netip.Addr
				if ips, err = resolve(ctx, host); err == nil && len(ips) == 0 {
					err = errors.New("no address")
				}
				if err == nil {
					r.ap = netip.AddrPortFrom(ips[0].Unmap(), p)
				}
			}
		}
		r.err = err
		r.done.Store(true)
		e.lp.post(task{s: e, op: opResolved})
	}()
}

func parsePort(s string) (uint16, error) {
	ap, err := netip.ParseAddrPort("0.0.0.0:" + s)
	return ap.Port(), err
}

// resolved runs on the loop with a lookup's answer.
func (e *evSession) resolved() {
	d := e.dial
	if d == nil || e.done || d.lookup == nil || !d.lookup.done.Load() {
		return // an abandoned lookup's answer, or a duplicate
	}
	ap, err := d.lookup.ap, d.lookup.err
	d.lookup = nil
	if err == nil {
		err = e.connect(ap)
	} else {
		err = &UpstreamError{Addr: d.a.Addr, Dial: true, Reason: "resolving the host", Err: err}
	}
	if err != nil {
		e.dialNext(err)
	}
}

func dialTimeout(a Attempt) time.Duration {
	if a.DialTimeout > 0 {
		return a.DialTimeout
	}
	return 5 * time.Second
}

func handshakeTimeout(a Attempt) time.Duration {
	if a.Timeout > 0 {
		return a.Timeout
	}
	return 10 * time.Second
}

// connect opens a non-blocking socket to ap and waits for it to connect.
func (e *evSession) connect(ap netip.AddrPort) error {
	d := e.dial
	fail := func(why string, err error) error {
		return &UpstreamError{Addr: d.a.Addr, Dial: true, Reason: why, Err: err}
	}
	domain := unix.AF_INET
	if !ap.Addr().Unmap().Is4() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("opening a socket", err)
	}
	// As Go does for every TCP connection: frames go out when written.
	setTCP(fd, unix.TCP_NODELAY, 1)
	// Delayed ACKs until the request is out: the ACK that completes the
	// TCP handshake then leaves with the request instead of alone, and the
	// backend's kernel hands its server a connection with the request
	// already in it (one segment and one wake-up fewer per handshake).
	setTCP(fd, unix.TCP_QUICKACK, 0)
	err = connectRaw(fd, ap)
	if err != nil && err != unix.EINPROGRESS {
		closeFD(fd)
		return fail("connecting", err)
	}
	e.b.fd = fd
	e.lp.register(&e.b)
	d.deadline = e.lp.now + int64(dialTimeout(d.a))
	e.dialNeedTimer(d.deadline)
	if err == nil {
		return e.connected()
	}
	// When the answer comes within the call (a backend on this host: the
	// kernel runs the whole TCP handshake inside connect), the connection
	// is up although connect said EINPROGRESS, and the request can go at
	// once: no wait for writability, no epoll_ctl to arm and then disarm
	// it, no wake-up. A socket still connecting refuses the write with
	// EAGAIN (0 here), and one whose connection failed returns why.
	n, err := writeFD(fd, d.a.Request)
	switch {
	case err != nil:
		e.dropBackend()
		return fail("connecting", err)
	case n == 0:
		e.lp.setInterest(&e.b, unix.EPOLLOUT)
		return nil
	}
	d.sent = n
	return e.connected()
}

// connected starts the exchange on a connected socket.
func (e *evSession) connected() error {
	d := e.dial
	d.connected = true
	d.deadline = e.lp.now + int64(handshakeTimeout(d.a))
	e.dialNeedTimer(d.deadline)
	return e.sendRequest()
}

// sendRequest writes what the socket takes of the request, then waits for
// the answer.
func (e *evSession) sendRequest() error {
	d := e.dial
	if d.sent < len(d.a.Request) {
		n, err := writeFD(e.b.fd, d.a.Request[d.sent:])
		if err != nil {
			e.dropBackend()
			return &UpstreamError{Addr: d.a.Addr, Reason: "writing the request", Err: err}
		}
		d.sent += n
	}
	if d.sent < len(d.a.Request) {
		e.lp.setInterest(&e.b, unix.EPOLLOUT)
		return nil
	}
	// Back to the kernel's usual ACKs: a backend that leaves Nagle on
	// would otherwise wait up to the delayed-ACK time for the ACK of its
	// 101 before sending what follows it.
	setTCP(e.b.fd, unix.TCP_QUICKACK, 1)
	e.lp.setInterest(&e.b, unix.EPOLLIN|unix.EPOLLRDHUP)
	return nil
}

// dialEvent handles an event of the backend socket during the handshake.
func (e *evSession) dialEvent(ev uint32) {
	d := e.dial
	var err error
	switch {
	case !d.connected:
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		// Writable with no error or hang-up is connected; only a failure
		// needs SO_ERROR to say why.
		var gerr error
		if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			soErr, err := unix.GetsockoptInt(e.b.fd, unix.SOL_SOCKET, unix.SO_ERROR)
			switch {
			case err != nil:
				gerr = err
			case soErr != 0:
				gerr = unix.Errno(soErr)
			default:
				gerr = unix.ECONNRESET
			}
		}
		if gerr != nil {
			e.dropBackend()
			err = &UpstreamError{Addr: d.a.Addr, Dial: true, Reason: "connecting", Err: gerr}
			break
		}
		err = e.connected()
	case d.sent < len(d.a.Request):
		err = e.sendRequest()
	default:
		err = e.readResponse()
	}
	if err != nil {
		e.dialNext(err)
	}
}

// readResponse reads once and asks Upstream for a verdict.
func (e *evSession) readResponse() error {
	d := e.dial
	lp := e.lp
	n, rerr := readFD(e.b.fd, lp.buf)
	if rerr == unix.EAGAIN {
		return nil
	}
	if d.resp == nil {
		d.resp = responsePool.Get().(*[]byte)
	}
	eof := rerr != nil || n == 0
	if n > 0 {
		room := maxResponse - len(*d.resp)
		if n >= room {
			n, eof = room, true // all that will be judged
		}
		*d.resp = append(*d.resp, lp.buf[:n]...)
	}
	head, err := d.up.Response(*d.resp, eof)
	switch {
	case err != nil:
		e.dropBackend()
		return err
	case head > 0:
		e.switched(head)
		return nil
	case eof:
		e.dropBackend()
		reason := "connection closed before a complete response"
		if rerr != nil {
			reason = "reading the response"
		}
		return &UpstreamError{Addr: d.a.Addr, Reason: reason, Err: rerr}
	}
	return nil
}

// dialClientEvent handles the client's socket while the backend is being
// dialed (the loop read the client's request itself, so the socket is in
// its set): frames sent before the 101 are kept to be relayed first, up
// to a bound, and a client that has gone ends the attempt.
func (e *evSession) dialClientEvent() {
	c := &e.c
	n, err := readFD(c.fd, e.lp.buf)
	if err == unix.EAGAIN {
		return
	}
	if err != nil || n == 0 {
		e.dropBackend()
		e.dialFailed(ErrClientGone)
		return
	}
	c.preBytes = append(c.preBytes, e.lp.buf[:n]...)
	if len(c.preBytes) >= maxEarly {
		e.lp.setInterest(c, 0) // the rest waits in the socket for the relay
	}
}

// maxEarly bounds what a client may send before its 101 that the proxy
// keeps; more waits unread.
const maxEarly = 64 << 10

// dropBackend closes the current attempt's socket.
func (e *evSession) dropBackend() {
	if e.b.fd >= 0 {
		e.lp.unregister(&e.b)
		e.b.interest = 0
	}
}

// dialAlarm fires a handshake's deadline into its loop. The handshake
// has a timer of its own on the loops' wheel: the session's may have to
// run on the wheel of the Config it gets when the handshake succeeds.
type dialAlarm struct{ e *evSession }

func (a dialAlarm) Fire(t time.Time) { a.e.Fire(t) }

// dialNeedTimer makes sure the handshake's timer fires by at (unix ns).
func (e *evSession) dialNeedTimer(at int64) {
	d := e.dial
	if d.timerAt != 0 && d.timerAt <= at {
		return
	}
	d.timerAt = at
	e.lp.wheel.Schedule(&d.timer, time.Duration(at-e.lp.now))
}

// dialTimer runs from onTimer during the handshake.
func (e *evSession) dialTimer(now int64) {
	d := e.dial
	d.timerAt = 0
	if now < d.deadline {
		e.dialNeedTimer(d.deadline)
		return
	}
	if d.fs != nil {
		e.frontTimer()
		return
	}
	reason := "no complete response in time"
	if !d.connected {
		reason = "no connection in time"
	}
	e.dropBackend()
	e.dialNext(&UpstreamError{Addr: d.a.Addr, Dial: !d.connected, Timeout: true, Reason: reason})
}

// switched starts relaying after a good 101: the session gets its real
// Config and begins on this loop.
func (e *evSession) switched(head int) {
	d := e.dial
	s := e.pub
	cfg := d.up.Switched(s)
	s.cfg, e.cfg = cfg, cfg
	e.setBackend(e.b.fd, (*d.resp)[head:])
	e.releaseDial()
	if cfg.OnStart != nil {
		cfg.OnStart(s)
	}
	e.begin()
}

// dialFailed gives the client Upstream's answer and ends the session.
func (e *evSession) dialFailed(last error) {
	resp := e.dial.up.Failed(last)
	e.releaseDial()
	e.done = true
	c := &e.c
	if c.fd >= 0 && len(resp) > 0 {
		// A fresh socket's send buffer takes a short answer whole; what
		// it would not take is not waited for.
		c.write(resp)
		c.releaseOut()
	}
	e.dropBackend()
	e.lp.unregister(c)
	c.setCarry(nil)
}

// abortDial ends a session still in its handshake when its loop stops.
func (e *evSession) abortDial() {
	if e.dial.fs != nil {
		e.frontEnd(nil)
		return
	}
	e.dialFailed(ErrStopping)
}

func (e *evSession) releaseDial() {
	e.frontRelease()
	d := e.dial
	e.dial = nil
	if d.timerAt != 0 {
		e.lp.wheel.Stop(&d.timer)
	}
	if d.resp != nil {
		*d.resp = (*d.resp)[:0]
		if cap(*d.resp) <= 64<<10 {
			responsePool.Put(d.resp)
		}
		d.resp = nil
	}
}
