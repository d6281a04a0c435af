package relay

import (
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/wsproxy/wsproxy/keepalive"
)

// DefaultBufferSize is the read buffer of each event loop, and the size of
// the buffers lent to blocked directions and to goroutine-driven legs.
const DefaultBufferSize = 16 << 10

// DefaultCloseTimeout bounds how long a session waits for the close handshake
// or the peers' FINs once it has started to end.
const DefaultCloseTimeout = 5 * time.Second

// Operations posted to a session's loop (see Loops).
const (
	opStart = iota + 1
	opClose
	opAbort
	opTimer
	opDial
	opResolved
	opListen
	opUnlisten
	opStop
)

// Pool lends buffers. An event-loop direction holds one only while its peer
// will not take what was read (backpressure); a goroutine-driven leg holds
// one while it reads. An idle connection holds none. It is safe for
// concurrent use.
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
	// Pool lends buffers; required.
	Pool *Pool
	// Loops, if set, drive every session whose two connections are plain
	// TCP sockets (see Loops). Other sessions (TLS legs) run a goroutine
	// per direction.
	Loops *Loops
	// Client and Backend are the rules for frames read from each side.
	// Client.Masked should be true and Backend.Masked false.
	Client, Backend Rules
	// CloseTimeout bounds the closing handshake; DefaultCloseTimeout if 0.
	CloseTimeout time.Duration
	// WriteTimeout is how long bytes held for a peer that does not read may
	// wait before the session ends as a slow consumer: the stalled side is
	// dropped and the other gets a close frame (1001 toward the backend,
	// 1011 toward the client). 0 is off.
	WriteTimeout time.Duration
	// Wheel runs the session timers below (and, in the loops, the write
	// and close deadlines); without one they are off.
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
	// that was answered, and on which side. It runs on the session's loop
	// or goroutine and must not block.
	OnPingRTT func(side Side, rtt time.Duration)
	// ClientRate and BackendRate limit the data messages each side may
	// send on one connection; the zero MessageRate is no limit. The
	// session's Keys add a limit shared by every connection with the same
	// hash key. OverLimit says what a side over either limit gets:
	// LimitClose (the default) or LimitPause.
	ClientRate, BackendRate MessageRate
	OverLimit               LimitAction
	// OnFlush, if set, is told what a session relayed since the previous
	// call (up: client to backend), at most once per LiveInterval while it
	// has traffic and a last time before OnDone, so counters move while
	// connections are open without a cost per frame. It runs on the
	// session's loop (or a relay goroutine or timer) and must not block.
	OnFlush func(s *Session, up, down Counts)
	// Tune, if set, is called once the session has lasted TuneAfter (at
	// once if that is not positive), on the session's loop or goroutine; it
	// must not block. It is for socket options that only a connection that
	// lives a while needs, such as TCP keepalive and user timeout: the
	// kernel times both from the connection's own history (the last byte
	// received, the first unacknowledged retransmission), so setting them
	// a little late changes nothing, and short connections never pay the
	// system calls.
	Tune      func(*Session)
	TuneAfter time.Duration
	// OnStart, if set, is called with the new session before any byte is
	// relayed, so the caller can register it (for Close on reload or
	// shutdown). It must not block.
	OnStart func(*Session)
	// OnDone, if set, is called once when both directions have ended and
	// both connections are closed. It runs on the session's loop (or a
	// relay goroutine) and must not block.
	OnDone func(*Session)
}

// Ping is one leg's proxy ping schedule.
type Ping struct {
	// Interval is how long the peer may be silent before the proxy pings
	// it; 0 disables pings on the leg.
	Interval time.Duration
	// Timeout is how long the peer then has to send anything (its pong, or
	// any other frame); it is closed if it does not. Interval if 0.
	Timeout time.Duration
}

func (p Ping) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return p.Interval
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

// Session is one relayed WebSocket connection. Its exported figures are
// stable once Config.OnDone runs.
type Session struct {
	// Tag is the caller's own value for this session (set before Start).
	Tag any
	// First, if set before Start, is written to the client before anything
	// relayed (the proxy's 101 response). It is not counted in the figures.
	First []byte
	// Keys, if set before Start, are the message-rate buckets this
	// session shares with the other connections of its hash key.
	Keys *KeyBucket

	cfg *Config
	ev  *evSession // driven by an event loop
	g   *goSession // driven by a goroutine per direction (TLS legs)

	ClientToBackend, BackendToClient DirStats
	// CloseCode is the first close code seen or sent, and ClosedBy the side
	// it came from (SideProxy when the proxy chose it). Reason says why the
	// proxy closed, when it did on its own (a ping or idle timeout, ...).
	CloseCode uint16
	ClosedBy  Side
	Reason    string
	// Stalled is the side that stopped reading for longer than
	// WriteTimeout and was dropped as a slow consumer; SideNone if none.
	Stalled Side
	// LimitClosed is the side whose message rate closed the session
	// (1008); SideNone if none.
	LimitClosed Side
	closeMu     sync.Mutex

	live liveState
}

