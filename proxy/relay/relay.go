package relay

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

// DefaultBufferSize is the read buffer a direction borrows while it has data.
const DefaultBufferSize = 16 << 10

// DefaultParkAfter is Config.ParkAfter's default.
const DefaultParkAfter = 250 * time.Millisecond

// DefaultCloseTimeout bounds how long a session waits for the close handshake
// or the peers' FINs once it has started to end.
const DefaultCloseTimeout = 5 * time.Second

// Pool lends read buffers. A direction holds one only between a read that
// returned data and the next read that finds the socket empty, so an idle
// connection holds none. It is safe for concurrent use.
type Pool struct {
	size int
	p    sync.Pool
}

// NewPool returns a pool of buffers of size bytes (DefaultBufferSize if size
// is not positive). Every buffer also has room for a carried partial frame.
func NewPool(size int) *Pool {
	if size <= 0 {
		size = DefaultBufferSize
	}
	pl := &Pool{size: size + MaxCarry}
	pl.p.New = func() any { b := make([]byte, pl.size); return &b }
	return pl
}

func (p *Pool) get() *[]byte  { return p.p.Get().(*[]byte) }
func (p *Pool) put(b *[]byte) { p.p.Put(b) }

var carryPool = sync.Pool{New: func() any { return new([MaxCarry]byte) }}

// Config is what a session needs besides its two connections. It is shared
// by many sessions and must not change after the first one starts.
type Config struct {
	// Pool lends read buffers; required.
	Pool *Pool
	// Client and Backend are the rules for frames read from each side.
	// Client.Masked should be true and Backend.Masked false.
	Client, Backend Rules
	// CloseTimeout bounds the closing handshake; DefaultCloseTimeout if 0.
	CloseTimeout time.Duration
	// Poller, if set, parks idle directions without a goroutine (Linux,
	// plain TCP connections); otherwise each direction keeps one.
	Poller *Poller
	// ParkAfter is how long a direction with a Poller must be quiet before
	// it gives up its goroutine; DefaultParkAfter if 0. Busier directions
	// keep waiting in the runtime, which costs less per message.
	ParkAfter time.Duration
	// Wheel runs the session timers below; without one they are off.
	Wheel *keepalive.Wheel
	// ClientPing and BackendPing schedule the proxy's pings on each leg.
	ClientPing, BackendPing Ping
	// IdleTimeout closes both sides (1001) after no data either way for
	// this long; 0 is off.
	IdleTimeout time.Duration
	// MaxLifetime closes both sides (1001) after this long, less up to 10%
	// jitter so that connections opened together do not all reconnect
	// together; 0 is off.
	MaxLifetime time.Duration
	// OnPingRTT, if set, is told the round-trip time of each proxy ping
	// that was answered, and on which side. It runs on a relay goroutine
	// and must not block.
	OnPingRTT func(side Side, rtt time.Duration)
	// OnStart, if set, is called with the new session before any byte is
	// relayed, so the caller can register it (for Close on reload or
	// shutdown).
	OnStart func(*Session)
	// OnDone, if set, is called once when both directions have ended and
	// both connections are closed. It runs on a relay goroutine.
	OnDone func(*Session)
}

// Side names one end of a session.
type Side uint8

const (
	SideNone Side = iota
	SideClient
	SideBackend
	SideProxy
)

func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideBackend:
		return "backend"
	case SideProxy:
		return "proxy"
	}
	return "none"
}

// DirStats are the figures of one direction.
type DirStats struct {
	Bytes, Frames, Messages uint64
}

