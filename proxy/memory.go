package proxy

import (
	goruntime "runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

// memReleaser gives memory back to the OS once a burst of handshakes is
// over. A burst leaves behind what only the handshakes needed (fasthttp's
// header readers, worker stacks, the backend handshake's buffers): garbage
// that Go's background scavenger returns slowly, so a proxy that just took
// a reconnect storm would report several MiB more per idle connection
// than it holds. After a quarter second with no handshake, following at
// least releaseAfter of them, one forced collection returns it, at most
// every releaseEvery, and one more returns the stacks of the workers that
// served the burst once they have exited. Both land within about three
// seconds of a storm's end, before anyone samples the process's RSS for
// its idle connections.
type memReleaser struct {
	wheel     *keepalive.Wheel
	timer     keepalive.Timer
	count     atomic.Uint64 // handshakes so far
	seen      uint64        // count at the last tick
	released  uint64        // count at the last release
	lastFreed time.Time
	followUp  time.Time // when to release again, once idle workers are gone; zero if not
}

// A release is one forced collection (a few milliseconds with thousands
// of connections live), so it may follow any burst of a few dozen
// handshakes, a start-up's first ones included: otherwise what they left
// stays counted in the process's RSS until the scavenger gets to it, and
// idle memory per connection would read low right after start and high
// after a storm.
const (
	releaseTick  = 250 * time.Millisecond
	releaseAfter = 64
	releaseEvery = 2 * time.Second
	// workersGone is when the HTTP servers' workers that served a burst
	// have exited (MaxIdleWorkerDuration) and their stacks are garbage:
	// a release then returns what the first one could not.
	workersGone = 2*time.Second + releaseTick
)

func newMemReleaser(w *keepalive.Wheel) *memReleaser {
	m := &memReleaser{wheel: w}
	m.timer.Init(m)
	w.Schedule(&m.timer, releaseTick)
	return m
}

func (m *memReleaser) handshake() { m.count.Add(1) }

// Fire runs on the wheel: it must not block, so the collection runs on a
// goroutine of its own.
func (m *memReleaser) Fire(now time.Time) {
	if m.due(now) {
		go release()
	}
	m.wheel.Schedule(&m.timer, releaseTick)
}

// due reports whether a burst has just ended and memory is to be released.
func (m *memReleaser) due(now time.Time) bool {
	n := m.count.Load()
	quiet := n == m.seen
	m.seen = n
	if quiet && n-m.released >= releaseAfter && now.Sub(m.lastFreed) >= releaseEvery {
		m.released, m.lastFreed = n, now
		m.followUp = now.Add(workersGone)
		return true
	}
	if !m.followUp.IsZero() && !now.Before(m.followUp) {
		m.followUp = time.Time{}
		if quiet && n == m.released { // else the next burst's release will do
			m.lastFreed = now
			return true
		}
	}
	return false
}

// release collects twice, then returns the free memory: buffers in
// sync.Pools (fasthttp's header readers above all) survive one collection
// in the pools' victim caches, and only the second frees them.
func release() {
	goruntime.GC()
	debug.FreeOSMemory()
}
