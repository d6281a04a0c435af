package limit

import (
	"testing"
	"time"
)

// TestBucket: a burst at once, then the rate; refusals get a Retry-After
// of whole seconds that grows with the backlog, within the cap.
func TestBucket(t *testing.T) {
	t.Parallel()
	if ok, _ := (*Bucket)(nil).Take(time.Now()); !ok {
		t.Fatal("a nil bucket refused")
	}
	b := NewBucket(100, 10)
	now := b.base.Add(time.Hour)
	for i := 0; i < 10; i++ {
		if ok, _ := b.Take(now); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	ok, ra := b.Take(now)
	if ok || ra < time.Second || ra%time.Second != 0 {
		t.Fatalf("past the burst: ok %v, Retry-After %v", ok, ra)
	}
	if ok, _ := b.Take(now.Add(10 * time.Millisecond)); !ok {
		t.Fatal("a token 10ms later was refused")
	}
	// A storm of 1,000 refusals at 100/s spreads them over about 10 s.
	var maxRA time.Duration
	for i := 0; i < 1000; i++ {
		if _, ra := b.Take(now.Add(10 * time.Millisecond)); ra > maxRA {
			maxRA = ra
		}
	}
	if maxRA < 5*time.Second || maxRA > 12*time.Second {
		t.Fatalf("largest Retry-After in a storm of 1,000 at 100/s: %v, want about 10s", maxRA)
	}
}

// TestBucketStormStream replays a reconnect storm on a simulated clock:
// 2,000 clients at once against 200/s with a burst of 200, each refused
// client coming back when its Retry-After says, some a little late as real
// clients are. While the bucket still refuses someone it must admit its
// rate: the virtual queue keeps a stream coming back rather than a second
// storm with gaps between. (proxy's TestHandshakeRateStorm shows the same
// end to end with real sockets, where the machine's own load blurs it.)
func TestBucketStormStream(t *testing.T) {
	t.Parallel()
	const clients, rate, burst = 2000, 200, 200
	b := NewBucket(rate, burst)
	start := b.base.Add(time.Hour)
	// Each client's next attempt, as an offset from start; a min-scan is
	// plenty for 2,000 clients.
	next := make([]time.Duration, clients)
	lag := func(i, round int) time.Duration { // up to 40ms late, deterministic
		return time.Duration((i*7919+round*104729)%41) * time.Millisecond
	}
	for i := range next {
		next[i] = lag(i, 0)
	}
	done := make([]bool, clients)
	var admits []time.Duration
	var lastRefusal time.Duration
	for round := 1; len(admits) < clients; round++ {
		if round > 100*clients {
			t.Fatalf("only %d of %d admitted", len(admits), clients)
		}
		i := -1
		for j := range next {
			if !done[j] && (i < 0 || next[j] < next[i]) {
				i = j
			}
		}
		at := next[i]
		ok, ra := b.Take(start.Add(at))
		if ok {
			done[i] = true
			admits = append(admits, at)
			continue
		}
		if ra < time.Second || ra > maxRetryAfter*time.Second {
			t.Fatalf("Retry-After %v", ra)
		}
		lastRefusal = max(lastRefusal, at)
		next[i] = at + ra + lag(i, round)
	}
	n, last := 0, time.Duration(0)
	for _, a := range admits {
		if a <= lastRefusal {
			n++
			last = max(last, a)
		}
	}
	got := float64(n-burst) / last.Seconds()
	t.Logf("%d admitted while refusing, over %v: %.1f/s after the burst; all in by %v", n, last, got, admits[len(admits)-1])
	if got < rate*0.95 || got > rate*1.02 {
		t.Fatalf("admitted %.1f/s while refusing, want %d/s", got, rate)
	}
}