// NewSession returns a session to be started with Start; the caller may set
// Tag first.
func NewSession(cfg *Config) *Session { return &Session{cfg: cfg} }

// Start relays between client and backend and returns at once. clientPre
// and backendPre are bytes already read from each side after its handshake
// (they are frames and are forwarded first). With Loops in the Config and
// two plain TCP connections, the session is handed to a loop, which takes
// over the sockets (the net.Conns are closed; the loop keeps duplicates of
// their descriptors). Otherwise each direction runs on a goroutine.
func (s *Session) Start(client net.Conn, clientPre []byte, backend net.Conn, backendPre []byte) {
	if s.cfg.Loops != nil && s.startOnLoop(client, clientPre, backend, backendPre) {
		return
	}
	s.g = &goSession{pub: s, cfg: s.cfg}
	s.g.start(client, clientPre, backend, backendPre)
}

// Close starts closing the session from the proxy's side: each peer is sent
// a close frame (at its next frame boundary) with the given codes, and the
// connections are closed when the peers answer or CloseTimeout passes. It is
// safe to call from any goroutine, any number of times, and never blocks.
func (s *Session) Close(toClient, toBackend uint16, reason string) {
	if s.ev != nil {
		s.ev.post(opClose, toClient, toBackend, reason)
		return
	}
	if s.g != nil {
		go s.g.close(toClient, toBackend, reason)
	}
}

// Abort drops both connections now, without close frames: the last resort
// when a grace period has run out. It never blocks.
func (s *Session) Abort() {
	if s.ev != nil {
		s.ev.post(opAbort, 0, 0, "")
		return
	}
	if s.g != nil {
		s.g.abort()
	}
}

func (s *Session) noteClose(code uint16, by Side) {
	s.closeMu.Lock()
	if s.ClosedBy == SideNone {
		s.CloseCode, s.ClosedBy = code, by
	}
	s.closeMu.Unlock()
}

// noteStalled records a side dropped as a slow consumer.
func (s *Session) noteStalled(side Side) {
	s.closeMu.Lock()
	if s.Stalled == SideNone {
		s.Stalled = side
	}
	s.closeMu.Unlock()
	s.noteReason("slow consumer: " + side.String())
}

func (s *Session) noteReason(reason string) {
	s.closeMu.Lock()
	if s.Reason == "" {
		s.Reason = reason
	}
	s.closeMu.Unlock()
}

// goneCode is the close code and reason the proxy sends to the peer of a
// side that vanished: 1001 toward the backend when the client went away,
// 1011 toward the client when the backend did.
func goneCode(from Side) (uint16, string) {
	if from == SideBackend {
		return CloseInternalError, "backend closed the connection"
	}
	return CloseGoingAway, "client went away"
}

// checkClose judges a whole close frame: its code must be one allowed on the
// wire (RFC 6455 §7.4.1: never 1005, 1006 or 1015) and its reason valid
// UTF-8 (§5.5.1, 1007 otherwise). scratch receives the unmasked payload.
func checkClose(frame []byte, h *Header, scratch []byte) (code uint16, v Violation) {
	if h.Length == 0 {
		return CloseNoStatus, Violation{}
	}
	code, reason := ClosePayload(frame, h, scratch)
	if !ValidCloseCode(code) {
		return code, Violation{CloseProtocolError, "invalid close code"}
	}
	if !utf8.Valid(reason) {
		return code, Violation{CloseInvalidPayload, "close reason is not valid UTF-8"}
	}
	return code, Violation{}
}

// newMask returns a fresh masking key for a frame the proxy sends to a
// backend.
func newMask() [4]byte {
	v := rand.Uint32()
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// Sockets returns the session's two sockets for inspection (socket
// options in tests and diagnostics); the relay owns them, so use them only
// to read, and only while the session is live. Either is nil if it is not
// a socket.
func (s *Session) Sockets() (client, backend syscall.Conn) {
	if s.ev != nil {
		return s.ev.sockets()
	}
	if s.g != nil {
		client, _ = s.g.client.conn.(syscall.Conn)
		backend, _ = s.g.backend.conn.(syscall.Conn)
	}
	return client, backend
}

// badGateway is what the client is told when its backend broke the
// protocol: 1014, the code for an invalid response from an upstream.
func badGateway(v Violation) (uint16, string) {
	return CloseBadGateway, "invalid frame from backend: " + v.Reason
}
