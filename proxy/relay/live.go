package relay

import (
	"sync"
	"sync/atomic"
	"time"
)

// LiveInterval is how often at most a session with traffic publishes its
// figures (Session.Live) and reports them to Config.OnFlush. Nothing is
// counted per frame: a session arms one timer when it moves bytes and
// none has been armed since its last flush, so an idle session costs
// nothing.
const LiveInterval = time.Second

// Counts are one direction's running figures.
type Counts struct {
	Bytes, Frames, Messages uint64
	// Limited counts the messages that found no token: each one that
	// waited (pause), or the one that closed the session (close).
	Limited uint64
}

func (c Counts) sub(o Counts) Counts {
	return Counts{c.Bytes - o.Bytes, c.Frames - o.Frames, c.Messages - o.Messages, c.Limited - o.Limited}
}

// Live is a session's figures as of its last flush: at most LiveInterval
// old while it has traffic, exact once it has ended.
type Live struct {
	ClientToBackend, BackendToClient Counts
	// LastActivity is when a byte was last read from either side.
	LastActivity time.Time
	// ClientPingRTT and BackendPingRTT are the round trips of the last
	// proxy pings answered on each leg; 0 if none yet.
	ClientPingRTT, BackendPingRTT time.Duration
}

// liveDir is a direction's published figures.
type liveDir struct {
	bytes, frames, messages, limited atomic.Uint64
}

func (d *liveDir) load() Counts {
	return Counts{d.bytes.Load(), d.frames.Load(), d.messages.Load(), d.limited.Load()}
}

// publish stores a direction's figures (limited is added where it
// happens: it is rare).
func (d *liveDir) publish(bytes, frames, messages uint64) {
	d.bytes.Store(bytes)
	d.frames.Store(frames)
	d.messages.Store(messages)
}

// liveState is what a session shares with readers on other goroutines
// (the admin API, the metrics): atomics the driver stores at each flush,
// so reading never races with the relay and never waits for it.
type liveState struct {
	dir        [2]liveDir // 0: client to backend, 1: backend to client
	lastActive atomic.Int64
	rtt        [2]atomic.Int64 // 0: client leg, 1: backend leg

	mu      sync.Mutex // orders flushes (a timer's and the last one)
	flushed [2]Counts  // what OnFlush has been told; under mu
}

// Live returns the session's figures as of its last flush. It is safe to
// call from any goroutine.
func (s *Session) Live() Live {
	l := &s.live
	out := Live{
		ClientToBackend: l.dir[0].load(),
		BackendToClient: l.dir[1].load(),
		ClientPingRTT:   time.Duration(l.rtt[0].Load()),
		BackendPingRTT:  time.Duration(l.rtt[1].Load()),
	}
	if t := l.lastActive.Load(); t != 0 {
		out.LastActivity = time.Unix(0, t)
	}
	return out
}

// notePingRTT records the round trip of a proxy ping answered on side.
func (s *Session) notePingRTT(side Side, rtt time.Duration) {
	i := 0
	if side == SideBackend {
		i = 1
	}
	s.live.rtt[i].Store(int64(rtt))
}

// noteLimited counts a message that found no token.
func (s *Session) noteLimited(from Side) {
	i := 0
	if from == SideBackend {
		i = 1
	}
	s.live.dir[i].limited.Add(1)
}

// flushLive reports what was published since the last flush to OnFlush.
func (s *Session) flushLive() {
	l := &s.live
	l.mu.Lock()
	var d [2]Counts
	for i := range d {
		cur := l.dir[i].load()
		d[i] = cur.sub(l.flushed[i])
		l.flushed[i] = cur
	}
	l.mu.Unlock()
	if s.cfg.OnFlush != nil && (d[0] != Counts{} || d[1] != Counts{}) {
		s.cfg.OnFlush(s, d[0], d[1])
	}
}
