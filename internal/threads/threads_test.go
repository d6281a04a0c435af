package threads

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// parkedThreads leaves n more threads parked in the runtime: goroutines
// locked to their threads block (so each holds one), then unlock and end,
// which leaves the threads idle, as a burst does.
func parkedThreads(n int) {
	var locked sync.WaitGroup
	release := make(chan struct{})
	var ended sync.WaitGroup
	for range n {
		locked.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			runtime.LockOSThread()
			locked.Done()
			<-release
			runtime.UnlockOSThread()
		}()
	}
	locked.Wait()
	close(release)
	ended.Wait()
}

func waitCount(t *testing.T, ok func(n int) bool) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := Count()
		if ok(n) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTrimEndsSurplusThreads(t *testing.T) {
	if Count() < 0 {
		t.Fatal("the runtime does not report its threads")
	}
	// Threads held at once, then parked: 12 of them are more than the
	// runtime needs to run its Ps.
	parkedThreads(16 + 2*runtime.GOMAXPROCS(0))
	keep := Count() - 12
	var total atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Trim(ctx, keep, 20*time.Millisecond, func(n int) { total.Add(int64(n)) })
	}()
	n := waitCount(t, func(n int) bool { return n <= keep })
	cancel()
	<-done
	if n > keep {
		t.Fatalf("%d threads 10s after trimming to %d (ended %d)", n, keep, total.Load())
	}
	if total.Load() == 0 {
		t.Fatal("the count fell with nothing ended")
	}
	// The process still runs goroutines on every P.
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() { defer wg.Done(); time.Sleep(time.Millisecond) }()
	}
	wg.Wait()
}

func TestPolicy(t *testing.T) {
	p := policy{last: 10, busy: -1}
	for _, c := range []struct {
		n, want int
		why     string
	}{
		{12, 0, "at or under keep"},
		{30, 0, "grew since the last check: a burst under way"},
		{40, 0, "still growing"},
		{40, 28, "stopped growing: end the surplus"},
		{40, 0, "ending did not lower the count: those threads are busy"},
		{40, 0, "unchanged since: still busy"},
		{35, 23, "fell: try again"},
		{14, 2, "fell again"},
		{12, 0, "at keep"},
		{200, 0, "grew"},
		{200, maxPerTick, "bounded per check"},
	} {
		if got := p.next(c.n, 12); got != c.want {
			t.Fatalf("n=%d (%s): ended %d, want %d", c.n, c.why, got, c.want)
		}
	}
}