// Session is one relayed WebSocket connection.
type Session struct {
	// Tag is the caller's own value for this session (set before Run).
	Tag any

	cfg     *Config
	client  leg
	backend leg
	c2b     direction
	b2c     direction

	ended      atomic.Int32
	closing    atomic.Bool
	closeTimer *time.Timer
	timerMu    sync.Mutex

	// Figures, stable once OnDone runs.
	ClientToBackend, BackendToClient DirStats
	// CloseCode is the first close code seen or sent, and ClosedBy the side
	// it came from (SideProxy when the proxy chose it). Reason says why the
	// proxy closed, when it did on its own (a ping or idle timeout, ...).
	CloseCode uint16
	ClosedBy  Side
	Reason    string
	closeMu   sync.Mutex

	// Timers (see liveness.go).
	timer      keepalive.Timer
	timerArmed bool
	idleSince  int64
	idleSeen   uint64
	endOfLife  int64
}

// leg is one connection and the writer state of the frames going to it.
// Writes are serialised by mu: the direction that forwards into the leg and
// the proxy's own frames (close, later pings) never interleave mid-frame.
type leg struct {
	conn   net.Conn
	raw    syscall.RawConn
	masked bool // frames the proxy writes here must be masked (backend leg)

	mu        sync.Mutex
	midFrame  bool        // forwarded bytes stopped inside a frame
	closeSent bool        // a close frame has gone out: nothing more may follow
	dead      atomic.Bool // a write failed, or the peer missed a pong deadline
	pending   []byte      // a close frame waiting for the next boundary

	// Liveness: bytes read from the peer, and the proxy's ping in flight.
	seen       atomic.Uint64
	seenAtPing atomic.Uint64
	pingSentAt atomic.Int64 // unix ns; 0 when no ping is unanswered
	rttFrom    atomic.Int64 // unix ns of the last ping, until its pong (for OnPingRTT)
	pingWanted atomic.Bool  // a ping waits for the forwarder's next boundary
	live       liveness
	pingBuf    [pingFrameMax]byte
	writeFn    func(uintptr) bool
	wOut       []byte
	wN         int
}

func (l *leg) init(c net.Conn, masked bool) {
	l.conn, l.masked = c, masked
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			l.raw = raw
		}
	}
}

// write sends forwarded bytes; boundary says whether they end on a frame
// boundary. Bytes for a leg that was already sent a close are dropped.
func (l *leg) write(p []byte, boundary, isClose bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeSent || l.dead.Load() {
		return nil
	}
	if _, err := l.conn.Write(p); err != nil {
		l.dead.Store(true)
		return err
	}
	l.midFrame = !boundary
	if isClose {
		l.closeSent = true
	}
	if boundary {
		if l.pending != nil {
			l.flushPending()
		} else {
			l.pingAtBoundary()
		}
	}
	return nil
}

func (l *leg) flushPending() {
	p := l.pending
	l.pending = nil
	if _, err := l.conn.Write(p); err != nil {
		l.dead.Store(true)
	}
	l.closeSent = true
}

// sendClose writes a close frame of the proxy's own now, or at the next frame
// boundary if forwarded bytes stopped mid-frame. It reports whether the leg
// will get it (false if it already had a close or is dead).
func (l *leg) sendClose(code uint16, reason string) bool {
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
		l.flushPending()
	}
	return true
}

// direction forwards the frames read from src to dst.
type direction struct {
	s        *Session
	src, dst *leg
	from     Side
	t        Tracker
	stats    *DirStats

	buf    *[]byte
	carry  *[MaxCarry]byte
	carryN int
	rn     int
	rerr   error
	readFn func(uintptr) bool
	// With a Poller: the direction's state, and its registration.
	state      atomic.Int32
	refreshAt  time.Time // when the read deadline that parks us needs pushing back
	serviceFn  func()    // wake's goroutine body, built once
	armFn      func(uintptr)
	armed      bool
	fd         int32
	registered bool

	// discard is set once nothing more from src may be forwarded (a
	// violation, or dst is gone); src is still read so that closing it
	// later does not reset a peer that has unread data of ours.
	discard bool
	closeIn atomic.Bool // src sent a close frame
}

