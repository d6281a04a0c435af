// Package threads ends the idle OS threads a burst leaves behind.
//
// The Go runtime never ends an idle thread (golang/go#14592). A storm of
// handshakes makes it start many: each time the monitor takes a P from an
// event loop waiting in epoll_wait, it starts a thread to run it, and the
// loops wait there all the time. When the storm is over those threads
// stay, parked, each holding its stacks (tens of KiB), so the proxy's
// memory after a burst depended on how the burst went rather than on the
// connections it holds.
//
// A thread ends when a goroutine that locked itself to it returns without
// unlocking. Trim does that, one goroutine per surplus thread, once the
// count has stopped growing. The goroutine runs on a thread that has a P
// (never on an event loop's, which only ever runs its loop), the thread
// exits, and its P passes to one of the parked ones.
//
// Not for a process that starts children with a parent-death signal
// (SysProcAttr.Pdeathsig): the signal follows the thread that started
// the child, so ending that thread would kill it. wsproxy starts none.
package threads

import (
	"context"
	"runtime"
	"runtime/metrics"
	"time"
)

const metric = "/sched/threads/total:threads"

// maxPerTick bounds the threads ended at once, so that a mistaken count
// cannot have Trim spin.
const maxPerTick = 64

// Count returns the threads the runtime owns, or -1 if it does not say.
func Count() int {
	s := []metrics.Sample{{Name: metric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return -1
	}
	return int(s[0].Value.Uint64())
}

// Trim checks the thread count every interval until ctx ends, and ends
// the threads beyond keep once the count has not grown since the last
// check (a burst still under way would only start them again). ended, if
// not nil, is told how many it ended each time.
//
// If ending threads did not lower the count, the runtime had to start
// others in their place: they are busy, not idle (blocked in system
// calls, say). Trim then waits for the count to change before it tries
// again, rather than trade threads with the runtime every interval.
func Trim(ctx context.Context, keep int, interval time.Duration, ended func(n int)) {
	n := Count()
	if n < 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	p := policy{last: n, busy: -1}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k := p.next(Count(), keep)
		for range k {
			End()
		}
		if k > 0 && ended != nil {
			ended(k)
		}
	}
}

// policy is Trim's judgement, one call per check.
type policy struct {
	last int // the count at the previous check
	busy int // the count before the last ending, or -1
}

// next returns how many threads to end, given the count n now.
func (p *policy) next(n, keep int) int {
	grew := n > p.last
	p.last = n
	if n <= keep || grew || n == p.busy {
		return 0
	}
	// Threads end a moment after their goroutine returns: the result
	// shows at the next check, to be compared with the count now.
	p.busy = n
	return min(n-keep, maxPerTick)
}

// End ends one of the runtime's threads: the one a new goroutine happens
// to run on.
func End() {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		close(done)
		// Returning while locked ends the thread.
	}()
	<-done
}
