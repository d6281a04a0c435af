package relay

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

// goSession drives a session whose connections the loops cannot take over
// (a TLS client leg): one goroutine per direction reads with blocking
// calls, and every write carries a deadline of WriteTimeout, so that a peer
// that stops reading ends the session instead of holding it.
type goSession struct {
	pub     *Session
	cfg     *Config
	client  gleg
	backend gleg
	c2b     gdir
	b2c     gdir

	ended      atomic.Int32
	closing    atomic.Bool
	liveArmed  atomic.Bool // a flush of the live figures is pending (limit_conn.go)
	closeTimer *time.Timer
	timerMu    sync.Mutex

	// Timers (see conn_liveness.go).
	timer      keepalive.Timer
	timerArmed bool
	idleSince  int64
	idleSeen   uint64
	endOfLife  int64
}

// gleg is one connection and the writer state of the frames going to it.
// Writes are serialised by mu: the direction that forwards into the leg and
// the proxy's own frames never interleave mid-frame. A write holds mu for
// at most WriteTimeout.
type gleg struct {
	conn   net.Conn
	side   Side
	masked bool // frames the proxy writes here must be masked (backend leg)

	mu        sync.Mutex
	midFrame  bool        // forwarded bytes stopped inside a frame
	closeSent bool        // a close frame has gone out: nothing more may follow
	dead      atomic.Bool // a write failed, or the peer missed a pong deadline
	pending   []byte      // a close frame waiting for the next boundary

	// Liveness: bytes read from the peer.
	seen atomic.Uint64
	live liveness
	// The proxy's last ping here: its token (for the reader that meets
	// the pong) and when it went out (0: not yet).
	pingToken  atomic.Uint64
	pingSentAt atomic.Int64
	// forwarding is set while this leg's reader forwards what it read
	// (writing to a slow peer, or paused by a rate limit): it reads
	// nothing meanwhile, so an answer to a ping may be waiting unread.
	forwarding atomic.Bool
}

// gdir forwards the frames read from src to dst.
type gdir struct {
	s        *goSession
	src, dst *gleg
	from     Side
	t        Tracker
	lim      *dirLimit // message-rate limits; nil if none (limit_conn.go)
	stats    *DirStats

	buf     *[]byte
	carryN  int
	scratch [maxControlPayload]byte

	// discard is set once nothing more from src may be forwarded (a
	// violation, or dst is gone); src is still read so that closing it
	// later does not reset a peer that has unread data of ours.
	discard bool
	closeIn atomic.Bool // src sent a close frame
}

func (s *goSession) start(client net.Conn, clientPre []byte, backend net.Conn, backendPre []byte) {
	cfg := s.cfg
	s.client = gleg{conn: client, side: SideClient}
	s.backend = gleg{conn: backend, side: SideBackend, masked: true}
	s.c2b = gdir{s: s, src: &s.client, dst: &s.backend, from: SideClient, stats: &s.pub.ClientToBackend}
	s.c2b.t.Rules = cfg.Client
	s.b2c = gdir{s: s, src: &s.backend, dst: &s.client, from: SideBackend, stats: &s.pub.BackendToClient}
	s.b2c.t.Rules = cfg.Backend
	s.initLive()
	if cfg.Tune != nil {
		cfg.Tune(s.pub) // no timer to spare here: at once
	}
	if cfg.OnStart != nil {
		cfg.OnStart(s.pub)
	}
	if first := s.pub.First; first != nil {
		s.pub.First = nil
		if err := s.writeConn(&s.client, first); err != nil {
			s.client.conn.Close() // both directions end at once
		}
	}
	s.startTimers()
	go s.b2c.run(backendPre)
	go s.c2b.run(clientPre)
}

// writeConn writes p within WriteTimeout; a peer that takes nothing for
// that long is a slow consumer.
func (s *goSession) writeConn(l *gleg, p []byte) error {
	if d := s.cfg.WriteTimeout; d > 0 {
		l.conn.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := l.conn.Write(p)
	if err != nil {
		l.dead.Store(true)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			s.slowConsumer(l)
		}
	}
	return err
}

