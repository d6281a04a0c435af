package limit

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is a fixed start for fake time.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// allowN calls Allow n times at now and returns how many passed.
func allowN(r *Rate, ip netip.Addr, now time.Time, n int) int {
	ok := 0
	for range n {
		if r.Allow(ip, now) {
			ok++
		}
	}
	return ok
}

func TestRateBurstThenRefill(t *testing.T) {
	t.Parallel()
	r := NewRate(10, 5) // a token every 100ms, 5 at most
	ip := netip.MustParseAddr("192.0.2.1")
	if got := allowN(r, ip, t0, 8); got != 5 {
		t.Fatalf("burst: %d of 8 passed, want 5", got)
	}
	if r.Allow(ip, t0.Add(99*time.Millisecond)) {
		t.Fatal("passed before a token refilled")
	}
	if got := allowN(r, ip, t0.Add(100*time.Millisecond), 3); got != 1 {
		t.Fatalf("after one interval: %d of 3 passed, want 1", got)
	}
	if got := allowN(r, ip, t0.Add(350*time.Millisecond), 5); got != 2 {
		t.Fatalf("after 3.5 intervals: %d of 5 passed, want 2", got)
	}
	// A long idle period refills to burst, not beyond.
	later := t0.Add(time.Hour)
	if got := allowN(r, ip, later, 10); got != 5 {
		t.Fatalf("after an hour: %d of 10 passed, want 5", got)
	}
	// At a steady rate of one request per interval, all pass.
	for i := 1; i <= 50; i++ {
		if !r.Allow(ip, later.Add(time.Duration(i)*100*time.Millisecond)) {
			t.Fatalf("steady rate: request %d refused", i)
		}
	}

	// Fractional rates and burst < 1.
	r = NewRate(0.5, 0)
	if !r.Allow(ip, t0) || r.Allow(ip, t0) {
		t.Fatal("burst 0 is not taken as 1")
	}
	if r.Allow(ip, t0.Add(1999*time.Millisecond)) || !r.Allow(ip, t0.Add(2*time.Second)) {
		t.Fatal("0.5/s does not refill after 2s")
	}
}

// TestRateClockBack: a time before the group's last refills nothing but
// does not break the bucket.
func TestRateClockBack(t *testing.T) {
	t.Parallel()
	r := NewRate(1, 2)
	ip := v4(1)
	if allowN(r, ip, t0, 2) != 2 {
		t.Fatal("burst refused")
	}
	if r.Allow(ip, t0.Add(-time.Hour)) {
		t.Fatal("a time in the past refilled the bucket")
	}
	if !r.Allow(ip, t0.Add(time.Second)) {
		t.Fatal("no refill after the clock came back")
	}
}