// Run relays between client and backend until both directions end, then
// closes both connections. clientPre and backendPre are bytes already read
// from each side after its handshake (they are frames and are forwarded
// first). Run uses the calling goroutine for the client-to-backend direction
// and one new goroutine for the other; it returns when the client-to-backend
// direction ends, which may be before the session is done (see
// Config.OnDone).
func Run(client net.Conn, clientPre []byte, backend net.Conn, backendPre []byte, cfg *Config) *Session {
	s := NewSession(cfg)
	s.Run(client, clientPre, backend, backendPre)
	return s
}

// NewSession returns a session to be started with Run; the caller may set
// Tag first.
func NewSession(cfg *Config) *Session { return &Session{cfg: cfg} }

// Start is Run in new goroutines: it returns at once. With a Poller in the
// Config, directions whose socket allows it park while they are quiet.
func (s *Session) Start(client net.Conn, clientPre []byte, backend net.Conn, backendPre []byte) {
	s.init(client, backend)
	for _, d := range [2]*direction{&s.b2c, &s.c2b} {
		pre := backendPre
		if d == &s.c2b {
			pre = clientPre
		}
		if s.cfg.Poller != nil && d.src.raw != nil {
			// A new connection starts parked: a burst of handshakes must
			// not mean a burst of goroutines (Go keeps every goroutine's
			// g, and a dead one's stack until the next GC).
			d.serviceFn = func() { d.service(nil) }
			d.state.Store(dirActive)
			if len(pre) > 0 {
				d.forward(pre)
			}
			if !d.park() {
				go d.finishParked()
			}
		} else {
			go d.run(pre)
		}
	}
}

// Direction states with a Poller. The zero state is a direction that keeps
// its own goroutine and is never woken.
const (
	dirIdle   = 1 // armed in the poller, no goroutine
	dirActive = 2 // a goroutine is running it
	dirDone   = 3
)

// wake runs an idle direction: the poller saw data, or the session is
// ending and the direction must notice its closed socket.
func (d *direction) wake() {
	if d.state.CompareAndSwap(dirIdle, dirActive) {
		go d.serviceFn()
	}
}

