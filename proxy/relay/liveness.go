package relay

import (
	"bytes"
	"math"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

// Ping is one leg's proxy ping schedule.
type Ping struct {
	// Interval is how long the peer may be silent before the proxy pings
	// it; 0 disables pings on the leg.
	Interval time.Duration
	// Timeout is how long the peer then has to send anything (its pong, or
	// any other frame); it is closed if it does not. Interval if 0.
	Timeout time.Duration
}

// pingPayload marks the proxy's own pings, so that the pongs answering them
// are swallowed while the endpoints' own pings and pongs pass.
var pingPayload = []byte("wsproxy")

// pingFrameMax is a ping frame with pingPayload, masked.
const pingFrameMax = 2 + 4 + 7

// liveness is one leg's ping state. Fields without atomics belong to the
// session's timer, whose Fire calls never overlap.
type liveness struct {
	ping       Ping
	lastSeen   uint64 // bytes read from the peer at the last check
	lastActive int64  // when they last changed (unix ns)
}

// startTimers arms the session's timer if it has any deadline to keep.
func (s *Session) startTimers() {
	cfg := s.cfg
	if cfg.Wheel == nil {
		return
	}
	now := time.Now().UnixNano()
	s.client.live = liveness{ping: cfg.ClientPing, lastActive: now}
	s.backend.live = liveness{ping: cfg.BackendPing, lastActive: now}
	s.idleSince = now
	if cfg.MaxLifetime > 0 {
		s.endOfLife = now + int64(keepalive.Jitter(cfg.MaxLifetime, 0.1))
	}
	if cfg.ClientPing.Interval <= 0 && cfg.BackendPing.Interval <= 0 && cfg.IdleTimeout <= 0 && cfg.MaxLifetime <= 0 {
		return
	}
	s.timer.Init(s)
	s.timerArmed = true
	cfg.Wheel.Schedule(&s.timer, s.nextCheck(now))
}

// nextCheck is the delay to the session's first deadline from now.
func (s *Session) nextCheck(now int64) time.Duration {
	next := int64(math.MaxInt64)
	for _, l := range [2]*leg{&s.client, &s.backend} {
		if l.live.ping.Interval > 0 {
			next = min(next, l.live.lastActive+int64(l.live.ping.Interval))
		}
	}
	if d := s.cfg.IdleTimeout; d > 0 {
		next = min(next, s.idleSince+int64(d))
	}
	if s.endOfLife > 0 {
		next = min(next, s.endOfLife)
	}
	return time.Duration(next - now)
}

// Fire runs on the wheel's goroutine: it pings quiet peers, closes dead
// ones, and enforces the idle timeout and lifetime. It never blocks.
func (s *Session) Fire(t time.Time) {
	if s.ended.Load() >= 2 || s.closing.Load() {
		return
	}
	now := t.UnixNano()
	next := int64(math.MaxInt64)
	for _, l := range [2]*leg{&s.client, &s.backend} {
		lv := &l.live
		if lv.ping.Interval <= 0 {
			continue
		}
		timeout := int64(lv.ping.Timeout)
		if timeout <= 0 {
			timeout = int64(lv.ping.Interval)
		}
		seen := l.seen.Load()
		if sent := l.pingSentAt.Load(); sent != 0 {
			if seen == l.seenAtPing.Load() {
				if now >= sent+timeout {
					s.peerDead(l)
					return
				}
				next = min(next, sent+timeout)
				continue
			}
			l.pingSentAt.Store(0) // the peer spoke: alive
		}
		if seen != lv.lastSeen {
			lv.lastSeen, lv.lastActive = seen, now
		}
		if now-lv.lastActive >= int64(lv.ping.Interval) {
			l.tryPing(now)
			lv.lastActive = now // next ping an interval from now, if this one is answered
			next = min(next, now+timeout)
			continue
		}
		next = min(next, lv.lastActive+int64(lv.ping.Interval))
	}
	if d := int64(s.cfg.IdleTimeout); d > 0 {
		if total := s.client.seen.Load() + s.backend.seen.Load(); total != s.idleSeen {
			s.idleSeen, s.idleSince = total, now
		}
		if now-s.idleSince >= d {
			go s.closeFor(CloseGoingAway, CloseGoingAway, "idle timeout")
			return
		}
		next = min(next, s.idleSince+d)
	}
	if s.endOfLife > 0 {
		if now >= s.endOfLife {
			go s.closeFor(CloseGoingAway, CloseGoingAway, "connection lifetime reached")
			return
		}
		next = min(next, s.endOfLife)
	}
	s.cfg.Wheel.Schedule(&s.timer, time.Duration(next-now))
}

// closeFor closes the session from the proxy's side and records why.
func (s *Session) closeFor(toClient, toBackend uint16, reason string) {
	s.noteReason(reason)
	s.Close(toClient, toBackend, reason)
}

func (s *Session) noteReason(reason string) {
	s.closeMu.Lock()
	if s.Reason == "" {
		s.Reason = reason
	}
	s.closeMu.Unlock()
}

// peerDead drops a leg whose peer missed its pong deadline. Closing its
// socket ends the direction reading it, which tells the other side with
// the usual code: 1001 toward the backend, 1011 toward the client.
func (s *Session) peerDead(l *leg) {
	if l == &s.client {
		s.noteReason("client ping timeout")
	} else {
		s.noteReason("backend ping timeout")
	}
	l.dead.Store(true)
	l.conn.Close()
	s.c2b.wake()
	s.b2c.wake()
}

// tryPing sends the proxy's ping to the leg's peer without blocking: now if
// the leg is between frames and its socket takes the bytes, otherwise at the
// forwarder's next frame boundary.
func (l *leg) tryPing(now int64) {
	if !l.mu.TryLock() {
		l.pingWanted.Store(true) // the forwarder is writing: it sends it next
		return
	}
	if l.closeSent || l.dead.Load() || l.midFrame || l.pending != nil || l.raw == nil {
		l.pingWanted.Store(!l.closeSent && !l.dead.Load())
		l.mu.Unlock()
		return
	}
	f := l.buildPing()
	n := l.writeNow(f)
	switch {
	case n == len(f):
		l.notePing(now)
		l.mu.Unlock()
	case n <= 0:
		// The peer's receive window is full: it is not reading. Nothing was
		// written; TCP_USER_TIMEOUT catches a peer that is gone.
		l.mu.Unlock()
	default:
		// Rare: part of the frame went out. The rest must follow before
		// anything else, so a goroutine finishes it holding the lock.
		rest := append([]byte(nil), f[n:]...)
		l.notePing(now)
		go func() {
			if _, err := l.conn.Write(rest); err != nil {
				l.dead.Store(true)
			}
			l.mu.Unlock()
		}()
	}
}

// pingAtBoundary is called by the forwarder, holding l.mu, when it is
// between frames: it sends a ping that the timer could not.
func (l *leg) pingAtBoundary() {
	if !l.pingWanted.Swap(false) {
		return
	}
	if _, err := l.conn.Write(l.buildPing()); err != nil {
		l.dead.Store(true)
		return
	}
	l.notePing(time.Now().UnixNano())
}

func (l *leg) notePing(now int64) {
	l.seenAtPing.Store(l.seen.Load())
	l.pingSentAt.Store(now)
	l.rttFrom.Store(now)
}

// buildPing writes the proxy's ping frame into the leg's own buffer, masked
// with a fresh key toward a backend. Callers hold l.mu.
func (l *leg) buildPing() []byte {
	var mask [4]byte
	if l.masked {
		v := rand.Uint32()
		mask = [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	}
	return AppendFrame(l.pingBuf[:0], OpPing, pingPayload, mask, l.masked)
}

// writeNow writes p with one non-blocking write and returns how many bytes
// went out (0 if none could).
func (l *leg) writeNow(p []byte) int {
	l.wOut, l.wN = p, 0
	if l.writeFn == nil {
		l.writeFn = func(fd uintptr) bool {
			for {
				n, err := syscall.Write(int(fd), l.wOut)
				if err == syscall.EINTR {
					continue
				}
				if n > 0 {
					l.wN = n
				}
				return true // never wait: the caller decides
			}
		}
	}
	if l.raw.Write(l.writeFn) != nil {
		return 0
	}
	return l.wN
}

// isOwnPong reports whether a whole pong frame answers the proxy's ping.
func isOwnPong(frame []byte, h *Header) bool {
	if h.Length != uint64(len(pingPayload)) {
		return false
	}
	p := frame[h.Len:]
	if !h.Masked {
		return bytes.Equal(p[:len(pingPayload)], pingPayload)
	}
	for i, c := range pingPayload {
		if p[i]^h.Mask[i&3] != c {
			return false
		}
	}
	return true
}
