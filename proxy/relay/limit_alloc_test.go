//go:build linux && !race

package relay

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestLoopLimitedForwardsWithoutAllocating: a message-rate limit that does
// not bind, and the live figures' flush, add no allocation per forwarded
// frame. The test runs for over a second, so flushes happen inside it.
func TestLoopLimitedForwardsWithoutAllocating(t *testing.T) {
	var flushed atomic.Uint64
	h := startHarness(t, limitedConfig(&flushed), nil, nil)
	round := roundTrip(t, h, 64)
	round() // warm the pools
	start := time.Now()
	runs := 0
	for time.Since(start) < 1500*time.Millisecond {
		if n := testing.AllocsPerRun(200, round); n != 0 {
			t.Fatalf("%v allocations per round trip, want 0", n)
		}
		runs++
	}
	if flushed.Load() == 0 {
		t.Fatal("no flush of the live figures during the test")
	}
	h.client.Close()
	h.backend.Close()
	h.wait(t)
}