// TestRateRealClock: with time.Now (monotonic readings) a burst passes and
// the next request is refused.
func TestRateRealClock(t *testing.T) {
	t.Parallel()
	r := NewRate(0.001, 3)
	ip := v4(1)
	for i := range 3 {
		if !r.Allow(ip, time.Now()) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if r.Allow(ip, time.Now()) {
		t.Fatal("request beyond the burst passed")
	}
}

func TestRateIndependentGroups(t *testing.T) {
	t.Parallel()
	m := netip.MustParseAddr
	r := NewRate(1, 2)
	allowN(r, m("192.0.2.1"), t0, 2)
	if r.Allow(m("192.0.2.1"), t0) || r.Allow(m("::ffff:192.0.2.1"), t0) {
		t.Fatal("exhausted address (or its mapped form) passed")
	}
	if allowN(r, m("192.0.2.2"), t0, 3) != 2 {
		t.Fatal("neighbouring address does not have its own bucket")
	}
	allowN(r, m("2001:db8::1"), t0, 2)
	if r.Allow(m("2001:db8::ffff:2"), t0) {
		t.Fatal("another address in an exhausted /64 passed")
	}
	if allowN(r, m("2001:db8:0:1::1"), t0, 3) != 2 {
		t.Fatal("the next /64 does not have its own bucket")
	}
	if r.Len() != 4 {
		t.Fatalf("Len %d, want 4 groups", r.Len())
	}

	r = NewRate(1, 1, Options{V4Prefix: 16, V6Prefix: 128})
	if !r.Allow(m("10.1.0.1"), t0) || r.Allow(m("10.1.255.255"), t0) {
		t.Fatal("IPv4 /16 not grouped")
	}
	if !r.Allow(m("2001:db8::1"), t0) || !r.Allow(m("2001:db8::2"), t0) {
		t.Fatal("IPv6 /128: neighbours grouped")
	}
}

func TestRateUnlimited(t *testing.T) {
	t.Parallel()
	for _, ps := range []float64{0, -1, math.Inf(-1), math.Inf(1), 2e9} {
		r := NewRate(ps, 1)
		if got := allowN(r, v4(1), t0, 1000); got != 1000 {
			t.Fatalf("perSecond %v: %d of 1000 passed, want all", ps, got)
		}
		if r.Len() != 0 || r.Sweep(t0) != 0 {
			t.Fatalf("perSecond %v: something stored", ps)
		}
	}
}

// TestRateExtremes: tiny rates and huge bursts do not overflow.
func TestRateExtremes(t *testing.T) {
	t.Parallel()
	r := NewRate(1e-300, math.MaxInt)
	if allowN(r, v4(1), t0, 1000) != 1000 {
		t.Fatal("huge burst refused")
	}
	r = NewRate(1e-300, 1)
	if !r.Allow(v4(1), t0) || r.Allow(v4(1), t0.Add(100*365*24*time.Hour)) {
		t.Fatal("a tiny rate refilled within a century")
	}
	r = NewRate(1e9, 1) // one token per nanosecond
	if !r.Allow(v4(1), t0) || r.Allow(v4(1), t0) || !r.Allow(v4(1), t0.Add(1)) {
		t.Fatal("1e9/s does not refill per nanosecond")
	}
}

// TestRateConcurrentBurst: goroutines asking at one instant for one group
// get exactly burst passes.
func TestRateConcurrentBurst(t *testing.T) {
	t.Parallel()
	const burst, goroutines = 7, 100
	r := NewRate(1, burst)
	for round := range 10 {
		now := t0.Add(time.Duration(round) * time.Hour)
		var ok atomic.Int32
		var start, done sync.WaitGroup
		start.Add(1)
		for g := range goroutines {
			done.Go(func() {
				start.Wait()
				if r.Allow(v6(3, uint64(g)), now) {
					ok.Add(1)
				}
			})
		}
		start.Done()
		done.Wait()
		if got := ok.Load(); got != burst {
			t.Fatalf("round %d: %d passed, want %d", round, got, burst)
		}
	}
}

// TestRateBoundedMemory: a flood of 1,000,000 distinct addresses within
// one refill period, none of whose buckets is full again, keeps Len within
// the cap.
func TestRateBoundedMemory(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		maxEntries, limit int
	}{
		{0, DefaultMaxEntries},
		{1000, 1024}, // rounded up to 16 per shard
	} {
		t.Run(strconv.Itoa(tc.maxEntries), func(t *testing.T) {
			t.Parallel()
			testRateBounded(t, tc.maxEntries, tc.limit)
		})
	}
}

// testRateBounded sends one request from each of 1,000,000 distinct
// addresses, 1µs apart so that no bucket is full again within the flood,
// and checks that Len stays within limit and ends close to it.
func testRateBounded(t *testing.T, maxEntries, limit int) {
	r := NewRate(1, 10, Options{MaxEntries: maxEntries})
	const n = 1_000_000
	for i := range n {
		if !r.Allow(v4(i), t0.Add(time.Duration(i)*time.Microsecond)) {
			t.Fatalf("a new address was refused")
		}
		if i%100_000 == 0 && r.Len() > limit {
			t.Fatalf("Len %d after %d addresses, want <= %d", r.Len(), i+1, limit)
		}
	}
	if got := r.Len(); got > limit || got < limit*9/10 {
		t.Fatalf("Len %d after %d addresses, want at most %d and close to it", got, n, limit)
	}
}

