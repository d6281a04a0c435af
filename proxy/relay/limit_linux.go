//go:build linux

package relay

import (
	"math"
	"time"
)

// This file holds what the event loops do for message-rate limits and live
// figures; evsession_linux.go calls in at a few points: after a session
// is set up (initLive), before and after the tracker runs over a read
// (forward, afterForward), when the tracker stops at a message with no
// token (overLimit), in readable (a paused direction is not read), and in
// onTimer (tick).

// resumeRetry is how soon a paused direction whose tokens are back tries
// again while its peer still holds bytes it has not taken.
const resumeRetry = int64(10 * time.Millisecond)

// initLive sets up the session's limits; on the loop's caller, before
// the session starts.
func (e *evSession) initLive() {
	e.c.lim, e.b.lim = e.pub.newLimits()
	e.c.t.Limited = e.c.lim != nil
	e.b.t.Limited = e.b.lim != nil
}

// afterForward settles the tokens the tracker used, and arms the flush of
// the live figures if none is armed: one timer per second at most, and
// none for an idle session.
func (lg *evLeg) afterForward() {
	e := lg.s
	if lg.lim != nil {
		lg.lim.settle(&lg.t)
	}
	if e.liveDue == 0 && !e.done {
		e.liveDue = e.lp.now + int64(LiveInterval)
		e.needTimer(e.liveDue)
	}
}

// overLimit handles a new message that found no token; rest starts with
// it. Close: 1008 to both sides. Pause: rest waits in a pooled buffer and
// the direction is not read until the timer brings tokens back.
func (lg *evLeg) overLimit(rest []byte) {
	e := lg.s
	l := lg.lim
	e.pub.noteLimited(lg.side)
	if !l.pause {
		reason := limitReason(lg.side)
		lg.discard = true
		e.pub.noteLimitClose(lg.side)
		e.pub.noteClose(ClosePolicyViolation, SideProxy)
		e.pub.noteReason(reason)
		lg.peer.sendOwnClose(ClosePolicyViolation, reason)
		lg.sendOwnClose(ClosePolicyViolation, reason)
		e.startClosing()
		return
	}
	l.hold(rest, e.lp.pool)
	lg.wakeAt(l.wakeAt(e.lp.now))
}

// wakeAt runs the session's timer task at (unix ns) with a timer of the
// leg's own, finer than the wheel's tick; the session's Fire posts it to
// the loop.
func (lg *evLeg) wakeAt(at int64) {
	e, l := lg.s, lg.lim
	d := time.Duration(at - e.lp.now)
	if l.wake == nil {
		l.wake = time.AfterFunc(d, func() { e.Fire(time.Time{}) })
		return
	}
	l.wake.Reset(d)
}

// paused reports whether the leg holds bytes that wait for tokens.
func (lg *evLeg) paused() bool { return lg.lim != nil && lg.lim.held != nil }

// tick runs on the loop from onTimer: it flushes the live figures when
// due and forwards what paused directions hold once their tokens are
// back (at once when the session is closing, so the close handshake is
// read). It returns its next deadline.
func (e *evSession) tick(now int64) int64 {
	next := int64(math.MaxInt64)
	if e.liveDue != 0 {
		if now >= e.liveDue {
			e.liveDue = 0
			e.publishLive()
			e.pub.flushLive()
		} else {
			next = e.liveDue
		}
	}
	for _, lg := range [2]*evLeg{&e.c, &e.b} {
		if lg.paused() {
			next = min(next, lg.resume(now))
		}
	}
	return next
}

// resume forwards the held bytes if tokens are back, and returns when to
// look again (MaxInt64 if the leg is no longer paused).
func (lg *evLeg) resume(now int64) int64 {
	l := lg.lim
	if lg.s.closing || lg.discard {
		l.off = true
	} else {
		if at := l.nextToken(now); at > now {
			lg.wakeAt(l.wakeAt(now))
			return math.MaxInt64
		}
		if lg.peer.out != nil && !lg.peer.dead {
			lg.wakeAt(now + resumeRetry) // the peer has not taken the last bytes yet
			return math.MaxInt64
		}
	}
	held, n := l.held, l.heldN
	l.held, l.heldN = nil, 0
	lg.forward((*held)[:n])
	lg.afterForward()
	if len(*held) == lg.s.lp.pool.size {
		lg.s.lp.pool.put(held)
	}
	if lg.tc != nil && !lg.paused() && !lg.eof {
		// Records crypto/tls decrypted no further while paused raise no
		// event of their own.
		lg.readTLS(false)
	}
	return math.MaxInt64 // paused again: overLimit has set the wake timer
}

// publishLive stores the session's figures where Session.Live reads them.
func (e *evSession) publishLive() {
	l := &e.pub.live
	l.dir[0].publish(e.c.stats.Bytes, e.c.t.Frames, e.c.t.Messages)
	l.dir[1].publish(e.b.stats.Bytes, e.b.t.Frames, e.b.t.Messages)
	l.lastActive.Store(max(e.c.lastRead, e.b.lastRead))
}

// endLive publishes and flushes the last figures; finish calls it before
// OnDone.
func (e *evSession) endLive() {
	e.liveDue = 0
	e.publishLive()
	e.pub.flushLive()
	for _, lg := range [2]*evLeg{&e.c, &e.b} {
		if lg.paused() {
			if len(*lg.lim.held) == e.lp.pool.size {
				e.lp.pool.put(lg.lim.held)
			}
			lg.lim.held = nil
		}
		if lg.lim != nil && lg.lim.wake != nil {
			lg.lim.wake.Stop()
		}
	}
}