// service runs the direction until its source has been quiet for
// ParkAfter, then parks it in the poller and lets the goroutine end.
func (d *direction) service(pre []byte) {
	if len(pre) > 0 {
		d.forward(pre)
	}
	park := d.s.cfg.ParkAfter
	if park <= 0 {
		park = DefaultParkAfter
	}
	for {
		// The deadline is pushed back lazily, at most twice per ParkAfter.
		if now := time.Now(); now.After(d.refreshAt) {
			d.src.conn.SetReadDeadline(now.Add(park))
			d.refreshAt = now.Add(park / 2)
		}
		n, err := d.read()
		if n > 0 {
			d.src.seen.Add(uint64(n))
			d.forward((*d.buf)[:d.carryN+n])
			if d.carryN > 0 && d.buf != nil {
				copy(*d.buf, d.carry[:d.carryN])
			}
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if d.park() {
			return
		}
		break
	}
	d.finishParked()
}

// park gives up the goroutine: the direction waits in the poller. It
// reports false when the socket is closed and the caller must finish the
// direction. After true, d belongs to whoever wakes it.
func (d *direction) park() bool {
	d.release()
	d.refreshAt = time.Time{}
	if !d.s.cfg.Poller.register(d) {
		return false
	}
	d.state.Store(dirIdle)
	if d.s.cfg.Poller.arm(d) {
		return true
	}
	// The socket is closed: the caller finishes, unless abort's wake does.
	return !d.state.CompareAndSwap(dirIdle, dirActive)
}

// finishParked ends a direction that ran under a poller.
func (d *direction) finishParked() {
	d.state.Store(dirDone)
	d.s.cfg.Poller.remove(d)
	d.finish()
}

// Run is the package-level Run on a session made by NewSession.
func (s *Session) Run(client net.Conn, clientPre []byte, backend net.Conn, backendPre []byte) {
	s.init(client, backend)
	go s.b2c.run(backendPre)
	s.c2b.run(clientPre)
}

func (s *Session) init(client, backend net.Conn) {
	cfg := s.cfg
	s.client.init(client, false)
	s.backend.init(backend, true)
	s.c2b = direction{s: s, src: &s.client, dst: &s.backend, from: SideClient, stats: &s.ClientToBackend}
	s.c2b.t.Rules = cfg.Client
	s.b2c = direction{s: s, src: &s.backend, dst: &s.client, from: SideBackend, stats: &s.BackendToClient}
	s.b2c.t.Rules = cfg.Backend
	s.c2b.readFn = s.c2b.readRaw
	s.b2c.readFn = s.b2c.readRaw
	if cfg.OnStart != nil {
		cfg.OnStart(s)
	}
	s.startTimers()
}

// Conns returns the session's two connections (for inspection: the relay
// owns them).
func (s *Session) Conns() (client, backend net.Conn) { return s.client.conn, s.backend.conn }

// Close starts closing the session from the proxy's side: each peer is sent
// a close frame (at its next frame boundary) with the given codes, and the
// connections are closed when the peers answer or CloseTimeout passes. It is
// safe to call from any goroutine, any number of times.
func (s *Session) Close(toClient, toBackend uint16, reason string) {
	s.noteClose(toClient, SideProxy)
	s.client.sendClose(toClient, reason)
	s.backend.sendClose(toBackend, reason)
	s.startClosing()
}

func (s *Session) noteClose(code uint16, by Side) {
	s.closeMu.Lock()
	if s.ClosedBy == SideNone {
		s.CloseCode, s.ClosedBy = code, by
	}
	s.closeMu.Unlock()
}

// startClosing arms the timer that ends the session if the peers do not.
func (s *Session) startClosing() {
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

// abort closes both connections, which ends both directions' reads; parked
// directions are woken to notice.
func (s *Session) abort() {
	s.client.conn.Close()
	s.backend.conn.Close()
	s.c2b.wake()
	s.b2c.wake()
}

func (s *Session) directionDone() {
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
	if s.cfg.OnDone != nil {
		s.cfg.OnDone(s)
	}
}

func (d *direction) run(pre []byte) {
	if len(pre) > 0 {
		d.forward(pre)
	}
	for {
		n, err := d.read()
		if n > 0 {
			d.src.seen.Add(uint64(n))
			d.forward((*d.buf)[:d.carryN+n])
			if d.carryN > 0 && d.buf != nil {
				// the next read appends to the carried bytes
				copy(*d.buf, d.carry[:d.carryN])
			}
		}
		if err != nil {
			break
		}
	}
	d.finish()
}

func (d *direction) finish() {
	d.release()
	d.setCarry(nil)
	d.end()
	d.stats.Frames, d.stats.Messages = d.t.Frames, d.t.Messages
	d.s.directionDone()
}

// end tells dst that src is gone, if nobody has yet, then half-closes dst.
func (d *direction) end() {
	if !d.closeIn.Load() && d.t.AtBoundary() {
		code, reason := uint16(CloseGoingAway), "client went away"
		if d.from == SideBackend {
			code, reason = CloseInternalError, "backend closed the connection"
		}
		if d.dst.sendClose(code, reason) {
			d.s.noteClose(code, SideProxy)
		}
	}
	d.dst.halfClose()
	d.s.startClosing()
}

// halfClose sends FIN, so the peer reads EOF after everything written so far.
func (l *leg) halfClose() {
	if cw, ok := l.conn.(interface{ CloseWrite() error }); ok {
		l.mu.Lock()
		cw.CloseWrite()
		l.mu.Unlock()
	}
}

// read returns the count of new bytes in *d.buf after the carry.
func (d *direction) read() (int, error) {
	if d.src.raw == nil {
		// No raw socket (e.g. TLS): the buffer is held across the wait.
		d.borrow()
		return d.src.conn.Read((*d.buf)[d.carryN:])
	}
	d.rn, d.rerr = 0, nil
	if err := d.src.raw.Read(d.readFn); err != nil {
		return 0, err
	}
	return d.rn, d.rerr
}

// readRaw is the RawConn callback: borrow a buffer only when the socket has
// data, give it back before waiting.
func (d *direction) readRaw(fd uintptr) bool {
	d.borrow()
	for {
		n, err := syscall.Read(int(fd), (*d.buf)[d.carryN:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			d.release()
			return false
		case err != nil:
			d.rerr = err
		case n == 0:
			d.rerr = io.EOF
		default:
			d.rn = n
		}
		return true
	}
}

func (d *direction) borrow() {
	if d.buf != nil {
		return
	}
	d.buf = d.s.cfg.Pool.get()
	if d.carryN > 0 {
		copy(*d.buf, d.carry[:d.carryN])
	}
}

func (d *direction) release() {
	if d.buf != nil {
		d.s.cfg.Pool.put(d.buf)
		d.buf = nil
	}
}

// forward passes b (carry included at its start) through the tracker and
// writes what may go to dst.
func (d *direction) forward(b []byte) {
	d.setCarry(nil)
	for len(b) > 0 {
		if d.discard {
			return
		}
		fwd, ev := d.t.Advance(b)
		switch ev {
		case EvNone:
			d.send(b[:fwd], false)
			d.setCarry(b[fwd:])
			return
		case EvControl:
			d.control(b[:fwd])
		case EvViolation:
			d.send(b[:fwd], false)
			d.violation()
			return
		}
		b = b[fwd:]
	}
}

// control forwards a run of bytes ending with a whole control frame.
func (d *direction) control(run []byte) {
	h := &d.t.Control
	frame := run[len(run)-h.Len-int(h.Length):]
	if h.Opcode == OpPong && isOwnPong(frame, h) {
		d.send(run[:len(run)-len(frame)], false) // the pong answers the proxy: drop it
		if sent := d.src.rttFrom.Swap(0); sent != 0 && d.s.cfg.OnPingRTT != nil {
			d.s.cfg.OnPingRTT(d.from, time.Duration(time.Now().UnixNano()-sent))
		}
		return
	}
	if h.Opcode != OpClose {
		d.send(run, false)
		return
	}
	code := CloseCode(frame, h)
	if code != CloseNoStatus && !ValidCloseCode(code) {
		d.send(run[:len(run)-len(frame)], false)
		d.t.Violation = Violation{CloseProtocolError, "invalid close code"}
		d.violation()
		return
	}
	d.closeIn.Store(true)
	d.s.noteClose(code, d.from)
	d.send(run, true)
	d.s.startClosing()
	// Close frames have gone both ways: as the server toward the client the
	// proxy closes first (RFC 6455 §7.1.1); the backend closes toward us.
	if d.s.c2b.closeIn.Load() && d.s.b2c.closeIn.Load() {
		d.s.client.halfClose()
	}
}

func (d *direction) send(p []byte, isClose bool) {
	if len(p) == 0 || d.discard {
		return
	}
	d.stats.Bytes += uint64(len(p))
	if err := d.dst.write(p, d.t.AtBoundary(), isClose); err != nil {
		d.discard = true
	}
}

// violation closes both sides with the violation's code and stops forwarding.
func (d *direction) violation() {
	v := d.t.Violation
	d.discard = true
	d.s.noteClose(v.Code, SideProxy)
	d.dst.sendClose(v.Code, v.Reason)
	d.src.sendClose(v.Code, v.Reason)
	d.s.startClosing()
}

func (d *direction) setCarry(rest []byte) {
	if len(rest) == 0 {
		if d.carry != nil {
			carryPool.Put(d.carry)
			d.carry, d.carryN = nil, 0
		}
		return
	}
	if d.carry == nil {
		d.carry = carryPool.Get().(*[MaxCarry]byte)
	}
	d.carryN = copy(d.carry[:], rest)
}