// TestRateEvictsFullest: at the cap, a new group evicts a fuller bucket
// before an exhausted one. With 8 entries per shard the sample covers the
// whole shard, so the exhausted group is never the victim.
func TestRateEvictsFullest(t *testing.T) {
	t.Parallel()
	r := NewRate(1, 3, Options{MaxEntries: numShards * evictSample})
	victim := netip.MustParseAddr("203.0.113.7")
	allowN(r, victim, t0, 3) // bucket empty: full again at t0+3s
	for i := range 20_000 {
		r.Allow(v4(i), t0) // one token taken: full again at t0+1s
	}
	if got := r.Len(); got != numShards*evictSample {
		t.Fatalf("Len %d, want %d (every shard at its cap)", got, numShards*evictSample)
	}
	if r.Allow(victim, t0) {
		t.Fatal("the exhausted group was evicted before fuller ones")
	}
}

// TestRateSweep: full buckets are dropped, by Sweep and as new groups
// arrive, while buckets that are not full are kept below the cap.
func TestRateSweep(t *testing.T) {
	t.Parallel()
	const n = 10_000
	interval := 100 * time.Millisecond
	r := NewRate(10, 5)
	for i := range n {
		r.Allow(v4(i), t0)
	}
	if r.Len() != n {
		t.Fatalf("Len %d, want %d", r.Len(), n)
	}
	// Nothing is full yet: a second wave at the same instant keeps them
	// all (the cap is far away).
	for i := range n {
		r.Allow(v4(n+i), t0)
	}
	if r.Len() != 2*n {
		t.Fatalf("Len %d after a second wave, want %d: a live bucket was dropped", r.Len(), 2*n)
	}
	if got := r.Sweep(t0.Add(interval - 1)); got != 0 {
		t.Fatalf("Sweep before a refill removed %d, want 0", got)
	}
	// One interval on, every bucket is full again; a third wave of new
	// groups sweeps them out as it arrives. A shard sweeps when its map
	// has doubled since its last sweep: here at about 624 entries per shard
	// (twice what the Sweep above left), which this wave of about 468 per
	// shard crosses; after that every full bucket is gone.
	later := t0.Add(interval)
	for i := range 3 * n {
		r.Allow(v4(2*n+i), later)
	}
	if got := r.Len(); got != 3*n {
		t.Fatalf("Len %d after a wave once the others were full, want %d (the new wave only)", got, 3*n)
	}
	// Sweep drops the rest once they are full.
	r.Sweep(later.Add(interval))
	if r.Len() != 0 {
		t.Fatalf("Len %d after Sweep, want 0", r.Len())
	}

	// An exhausted bucket survives a sweep until it is full again.
	ip := v4(1)
	allowN(r, ip, later, 5)
	if got := r.Sweep(later.Add(5*interval - 1)); got != 0 || r.Allow(ip, later) {
		t.Fatalf("Sweep removed %d before the bucket was full, or it refilled", got)
	}
	if got := r.Sweep(later.Add(5 * interval)); got != 1 || r.Len() != 0 {
		t.Fatalf("Sweep removed %d once full, Len %d; want 1, 0", got, r.Len())
	}
}

// TestRateRace: concurrent Allow on overlapping groups with the real clock,
// with Len and Sweep alongside.
func TestRateRace(t *testing.T) {
	t.Parallel()
	r := NewRate(1000, 10, Options{MaxEntries: 640})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 5000 {
				switch {
				case i%500 == 0:
					r.Sweep(time.Now())
				case i%100 == 0:
					if r.Len() > 640 {
						t.Errorf("Len %d over the cap", r.Len())
					}
				case i%2 == 0:
					r.Allow(v4(i%50), time.Now())
				default:
					r.Allow(v6(g*10000+i, 1), time.Now())
				}
			}
		})
	}
	wg.Wait()
	if r.Len() > 640 {
		t.Fatalf("Len %d over the cap", r.Len())
	}
}
