//go:build linux

package relay

import (
	"crypto/tls"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/keepalive"
)

// evSession is a session driven by a loop. Everything in it belongs to the
// loop's thread, except what post touches.
type evSession struct {
	pub *Session
	cfg *Config
	lp  *loop
	c   evLeg // the client's socket
	b   evLeg // the backend's socket

	timer    keepalive.Timer
	timerAt  int64       // the deadline the timer is set for; 0 if none
	timerRun atomic.Bool // a timer task is queued on the loop

	begun     bool
	early     *task  // a Close that came before begin
	fds       [2]int // the descriptors as started, for Sockets (read-only)
	closing   bool
	closeBy   int64 // when closing gives up on the peers
	idleSince int64
	endOfLife int64
	tuneAt    int64 // when Config.Tune is due; 0 once done or if none
	done      bool
	liveDue   int64 // when the live figures are flushed; 0 if not armed

	dial *dialState // the request head or backend handshake, while the loop performs it

	// A Listener's socket on this loop (front_linux.go), instead of a
	// session.
	listener   *Listener
	unlistened *sync.WaitGroup
}

// evLeg is one socket of a session: the source of one direction and the
// destination of the other.
type evLeg struct {
	s        *evSession
	peer     *evLeg
	fd       int
	gen      int32
	side     Side
	masked   bool   // frames the proxy writes here are masked (backend)
	interest uint32 // what the epoll set watches

	// As a source.
	t        Tracker
	lim      *dirLimit // message-rate limits; nil if none (limit_linux.go)
	stats    *DirStats
	carry    *[MaxCarry]byte // an incomplete header or control frame
	carryN   int
	eof      bool // read returned EOF or an error: this direction ended
	discard  bool // nothing more from here may be forwarded
	closeIn  bool // a close frame came from here
	lastRead int64

	// As a destination.
	out       *[]byte // bytes the socket did not take, borrowed from the pool
	outOff    int
	outSince  int64
	closeSent bool // a close frame went out: nothing may follow it
	dead      bool // the socket failed or was dropped
	shutWant  bool // send FIN once out is empty
	finNext   bool // the socket is closed right after this write
	shut      bool // FIN sent
	wantPing  bool
	wantClose bool
	closeCode uint16
	closeWhy  string

	ping       Ping
	pingSentAt int64  // when the proxy's ping went out; 0 when none is unanswered
	pingToken  uint64 // the last one's (conn_liveness.go)
	preBytes   []byte // read before the relay started, forwarded first

	// A TLS leg: crypto/tls reads and writes through sock (see Socket),
	// until a TLS 1.3 leg moves to the loop's record layer (rec).
	tc   *tls.Conn
	sock *Socket
	rec  *recLeg
}

// startOnLoop hands the session to a loop if both connections can leave
// Go's poller: plain TCP, or a TLS server connection over a Socket.
func (s *Session) startOnLoop(client net.Conn, clientPre []byte, backend net.Conn, backendPre []byte) bool {
	if !canDetach(backend) {
		return false
	}
	e, ok := s.cfg.Loops.adopt(s, client, clientPre)
	if !ok {
		return false
	}
	if e == nil {
		backend.Close()
		return true // the session is lost either way: nothing to relay
	}
	bfd, ok := detach(backend)
	if !ok {
		unix.Close(e.c.fd)
		client.Close()
		backend.Close()
		return true
	}
	e.setBackend(bfd, backendPre)
	// Registered before any byte moves, so a reload or shutdown that looks
	// right after Start finds it; a Close from OnStart waits for begin.
	if s.cfg.OnStart != nil {
		s.cfg.OnStart(s)
	}
	e.lp.post(task{s: e, op: opStart})
	return true
}

