package relay

import (
	"time"
)

// This file holds what the goroutine driver (conn.go, for TLS legs) does
// for message-rate limits and live figures. Its direction goroutines
// block anyway, so a paused direction simply sleeps until a token
// returns, which stops its reads just as the loops' pause does.

// maxPauseSleep bounds one sleep of a paused direction, so that it
// notices soon when its session starts closing.
const maxPauseSleep = 100 * time.Millisecond

// initLive sets up the session's limits before its goroutines start.
func (s *goSession) initLive() {
	s.c2b.lim, s.b2c.lim = s.pub.newLimits()
	s.c2b.t.Limited = s.c2b.lim != nil
	s.b2c.t.Limited = s.b2c.lim != nil
}

// beginLimit gives the tracker its tokens before a forward.
func (d *gdir) beginLimit() {
	if d.lim != nil {
		d.lim.begin(&d.t, time.Now().UnixNano())
	}
}

// afterForward settles the tokens used, publishes the direction's
// figures (atomics, once per read: the goroutine driver reads with a
// syscall and TLS work each time anyway) and arms the session's flush.
func (d *gdir) afterForward() {
	if d.lim != nil {
		d.lim.settle(&d.t)
	}
	s := d.s
	l := &s.pub.live
	l.dir[d.index()].publish(d.stats.Bytes, d.t.Frames, d.t.Messages)
	l.lastActive.Store(time.Now().UnixNano())
	if s.liveArmed.CompareAndSwap(false, true) {
		time.AfterFunc(LiveInterval, func() {
			s.liveArmed.Store(false)
			s.pub.flushLive()
		})
	}
}

func (d *gdir) index() int {
	if d.from == SideBackend {
		return 1
	}
	return 0
}

// overLimit handles a new message that found no token. Close: 1008 to
// both sides, and false (stop forwarding). Pause: sleep until a token
// returns (or the session closes) and report true: the caller presents
// the message again.
func (d *gdir) overLimit() bool {
	s := d.s
	s.pub.noteLimited(d.from)
	if !d.lim.pause {
		reason := limitReason(d.from)
		d.discard = true
		s.pub.noteLimitClose(d.from)
		s.pub.noteClose(ClosePolicyViolation, SideProxy)
		s.pub.noteReason(reason)
		d.dst.sendClose(s, ClosePolicyViolation, reason)
		d.src.sendClose(s, ClosePolicyViolation, reason)
		s.startClosing()
		return false
	}
	for {
		now := time.Now().UnixNano()
		if s.closing.Load() {
			d.lim.off = true
		}
		if d.lim.off || d.lim.nextToken(now) <= now {
			d.lim.begin(&d.t, now)
			return true
		}
		time.Sleep(min(time.Duration(d.lim.nextToken(now)-now), maxPauseSleep))
	}
}

// endLive publishes and flushes the last figures before OnDone.
func (s *goSession) endLive() {
	l := &s.pub.live
	for _, d := range [2]*gdir{&s.c2b, &s.b2c} {
		l.dir[d.index()].publish(d.stats.Bytes, d.stats.Frames, d.stats.Messages)
	}
	s.pub.flushLive()
}