// slowConsumer drops a leg whose peer stopped reading and tells the other
// side, as if the stalled side had gone away.
func (s *goSession) slowConsumer(l *gleg) {
	s.pub.noteStalled(l.side)
	l.conn.Close()
	other := &s.client
	if l == &s.client {
		other = &s.backend
	}
	code, reason := goneCode(l.side)
	go func() {
		if other.sendClose(s, code, reason) {
			s.pub.noteClose(code, SideProxy)
		}
		s.startClosing()
	}()
}

// write sends forwarded bytes; boundary says whether they end on a frame
// boundary. Bytes for a leg that was already sent a close are dropped.
func (l *gleg) write(s *goSession, p []byte, boundary, isClose bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeSent || l.dead.Load() {
		return nil
	}
	if err := s.writeConn(l, p); err != nil {
		return err
	}
	l.midFrame = !boundary
	if isClose {
		l.closeSent = true
	}
	if boundary && l.pending != nil {
		l.flushPending(s)
	}
	return nil
}

func (l *gleg) flushPending(s *goSession) {
	p := l.pending
	l.pending = nil
	s.writeConn(l, p)
	l.closeSent = true
}

// sendClose writes a close frame of the proxy's own now, or at the next frame
// boundary if forwarded bytes stopped mid-frame. It reports whether the leg
// will get it (false if it already had a close or is dead).
func (l *gleg) sendClose(s *goSession, code uint16, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeSent || l.dead.Load() || l.pending != nil {
		return false
	}
	var mask [4]byte
	if l.masked {
		v := rand.Uint32()
		mask = [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	}
	l.pending = AppendClose(nil, code, reason, mask, l.masked)
	if !l.midFrame {
		l.flushPending(s)
	}
	return true
}

// close is Session.Close on this driver; it may wait for a write in
// progress (at most WriteTimeout, without end when that is off), so
// Session.Close runs it on its own goroutine. The close timer is armed
// first: it ends the session on time even if the close frames wait
// behind a write to a peer that reads nothing.
func (s *goSession) close(toClient, toBackend uint16, reason string) {
	s.pub.noteClose(toClient, SideProxy)
	s.startClosing()
	s.client.sendClose(s, toClient, reason)
	s.backend.sendClose(s, toBackend, reason)
}

// startClosing arms the timer that ends the session if the peers do not.
func (s *goSession) startClosing() {
	if s.closing.Swap(true) {
		return
	}
	d := s.cfg.CloseTimeout
	if d <= 0 {
		d = DefaultCloseTimeout
	}
	s.timerMu.Lock()
	s.closeTimer = time.AfterFunc(d, s.abort)
	s.timerMu.Unlock()
}

// abort closes both connections, which ends both directions' reads.
func (s *goSession) abort() {
	s.client.conn.Close()
	s.backend.conn.Close()
}

func (s *goSession) directionDone() {
	if s.ended.Add(1) < 2 {
		return
	}
	s.timerMu.Lock()
	if s.closeTimer != nil {
		s.closeTimer.Stop()
	}
	s.timerMu.Unlock()
	if s.timerArmed {
		s.cfg.Wheel.Stop(&s.timer)
	}
	s.abort()
	s.endLive()
	if s.cfg.OnDone != nil {
		s.cfg.OnDone(s.pub)
	}
}

func (d *gdir) run(pre []byte) {
	d.buf = d.s.cfg.Pool.get()
	if len(pre) > 0 {
		d.forward(pre)
	}
	for {
		n, err := d.src.conn.Read((*d.buf)[d.carryN:])
		if n > 0 {
			d.src.seen.Add(uint64(n))
			d.src.forwarding.Store(true)
			d.forward((*d.buf)[:d.carryN+n])
			d.afterForward()
			d.src.forwarding.Store(false)
		}
		if err != nil {
			break
		}
	}
	d.s.cfg.Pool.put(d.buf)
	d.buf = nil
	d.end()
	d.stats.Frames, d.stats.Messages = d.t.Frames, d.t.Messages
	d.s.directionDone()
}

// end tells dst that src is gone, if nobody has yet, then half-closes dst.
func (d *gdir) end() {
	if !d.closeIn.Load() && d.t.AtBoundary() {
		code, reason := goneCode(d.from)
		if d.dst.sendClose(d.s, code, reason) {
			d.s.pub.noteClose(code, SideProxy)
		}
	}
	d.dst.halfClose()
	d.s.startClosing()
}

// halfClose sends FIN, so the peer reads EOF after everything written so far.
func (l *gleg) halfClose() {
	if cw, ok := l.conn.(interface{ CloseWrite() error }); ok {
		l.mu.Lock()
		cw.CloseWrite()
		l.mu.Unlock()
	}
}

// forward passes b (a carried partial frame included at its start) through
// the tracker and writes what may go to dst. What cannot go yet (an
// incomplete header or control frame) moves to the start of the buffer.
func (d *gdir) forward(b []byte) {
	d.carryN = 0
	d.beginLimit()
	for len(b) > 0 {
		if d.discard {
			return
		}
		fwd, ev := d.t.Advance(b)
		switch ev {
		case EvNone:
			d.send(b[:fwd], false)
			d.carryN = copy(*d.buf, b[fwd:])
			return
		case EvControl:
			d.control(b[:fwd])
		case EvViolation:
			d.send(b[:fwd], false)
			d.violation()
			return
		case EvLimit:
			d.send(b[:fwd], false)
			if !d.overLimit() {
				return
			}
		}
		b = b[fwd:]
	}
}

// control forwards a run of bytes ending with a whole control frame.
func (d *gdir) control(run []byte) {
	h := &d.t.Control
	frame := run[len(run)-h.Len-int(h.Length):]
	if h.Opcode == OpPong && isOwnPong(frame, h, d.src.pingToken.Load()) {
		d.send(run[:len(run)-len(frame)], false) // the pong answers the proxy: drop it
		return
	}
	if h.Opcode != OpClose {
		d.send(run, false)
		return
	}
	code, v := checkClose(frame, h, d.scratch[:0])
	if v.Code != 0 {
		d.send(run[:len(run)-len(frame)], false)
		d.t.Violation = v
		d.violation()
		return
	}
	d.closeIn.Store(true)
	d.s.pub.noteClose(code, d.from)
	d.send(run, true)
	d.s.startClosing()
	// Close frames have gone both ways: as the server toward the client the
	// proxy closes first (RFC 6455 §7.1.1); the backend closes toward us.
	if d.s.c2b.closeIn.Load() && d.s.b2c.closeIn.Load() {
		d.s.client.halfClose()
	}
}

func (d *gdir) send(p []byte, isClose bool) {
	if len(p) == 0 || d.discard {
		return
	}
	d.stats.Bytes += uint64(len(p))
	if err := d.dst.write(d.s, p, d.t.AtBoundary(), isClose); err != nil {
		d.discard = true
	}
}

// violation stops forwarding: see evLeg.violation for the codes.
func (d *gdir) violation() {
	v := d.t.Violation
	d.discard = true
	if d.from == SideBackend {
		code, reason := badGateway(v)
		d.s.pub.noteClose(code, SideProxy)
		d.s.pub.noteReason(reason)
		d.dst.sendClose(d.s, code, reason)
		d.src.dead.Store(true)
		if tc, ok := d.src.conn.(interface{ SetLinger(int) error }); ok {
			tc.SetLinger(0) // reset, not a FIN after a stream we refused
		}
		d.src.conn.Close()
		d.s.startClosing()
		return
	}
	d.s.pub.noteClose(v.Code, SideProxy)
	d.dst.sendClose(d.s, v.Code, v.Reason)
	d.src.sendClose(d.s, v.Code, v.Reason)
	d.s.startClosing()
}
