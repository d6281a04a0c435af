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
