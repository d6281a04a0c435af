//go:build linux

package relay

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/internal/fdreserve"
)

// Listener is a listening socket whose connections the loops accept
// themselves. Every loop watches it (EPOLLEXCLUSIVE: a new connection
// wakes one of them), accepts, reads the first request head into its own
// buffer and asks Front what to do: a WebSocket goes on to its backend
// handshake on the same loop and is relayed there, so from accept to the
// last frame it never meets a goroutine, Go's poller or a second
// descriptor; anything else (plain HTTP, TLS ports, heads the loop will
// not judge) is handed to Go through Accept, with the bytes already read.
//
// Listener is a net.Listener for the Go side: give it to an HTTP server.
type Listener struct {
	ls    *Loops
	fd    int
	addr  net.Addr
	front Front
	conns chan net.Conn // handed to Go

	regs      []*evSession // one per loop, standing for the socket there
	closed    atomic.Bool
	closeOnce sync.Once
	done      chan struct{}

	mu      sync.Mutex        // held around every accept, and reserve
	reserve fdreserve.Reserve // given up to refuse a client when out of fds
}

// handOffQueue bounds the connections handed to Go and not yet accepted
// there; beyond it they are closed (Go's side is not keeping up).
const handOffQueue = 4096

// Listen takes ln over: its socket moves to the loops and ln is closed.
// It fails, leaving ln as it was, if ln is not a TCP listener.
func (ls *Loops) Listen(ln net.Listener, front Front) (*Listener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, errors.New("relay: not a TCP listener")
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if derr != nil {
		return nil, derr
	}
	// Accepted sockets inherit TCP_NODELAY from the listening one, which
	// saves every connection the setsockopt Go's accept would make: the
	// relay writes whole frames, and Nagle would hold a small one back
	// behind an unacknowledged one (a 101 followed by the first frame).
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Delayed ACKs from the start (accepted sockets inherit it, as
	// HAProxy sets on its HTTP listeners): the client speaks first and
	// the proxy answers, so the ACK of the request rides on the answer
	// instead of going out alone when the loop reads it, one packet less
	// per connection. The kernel leaves this mode by itself once a
	// delayed ACK finds nothing to ride on. Best effort: a Multipath TCP
	// listener refuses it.
	setTCP(fd, unix.TCP_QUICKACK, 0)
	l := &Listener{ls: ls, fd: fd, addr: ln.Addr(), front: front, conns: make(chan net.Conn, handOffQueue), done: make(chan struct{})}
	l.reserve.Take(1)
	ln.Close()
	for _, lp := range ls.loops {
		e := &evSession{lp: lp, cfg: &dialConfig, listener: l}
		e.c = evLeg{s: e, fd: fd, side: SideNone}
		l.regs = append(l.regs, e)
		lp.post(task{s: e, op: opListen})
	}
	return l, nil
}

// Accept returns the next connection handed to Go.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops accepting: every loop lets go of the socket before it is
// closed. Connections already accepted are not affected; those handed to
// Go and not yet accepted are closed.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		var wg sync.WaitGroup
		for _, e := range l.regs {
			wg.Add(1)
			e.unlistened = &wg
			if !e.lp.post(task{s: e, op: opUnlisten}) {
				wg.Done() // the loop has stopped
			}
		}
		wg.Wait()
		unix.Close(l.fd)
		l.mu.Lock()
		l.reserve.Release()
		l.mu.Unlock()
		close(l.done)
		// Connections handed over and not accepted would otherwise stay
		// open with nobody to serve them. No loop hands over any more:
		// each checks closed first, and one that was handing over when
		// Close began finished before it took the unlisten above.
		for {
			select {
			case c := <-l.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// listen (on the loop) watches the socket; unlisten stops.
func (e *evSession) listen() {
	if e.listener.closed.Load() {
		return
	}
	e.lp.register(&e.c)
	e.lp.setInterest(&e.c, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
}

func (e *evSession) unlisten() {
	lg := &e.c
	if lg.interest != 0 {
		unix.EpollCtl(e.lp.epfd, unix.EPOLL_CTL_DEL, lg.fd, nil)
		lg.interest = 0
	}
	if lg.fd < len(e.lp.legs) && e.lp.legs[lg.fd] == lg {
		e.lp.legs[lg.fd] = nil
	}
	if wg := e.unlistened; wg != nil {
		e.unlistened = nil
		wg.Done()
	}
}

// accept runs on the loop when the listening socket is readable, and
// takes one connection. Readiness is level-triggered, so a backlog brings
// this loop (or another) straight back; taking a batch would end every
// wake-up with an accept that finds nothing, half a system call per
// handshake under load, and a flood of new connections could hold the
// loop's other sockets up for the length of the batch.
func (e *evSession) accept() {
	l := e.listener
	for tries := 0; tries < 4; tries++ {
		// One loop accepts at a time: the refusal in acceptExhausted frees
		// one descriptor for one accept, and another loop's accept must not
		// take it in between.
		l.mu.Lock()
		if !l.reserve.Held() && !l.closed.Load() {
			// A descriptor that came free goes to the reserve before any
			// client: without it, the next exhaustion leaves clients in
			// the backlog.
			l.reserve.Take(1)
		}
		fd, remote, err := acceptRaw(l.fd)
		l.mu.Unlock()
		switch err {
		case nil:
		case unix.EINTR, unix.ECONNABORTED:
			continue // one that gave up in the backlog: the next may be there
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			e.acceptExhausted(err)
			return
		default: // EAGAIN: another loop took it
			return
		}
		l.front.Accepted()
		if !l.front.Plain() {
			l.handOff(fd, nil)
			return
		}
		e.lp.front(l, fd, remote)
		return
	}
}

// acceptExhausted refuses one waiting client with the reserved descriptor
// (closes it at once rather than leave it in the backlog), or, if that
// fails too, stops watching the socket on this loop for a moment: it stays
// readable, and level-triggered readiness would spin.
func (e *evSession) acceptExhausted(err error) {
	l := e.listener
	refused := false
	l.mu.Lock()
	if l.reserve.Release() {
		if fd, _, aerr := acceptRaw(l.fd); aerr == nil {
			closeFD(fd)
			refused = true
		}
		l.reserve.Take(fdreserve.Tries)
	}
	l.mu.Unlock()
	l.front.AcceptFailed(err, refused)
	if refused {
		return
	}
	e.lp.setInterest(&e.c, 0)
	time.AfterFunc(20*time.Millisecond, func() { e.lp.post(task{s: e, op: opListen}) })
}

// handOff gives an accepted socket to Go, with what was read from it.
func (l *Listener) handOff(fd int, read []byte) {
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f) // a duplicate, in Go's poller
	f.Close()
	if err != nil {
		return
	}
	if len(read) > 0 {
		c = &prefixConn{Conn: c, pre: append([]byte(nil), read...)}
	}
	if l.closed.Load() {
		c.Close()
		return
	}
	select {
	case l.conns <- c:
	default:
		c.Close() // Go's side is not keeping up: shed
	}
}

// frontState is a connection whose request head a loop is reading.
type frontState struct {
	l      *Listener
	remote netip.AddrPort
	head   *[]byte // what arrived so far, when the head took more than one read
	max    int
}

// front starts reading a new connection's request on this loop.
func (lp *loop) front(l *Listener, fd int, remote netip.AddrPort) {
	s := &Session{cfg: &dialConfig}
	e := &evSession{pub: s, cfg: &dialConfig, lp: lp}
	e.c = evLeg{s: e, fd: fd, side: SideClient, stats: &s.ClientToBackend}
	e.b = evLeg{s: e, fd: -1, side: SideBackend, masked: true, stats: &s.BackendToClient}
	e.c.peer, e.b.peer = &e.b, &e.c
	e.timer.Init(e)
	s.ev = e
	max, timeout := l.front.Limits()
	e.dial = &dialState{front: frontState{l: l, remote: remote, max: max}}
	e.dial.fs = &e.dial.front
	e.dial.timer.Init(dialAlarm{e})
	lp.register(&e.c)
	lp.setInterest(&e.c, unix.EPOLLIN|unix.EPOLLRDHUP)
	e.dial.deadline = lp.now + int64(timeout)
	e.dialNeedTimer(e.dial.deadline)
	// The request usually follows the connection's last handshake packet
	// at once and is often here already: read it now rather than after
	// another wait for readiness. If it is not, the read finds nothing
	// and the loop waits as before.
	e.frontEvent()
}

// frontEvent reads the client's request head once and judges it when it
// is whole.
func (e *evSession) frontEvent() {
	d, lp := e.dial, e.lp
	fs := d.fs
	n, err := readFD(e.c.fd, lp.buf)
	if err == unix.EAGAIN {
		return
	}
	if err != nil || n == 0 {
		e.frontEnd(nil) // gone before asking anything
		return
	}
	b := lp.buf[:n]
	from := 0
	if fs.head != nil {
		// The head takes more than one read: look for its end only in
		// what is new (and the three bytes before), so a client that
		// sends a byte at a time costs linear time.
		from = max(len(*fs.head)-3, 0)
		*fs.head = append(*fs.head, b...)
		b = *fs.head
	}
	end := headEnd(b, max(from, blankLines(b)))
	if end < 0 && fs.head == nil {
		fs.head = responsePool.Get().(*[]byte)
		*fs.head = append(*fs.head, b...)
		b = *fs.head
	}
	switch {
	case end > fs.max || end < 0 && len(b) >= fs.max:
		e.frontHandOff(b) // Go's server answers 431
		return
	case end < 0:
		return
	}
	if !bytes.HasSuffix(b[:end], []byte("\r\n\r\n")) {
		b, end = crlfEnd(b, end)
	}
	head, rest := b[:end], b[end:]
	up, answer := fs.l.front.Request(head, rest, fs.remote)
	switch {
	case up != nil:
		e.c.pre(rest)
		e.frontRelease()
		d.up = up
		e.dialNext(nil)
	case answer != nil:
		e.frontEnd(answer)
	default:
		e.frontHandOff(b)
	}
}

// frontTimer: the head did not come within the handshake timeout.
func (e *evSession) frontTimer() {
	e.frontEnd([]byte("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n\r\nRequest timeout\n"))
}

// frontEnd answers (if there is an answer) and closes.
func (e *evSession) frontEnd(answer []byte) {
	if len(answer) > 0 {
		writeFD(e.c.fd, answer) // a fresh socket takes a short answer whole
	}
	e.releaseDial()
	e.done = true
	e.lp.unregister(&e.c)
}

// frontHandOff gives the connection and what was read to Go.
func (e *evSession) frontHandOff(read []byte) {
	l := e.dial.fs.l
	fd := e.c.fd
	e.lp.setInterest(&e.c, 0)
	if fd < len(e.lp.legs) && e.lp.legs[fd] == &e.c {
		e.lp.legs[fd] = nil
	}
	e.c.fd = -1
	l.handOff(fd, read) // copies read before the buffer goes back
	e.releaseDial()
	e.done = true
}

// frontRelease ends the request-head phase: its buffer goes back.
func (e *evSession) frontRelease() {
	fs := e.dial.fs
	e.dial.fs = nil
	if fs != nil && fs.head != nil {
		*fs.head = (*fs.head)[:0]
		responsePool.Put(fs.head)
		fs.head = nil
	}
}

// blankLines returns the length of the empty lines b starts with: RFC 9112
// §2.2 asks a server to ignore them before the request line, and a head
// must not be taken to end at them.
func blankLines(b []byte) int {
	i := 0
	for {
		switch {
		case bytes.HasPrefix(b[i:], []byte("\r\n")):
			i += 2
		case i < len(b) && b[i] == '\n':
			i++
		default:
			return i
		}
	}
}

// crlfEnd returns b, whose head (b[:end]) ends with a bare LF somewhere in
// its last line end and blank line, with those two made CRLF CRLF: RFC
// 9112 §2.2 lets a recipient take a bare LF for a line end, as Go's server
// and nginx do, but fasthttp's parser takes a head to end only at CRLF
// CRLF, and would wait for more until the handshake timeout. Rare, so a
// fresh buffer. It returns the new bytes and the head's new length.
func crlfEnd(b []byte, end int) ([]byte, int) {
	h := b[:end]
	for range 2 { // the blank line, then the last line's end
		h = bytes.TrimSuffix(h, []byte("\n"))
		h = bytes.TrimSuffix(h, []byte("\r"))
	}
	out := make([]byte, 0, len(h)+4+len(b)-end)
	out = append(append(out, h...), "\r\n\r\n"...)
	return append(out, b[end:]...), len(h) + 4
}

// headEnd returns the length of the request head in b, found from from
// on, or -1: the head ends with a blank line (a bare LF is accepted as a
// line end; crlfEnd makes such an end one fasthttp reads).
func headEnd(b []byte, from int) int {
	b2 := b[from:]
	i := bytes.Index(b2, []byte("\n\r\n"))
	j := bytes.Index(b2, []byte("\n\n"))
	switch {
	case i >= 0 && (j < 0 || i < j):
		return from + i + 3
	case j >= 0:
		return from + j + 2
	}
	return -1
}