// adopt takes the client's socket out of Go's poller into a new evSession
// on one of the loops. It reports false, taking nothing, if client is not
// a connection the loops can own, and a nil session if duplicating its
// descriptor failed (client is then closed).
func (ls *Loops) adopt(s *Session, client net.Conn, clientPre []byte) (*evSession, bool) {
	ctc, csock := tlsSocket(client)
	craw := client
	if csock != nil {
		craw = csock.TCPConn
	}
	if !canDetach(craw) {
		return nil, false
	}
	cfd, ok := detach(craw)
	if !ok {
		client.Close()
		return nil, true
	}
	e := &evSession{pub: s, cfg: s.cfg, lp: ls.pick()}
	e.c = evLeg{s: e, fd: cfd, side: SideClient, stats: &s.ClientToBackend, tc: ctc, sock: csock}
	e.b = evLeg{s: e, fd: -1, side: SideBackend, masked: true, stats: &s.BackendToClient}
	e.c.peer, e.b.peer = &e.b, &e.c
	if csock != nil {
		csock.leg = &e.c
	}
	// Pre-read bytes (frames sent before the 101 arrived) are few and
	// rare: a copy of their own until the loop forwards them.
	e.c.pre(clientPre)
	e.timer.Init(e)
	s.ev = e
	return e, true
}

// setBackend completes a session with its backend socket and the rules of
// its Config.
func (e *evSession) setBackend(bfd int, backendPre []byte) {
	e.b.fd = bfd
	e.c.ping, e.b.ping = e.cfg.ClientPing, e.cfg.BackendPing
	e.c.t.Rules, e.b.t.Rules = e.cfg.Client, e.cfg.Backend
	e.fds = [2]int{e.c.fd, bfd}
	e.b.pre(backendPre)
	e.initLive()
}

// pre keeps bytes read before the relay started, to be forwarded first.
func (lg *evLeg) pre(p []byte) {
	if len(p) == 0 {
		return
	}
	b := make([]byte, len(p))
	copy(b, p)
	lg.preBytes = b
}

// wheel is the session's timer wheel: the Config's, else the loops' own.
func (e *evSession) wheel() *keepalive.Wheel {
	if e.cfg.Wheel != nil {
		return e.cfg.Wheel
	}
	return e.lp.wheel
}

func (e *evSession) post(op uint8, toClient, toBackend uint16, reason string) {
	e.lp.post(task{s: e, op: op, toClient: toClient, toBackend: toBackend, reason: reason})
}

// begin runs on the loop: the session's sockets join the epoll set.
func (e *evSession) begin() {
	if e.done {
		return // aborted before it began
	}
	lp := e.lp
	now := lp.now
	if now == 0 {
		now = time.Now().UnixNano()
	}
	e.begun = true
	lp.register(&e.c)
	lp.register(&e.b)
	e.c.lastRead, e.b.lastRead, e.idleSince = now, now, now
	if first := e.pub.First; first != nil {
		e.pub.First = nil
		e.c.write(first)
	}
	if e.cfg.MaxLifetime > 0 {
		e.endOfLife = now + int64(keepalive.Jitter(e.cfg.MaxLifetime, 0.1))
	}
	if e.cfg.Tune != nil {
		if e.cfg.TuneAfter <= 0 {
			e.cfg.Tune(e.pub)
		} else {
			e.tuneAt = now + int64(e.cfg.TuneAfter)
		}
	}
	for _, lg := range [2]*evLeg{&e.c, &e.b} {
		if p := lg.preBytes; p != nil {
			lg.preBytes = nil
			lg.forward(p)
		}
	}
	if e.c.tc != nil {
		// Records crypto/tls read during the handshake and has not
		// decrypted yet would raise no event: take them now.
		e.c.readTLS(false)
	}
	e.needTimer(e.liveness(now))
	if t := e.early; t != nil {
		e.early = nil
		e.proxyClose(t.toClient, t.toBackend, t.reason)
	}
	e.sync()
}

