package relay

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

// The proxy's own pings carry pingPrefix and a token drawn for each ping,
// so that the pong answering one is swallowed while every other ping and
// pong passes: the endpoints' own, and those of another wsproxy in front
// of or behind this one (whose payloads start the same way).
const (
	pingPrefix = "wsproxy"
	pingLen    = len(pingPrefix) + 8
)

// pingFrameMax is the proxy's ping frame, masked.
const pingFrameMax = 2 + 4 + pingLen

// pingPayload is the payload of the ping with token.
func pingPayload(token uint64) [pingLen]byte {
	var p [pingLen]byte
	copy(p[:], pingPrefix)
	binary.BigEndian.PutUint64(p[len(pingPrefix):], token)
	return p
}

// newPingToken draws a ping's token; never 0, which means no ping.
func newPingToken() uint64 { return rand.Uint64() | 1 }

// liveness is one goroutine-driven leg's ping state. It belongs to the
// session's timer, whose Fire calls never overlap.
type liveness struct {
	ping       Ping
	lastSeen   uint64 // bytes read from the peer at the last check
	lastActive int64  // when they last changed (unix ns)
	seenAtPing uint64
	pingDueAt  int64 // unix ns; 0 when no ping is unanswered
}

// startTimers arms the session's timer if it has any deadline to keep.
func (s *goSession) startTimers() {
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
func (s *goSession) nextCheck(now int64) time.Duration {
	next := int64(math.MaxInt64)
	for _, l := range [2]*gleg{&s.client, &s.backend} {
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
// ones, and enforces the idle timeout and lifetime. It never blocks: what
// writes runs on a goroutine of its own.
func (s *goSession) Fire(t time.Time) {
	if s.ended.Load() >= 2 || s.closing.Load() {
		return
	}
	now := t.UnixNano()
	next := int64(math.MaxInt64)
	for _, l := range [2]*gleg{&s.client, &s.backend} {
		lv := &l.live
		if lv.ping.Interval <= 0 {
			continue
		}
		timeout := int64(lv.ping.timeout())
		seen := l.seen.Load()
		if l.forwarding.Load() {
			// Not being read just now (its other side is slow, or a rate
			// limit holds it): it cannot be judged. The stalled side has
			// write_timeout.
			lv.pingDueAt = 0
			next = min(next, now+int64(lv.ping.Interval))
			continue
		}
		if lv.pingDueAt != 0 {
			if seen == lv.seenAtPing {
				// The deadline runs from when the ping went out: one held
				// back while the leg is inside a frame (a large message
				// still being relayed) proves nothing either way yet.
				sent := l.pingSentAt.Load()
				if sent == 0 {
					go l.sendPing(s)
					next = min(next, now+timeout)
					continue
				}
				if now >= sent+timeout {
					s.peerDead(l)
					return
				}
				next = min(next, sent+timeout)
				continue
			}
			lv.pingDueAt = 0 // the peer spoke: alive
		}
		if seen != lv.lastSeen {
			lv.lastSeen, lv.lastActive = seen, now
		}
		if now-lv.lastActive >= int64(lv.ping.Interval) {
			lv.seenAtPing, lv.pingDueAt = seen, now
			l.pingSentAt.Store(0)
			go l.sendPing(s)
			lv.lastActive = now
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
func (s *goSession) closeFor(toClient, toBackend uint16, reason string) {
	s.pub.noteReason(reason)
	s.close(toClient, toBackend, reason)
}

// peerDead drops a leg whose peer missed its pong deadline. Closing its
// socket ends the direction reading it, which tells the other side with
// the usual code: 1001 toward the backend, 1011 toward the client.
func (s *goSession) peerDead(l *gleg) {
	s.pub.noteReason(l.side.String() + " ping timeout")
	l.dead.Store(true)
	l.conn.Close()
}

// sendPing writes the proxy's ping if the leg is between frames and no
// ping of ours is out; a leg in the middle of a frame is busy, and Fire
// tries again later.
func (l *gleg) sendPing(s *goSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closeSent || l.dead.Load() || l.midFrame || l.pending != nil || l.pingSentAt.Load() != 0 {
		return
	}
	token := newPingToken()
	l.pingToken.Store(token)
	l.pingSentAt.Store(time.Now().UnixNano())
	var buf [pingFrameMax]byte
	s.writeConn(l, appendPing(buf[:0], l.masked, token))
}

// appendPing appends the proxy's ping frame with token, masked with a
// fresh key when it goes to a backend.
func appendPing(dst []byte, masked bool, token uint64) []byte {
	var mask [4]byte
	if masked {
		v := rand.Uint32()
		mask = [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	}
	p := pingPayload(token)
	return AppendFrame(dst, OpPing, p[:], mask, masked)
}

// isOwnPong reports whether a whole pong frame answers the proxy's ping
// with token (0: none sent).
func isOwnPong(frame []byte, h *Header, token uint64) bool {
	if token == 0 || h.Length != uint64(pingLen) {
		return false
	}
	want := pingPayload(token)
	p := frame[h.Len:]
	if !h.Masked {
		return bytes.Equal(p[:pingLen], want[:])
	}
	for i, c := range want {
		if p[i]^h.Mask[i&3] != c {
			return false
		}
	}
	return true
}