// event handles what epoll reported for one of the session's sockets.
func (e *evSession) event(lg *evLeg, ev uint32) {
	switch {
	case e.listener != nil:
		e.accept()
		return
	case e.dial == nil:
	case e.dial.fs != nil:
		e.frontEvent()
		return
	case lg == &e.b:
		e.dialEvent(ev)
		return
	default:
		e.dialClientEvent()
		return
	}
	if ev&unix.EPOLLOUT != 0 && lg.out != nil {
		lg.flush()
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 && lg.readable() {
		lg.read(ev&unix.EPOLLRDHUP != 0)
	}
	e.sync()
}

// readable reports whether the leg is to be read now: it has not ended and
// its peer is not holding bytes back.
func (lg *evLeg) readable() bool {
	return !lg.eof && lg.fd >= 0 && (lg.peer.out == nil || lg.peer.dead) && !lg.paused()
}

// read reads the socket once into the loop's buffer (after any carried
// partial frame) and forwards what it can.
//
// fin says the peer's FIN had arrived when the event was reported: a read
// that then leaves the socket empty has read the last bytes, and the EOF
// is taken at once instead of from one more wake-up and read (a backend
// typically sends its close frame and its FIN together).
func (lg *evLeg) read(fin bool) {
	if lg.rec != nil {
		lg.readRec()
		return
	}
	if lg.tc != nil {
		lg.readTLS(true)
		return
	}
	lp := lg.s.lp
	start := MaxCarry - lg.carryN
	if lg.carryN > 0 {
		copy(lp.buf[start:], lg.carry[:lg.carryN])
	}
	n, err := readFD(lg.fd, lp.buf[MaxCarry:])
	switch {
	case err == syscall.EAGAIN:
		return // a stale or spurious event
	case err != nil || n == 0:
		lg.ended()
		return
	}
	lg.lastRead = lp.now
	lg.forward(lp.buf[start : MaxCarry+n])
	lg.afterForward()
	// Only while the leg is still being read: one the proxy stopped reading
	// (its peer is full, a limit paused it) meets its EOF when it resumes,
	// in order, as it would without this.
	if fin && n < len(lp.buf)-MaxCarry && lg.readable() {
		lg.ended()
	}
}

// forward passes b (carry included at its start) through the tracker and
// sends what may go to the peer.
func (lg *evLeg) forward(b []byte) {
	lg.setCarry(nil)
	if lg.lim != nil {
		lg.lim.begin(&lg.t, lg.s.lp.now)
	}
	for len(b) > 0 {
		if lg.discard {
			return
		}
		fwd, ev := lg.t.Advance(b)
		switch ev {
		case EvNone:
			lg.send(b[:fwd], false)
			lg.setCarry(b[fwd:])
			return
		case EvControl:
			lg.control(b[:fwd])
		case EvViolation:
			lg.send(b[:fwd], false)
			lg.violation()
			return
		case EvLimit:
			lg.send(b[:fwd], false)
			lg.overLimit(b[fwd:])
			return
		}
		b = b[fwd:]
	}
}

func (lg *evLeg) setCarry(rest []byte) {
	if len(rest) == 0 {
		if lg.carry != nil {
			carryPool.Put(lg.carry)
			lg.carry, lg.carryN = nil, 0
		}
		return
	}
	if lg.carry == nil {
		lg.carry = carryPool.Get().(*[MaxCarry]byte)
	}
	lg.carryN = copy(lg.carry[:], rest)
}

// control forwards a run of bytes ending with a whole control frame.
func (lg *evLeg) control(run []byte) {
	h := &lg.t.Control
	frame := run[len(run)-h.Len-int(h.Length):]
	e := lg.s
	if h.Opcode == OpPong && isOwnPong(frame, h, lg.pingToken) {
		lg.send(run[:len(run)-len(frame)], false) // it answers the proxy: drop it
		if sent := lg.pingSentAt; sent != 0 {
			lg.pingSentAt = 0
			e.pub.notePingRTT(lg.side, time.Duration(e.lp.now-sent))
			if e.cfg.OnPingRTT != nil {
				e.cfg.OnPingRTT(lg.side, time.Duration(e.lp.now-sent))
			}
		}
		return
	}
	if h.Opcode != OpClose {
		lg.send(run, false)
		return
	}
	code, v := checkClose(frame, h, e.lp.scratch[:0])
	if v.Code != 0 {
		lg.send(run[:len(run)-len(frame)], false)
		lg.t.Violation = v
		lg.violation()
		return
	}
	lg.closeIn = true
	e.pub.noteClose(code, lg.side)
	// The backend's answer to the client's close completes the handshake,
	// and the client's socket is closed right after it (below): the frame
	// is held back for the FIN to go in the same segment.
	e.c.finNext = lg == &e.b && e.c.closeIn
	lg.send(run, true)
	e.c.finNext = false
	e.startClosing()
	// Close frames have gone both ways: as the server toward the client the
	// proxy closes first (RFC 6455 §7.1.1); the backend closes toward us.
	if e.c.closeIn && e.b.closeIn {
		e.c.shutWant = true
		e.c.maybeShut()
	}
}

// send forwards p to the peer; isClose marks a forwarded close frame.
func (lg *evLeg) send(p []byte, isClose bool) {
	dst := lg.peer
	if len(p) == 0 || lg.discard || dst.closeSent || dst.dead || dst.fd < 0 {
		return // bytes nobody will get are not counted as relayed
	}
	lg.stats.Bytes += uint64(len(p))
	dst.write(p)
	if isClose {
		dst.closeSent = true
	}
	if lg.t.AtBoundary() && (dst.wantClose || dst.wantPing) {
		dst.emitOwn()
	}
}

// write sends p to the peer of this leg, through TLS on a TLS leg.
func (lg *evLeg) write(p []byte) {
	if lg.closeSent || lg.dead || lg.fd < 0 {
		return
	}
	if lg.rec != nil {
		lg.writeRec(p)
		return
	}
	if lg.tc != nil {
		// Socket.Write never fails (see there); an error here is
		// crypto/tls refusing, which leaves the leg unusable.
		if _, err := lg.tc.Write(p); err != nil {
			lg.fail()
		}
		return
	}
	lg.rawWrite(p)
}

// rawWrite sends bytes on the socket now, and keeps what it does not take.
func (lg *evLeg) rawWrite(p []byte) {
	if lg.dead || lg.fd < 0 {
		return
	}
	if lg.out != nil {
		lg.queue(p)
		return
	}
	var n int
	var err error
	if lg.finNext {
		n, err = sendMore(lg.fd, p)
	} else {
		n, err = writeFD(lg.fd, p)
	}
	if err != nil {
		lg.fail()
		return
	}

	if n < len(p) {
		lg.queue(p[n:])
	}
}

// queue keeps bytes for the socket in its one borrowed buffer. The source
// is not read while they wait, so this is at most one read's worth plus
// the proxy's own control frames.
func (lg *evLeg) queue(p []byte) {
	if lg.out == nil {
		lg.out = lg.s.lp.pool.get()
		*lg.out = (*lg.out)[:0]
		lg.outOff = 0
		lg.outSince = lg.s.lp.now
		if wt := lg.s.cfg.WriteTimeout; wt > 0 {
			lg.s.needTimer(lg.outSince + int64(wt))
		}
	}
	*lg.out = append(*lg.out, p...)
}

// flush writes what the socket did not take before.
func (lg *evLeg) flush() {
	if lg.dead || lg.fd < 0 {
		lg.releaseOut()
		return
	}
	n, err := writeFD(lg.fd, (*lg.out)[lg.outOff:])
	if err != nil {
		lg.fail()
		return
	}
	lg.outOff += n
	if lg.outOff == len(*lg.out) {
		lg.releaseOut()
		lg.maybeShut()
	}
}

func (lg *evLeg) releaseOut() {
	if lg.out != nil {
		*lg.out = (*lg.out)[:cap(*lg.out)]
		lg.s.lp.pool.put(lg.out)
		lg.out, lg.outOff, lg.outSince = nil, 0, 0
	}
}

// fail marks a socket whose write failed: nothing more goes to it, and its
// read side will report the error too.
func (lg *evLeg) fail() {
	lg.dead = true
	lg.releaseOut()
	lg.peer.discard = true
}

// maybeShut half-closes the socket once everything for it has gone out.
func (lg *evLeg) maybeShut() {
	if lg.shutWant && !lg.shut && lg.out == nil && !lg.dead && lg.fd >= 0 {
		if lg.rec != nil && !lg.rec.closed {
			lg.closeNotify()
			if lg.out != nil {
				return // the FIN follows it when it has gone out
			}
		}
		lg.shut = true
		if lg.side == SideClient && lg.closeIn && lg.peer.closeIn {
			lg.closeDone()
			return
		}
		unix.Shutdown(lg.fd, unix.SHUT_WR)
	}
}

// closeDone closes the client's socket once the close handshake is
// complete and all it was owed has gone out. The proxy closes first, as a
// server should (RFC 6455 §7.1.1), and nothing may follow a close frame,
// so the client's FIN need not be waited for: a full close saves the
// shutdown, the wake-up and the read that would find it, and leaves the
// socket to the kernel. Should a client still send, it gets a reset.
func (lg *evLeg) closeDone() {
	lg.eof = true
	lg.setCarry(nil)
	lg.stats.Frames, lg.stats.Messages = lg.t.Frames, lg.t.Messages
	lg.s.lp.unregister(lg)
	lg.interest = 0
}

// sendOwnClose sends the proxy's close frame to the leg now, or at the next
// frame boundary of what is forwarded to it. It reports whether the leg
// will get it.
func (lg *evLeg) sendOwnClose(code uint16, reason string) bool {
	if lg.closeSent || lg.dead || lg.wantClose || lg.fd < 0 {
		return false
	}
	lg.wantClose, lg.closeCode, lg.closeWhy = true, code, reason
	if lg.peer.t.AtBoundary() {
		lg.emitOwn()
	}
	return true
}

// emitOwn writes the proxy's own frames that wait for a frame boundary.
func (lg *evLeg) emitOwn() {
	lp := lg.s.lp
	var mask [4]byte
	if lg.masked {
		mask = newMask()
	}
	switch {
	case lg.wantClose:
		lg.wantClose, lg.wantPing = false, false
		lg.write(AppendClose(lp.scratch[:0], lg.closeCode, lg.closeWhy, mask, lg.masked))
		lg.closeSent = true
	case lg.wantPing:
		lg.wantPing = false
		lg.pingToken, lg.pingSentAt = newPingToken(), lp.now
		p := pingPayload(lg.pingToken)
		lg.write(AppendFrame(lp.scratch[:0], OpPing, p[:], mask, lg.masked))
	}
}

// violation stops forwarding from lg. A client that breaks the protocol
// gets the violation's code, and so does its backend. A backend that does
// is an invalid upstream: the client gets 1014 and the backend is reset.
func (lg *evLeg) violation() {
	v := lg.t.Violation
	lg.discard = true
	if lg.side == SideBackend {
		code, reason := badGateway(v)
		lg.s.pub.noteClose(code, SideProxy)
		lg.s.pub.noteReason(reason)
		lg.peer.sendOwnClose(code, reason)
		lg.drop()
		return
	}
	lg.s.pub.noteClose(v.Code, SideProxy)
	lg.peer.sendOwnClose(v.Code, v.Reason)
	lg.sendOwnClose(v.Code, v.Reason)
	lg.s.startClosing()
}

// ended is the end of the direction read from lg: its peer is told (1001
// toward the backend, 1011 toward the client) unless a close frame already
// passed, and gets a FIN after what it is owed.
func (lg *evLeg) ended() {
	lg.eof = true
	lg.setCarry(nil)
	lg.stats.Frames, lg.stats.Messages = lg.t.Frames, lg.t.Messages
	dst := lg.peer
	if !lg.closeIn && lg.t.AtBoundary() {
		code, reason := goneCode(lg.side)
		if dst.sendOwnClose(code, reason) {
			lg.s.pub.noteClose(code, SideProxy)
		}
	}
	if !dst.eof {
		// Both ended: the close that follows sends the FIN anyway.
		dst.shutWant = true
		dst.maybeShut()
	}
	lg.s.startClosing()
}

// drop closes the leg's socket at once, discarding what it was owed; the
// peer of a socket that will not read gets a reset, not our queue.
func (lg *evLeg) drop() {
	if lg.fd >= 0 {
		unix.SetsockoptLinger(lg.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		lg.s.lp.unregister(lg)
	}
	lg.interest = 0
	lg.dead = true
	lg.releaseOut()
	if !lg.eof {
		lg.ended()
	}
}

// sync brings the epoll set in line with what each leg waits for, and
// ends the session once both directions have.
func (e *evSession) sync() {
	if e.done {
		return
	}
	if e.c.eof && e.b.eof {
		e.finish()
		return
	}
	for _, lg := range [2]*evLeg{&e.c, &e.b} {
		var want uint32
		if lg.readable() {
			want |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if lg.out != nil && !lg.dead {
			want |= unix.EPOLLOUT
		}
		e.lp.setInterest(lg, want)
	}
}

// proxyClose is Session.Close on the loop.
func (e *evSession) proxyClose(toClient, toBackend uint16, reason string) {
	if e.done {
		return
	}
	if !e.begun {
		if e.early == nil {
			e.early = &task{toClient: toClient, toBackend: toBackend, reason: reason}
		}
		return
	}
	e.pub.noteClose(toClient, SideProxy)
	e.c.sendOwnClose(toClient, reason)
	e.b.sendOwnClose(toBackend, reason)
	e.startClosing()
	e.sync()
}

func (e *evSession) closeFor(reason string) {
	e.pub.noteReason(reason)
	e.proxyClose(CloseGoingAway, CloseGoingAway, reason)
}

// startClosing gives the peers CloseTimeout to finish the close handshake.
func (e *evSession) startClosing() {
	if e.closing {
		return
	}
	e.closing = true
	d := e.cfg.CloseTimeout
	if d <= 0 {
		d = DefaultCloseTimeout
	}
	e.closeBy = e.lp.now + int64(d)
	e.needTimer(e.closeBy)
}

// finish closes both sockets and reports the session done.
func (e *evSession) finish() {
	if e.done {
		return
	}
	if e.dial != nil {
		e.abortDial()
		return
	}
	e.done = true
	for _, lg := range [2]*evLeg{&e.c, &e.b} {
		e.lp.unregister(lg)
		lg.releaseOut()
		lg.setCarry(nil)
		lg.endRec()
		lg.stats.Frames, lg.stats.Messages = lg.t.Frames, lg.t.Messages
	}
	if e.timerAt != 0 {
		e.wheel().Stop(&e.timer)
		e.timerAt = 0
	}
	e.endLive()
	if e.cfg.OnDone != nil {
		e.cfg.OnDone(e.pub)
	}
}

// needTimer makes sure the session's timer fires by at (unix ns).
func (e *evSession) needTimer(at int64) {
	if e.done || at <= 0 || at == math.MaxInt64 {
		return
	}
	if e.timerAt != 0 && e.timerAt <= at {
		return
	}
	e.timerAt = at
	e.wheel().Schedule(&e.timer, time.Duration(at-e.lp.now))
}

// Fire runs on the wheel's goroutine: it hands the work to the loop.
func (e *evSession) Fire(time.Time) {
	if e.timerRun.CompareAndSwap(false, true) {
		e.lp.post(task{s: e, op: opTimer})
	}
}

// onTimer runs on the loop: closing and write deadlines, pings, idle
// timeout and lifetime; then the timer is set for the next deadline.
func (e *evSession) onTimer() {
	e.timerRun.Store(false)
	if e.done {
		return
	}
	now := time.Now().UnixNano()
	e.lp.now = now
	e.timerAt = 0
	if e.dial != nil {
		e.dialTimer(now)
		return
	}
	if e.closing && now >= e.closeBy {
		e.finish()
		return
	}
	next := e.tick(now) // live figures, paused directions (limit_linux.go)
	if e.closing {
		next = min(next, e.closeBy)
	}
	if wt := int64(e.cfg.WriteTimeout); wt > 0 {
		for _, lg := range [2]*evLeg{&e.c, &e.b} {
			if lg.out == nil {
				continue
			}
			if now-lg.outSince >= wt {
				e.slowConsumer(lg)
				e.sync()
				return
			}
			next = min(next, lg.outSince+wt)
		}
	}
	if !e.closing {
		next = min(next, e.liveness(now))
	}
	e.sync()
	if !e.done && next != math.MaxInt64 {
		e.needTimer(next)
	}
}

// liveness pings quiet peers, drops those that miss their deadline, and
// enforces the idle timeout and lifetime. It returns the next deadline.
func (e *evSession) liveness(now int64) int64 {
	next := int64(math.MaxInt64)
	for _, lg := range [2]*evLeg{&e.c, &e.b} {
		iv := int64(lg.ping.Interval)
		if iv <= 0 || lg.eof {
			continue
		}
		timeout := int64(lg.ping.timeout())
		if lg.peer.out != nil && !lg.peer.dead || lg.paused() {
			// The proxy is not reading this peer (its other side is
			// slow, or a rate limit holds it back): an answer may be
			// waiting unread. The stalled side has write_timeout.
			lg.pingSentAt = 0
			next = min(next, now+iv)
			continue
		}
		if sent := lg.pingSentAt; sent != 0 {
			if lg.lastRead < sent {
				if now >= sent+timeout {
					e.pub.noteReason(lg.side.String() + " ping timeout")
					lg.drop()
					return now
				}
				next = min(next, sent+timeout)
				continue
			}
			lg.pingSentAt = 0 // the peer spoke: alive
		}
		if now-lg.lastRead >= iv {
			// The deadline runs from when the ping goes out (emitOwn):
			// while the leg is inside a frame (a large message still
			// being relayed) it waits for the frame's end.
			if !lg.closeSent && !lg.dead && !lg.wantClose {
				lg.wantPing = true
				if lg.peer.t.AtBoundary() {
					lg.emitOwn()
				}
			}
			next = min(next, now+timeout)
			continue
		}
		next = min(next, lg.lastRead+iv)
	}
	if d := int64(e.cfg.IdleTimeout); d > 0 {
		e.idleSince = max(e.idleSince, e.c.lastRead, e.b.lastRead)
		if now-e.idleSince >= d {
			e.closeFor("idle timeout")
			return e.closeBy
		}
		next = min(next, e.idleSince+d)
	}
	if e.tuneAt > 0 {
		if now >= e.tuneAt {
			e.tuneAt = 0
			e.cfg.Tune(e.pub)
		} else {
			next = min(next, e.tuneAt)
		}
	}
	if e.endOfLife > 0 {
		if now >= e.endOfLife {
			e.closeFor("connection lifetime reached")
			return e.closeBy
		}
		next = min(next, e.endOfLife)
	}
	return next
}

// slowConsumer drops a socket that took nothing for WriteTimeout; the
// other side is told as if the stalled one had gone away.
func (e *evSession) slowConsumer(lg *evLeg) {
	e.pub.noteStalled(lg.side)
	lg.drop()
}

func (e *evSession) sockets() (client, backend syscall.Conn) {
	return fdSocket(e.fds[0]), fdSocket(e.fds[1])
}

// fdSocket lets a descriptor the loop owns be inspected through
// syscall.Conn.
type fdSocket int

func (f fdSocket) SyscallConn() (syscall.RawConn, error) { return f, nil }

func (f fdSocket) Control(fn func(uintptr)) error {
	fn(uintptr(f))
	return nil
}

func (f fdSocket) Read(func(uintptr) bool) error  { return errors.New("relay: inspection only") }
func (f fdSocket) Write(func(uintptr) bool) error { return errors.New("relay: inspection only") }

// readTLS reads a TLS leg: at most one read of the socket (none if
// syscall is false), then every record crypto/tls can complete from what
// it holds, decrypted into the loop's buffer and forwarded. Nothing stays
// decrypted inside crypto/tls afterwards, so a level-triggered event is
// all the leg needs to be read again.
func (lg *evLeg) readTLS(syscall bool) {
	lp := lg.s.lp
	lg.sock.didRead = !syscall
	buf := lp.buf[MaxCarry:]
	for {
		start := MaxCarry - lg.carryN
		if lg.carryN > 0 {
			copy(lp.buf[start:], lg.carry[:lg.carryN])
		}
		n := 0
		var err error
		// Whole records into the buffer while a whole one still fits.
		for n < len(buf)-maxTLSPlaintext || n == 0 {
			var m int
			m, err = lg.tc.Read(buf[n:])
			n += m
			if err != nil {
				break
			}
		}
		if n > 0 {
			lg.forward(lp.buf[start : MaxCarry+n])
			lg.afterForward()
			if lg.paused() {
				// Over its message rate: what crypto/tls still holds is
				// taken when the direction resumes (limit_linux.go).
				return
			}
		}
		switch {
		case err == nil:
			continue // the buffer filled: more may be waiting inside
		case err == errWouldBlock:
			// crypto/tls holds nothing it could decrypt: the moment a
			// TLS 1.3 leg can leave it.
			lg.maybeTakeRecords()
			return
		default: // io.EOF (close_notify or FIN) or a TLS error
			if !lg.eof {
				lg.ended()
			}
			return
		}
	}
}

// maxTLSPlaintext is the most one TLS record decrypts to.
const maxTLSPlaintext = 16 << 10
