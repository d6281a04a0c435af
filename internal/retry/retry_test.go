package retry

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	lo, hi := 100*time.Millisecond, 30*time.Second
	for n := 1; n < 70; n++ {
		full := lo
		for i := 1; i < n && full < hi; i++ {
			full *= 2
		}
		full = min(full, hi)
		for range 50 {
			d := Backoff(n, lo, hi)
			if d < full/2 || d > full {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", n, d, full/2, full)
			}
		}
	}
	// Jitter: not always the same.
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[Backoff(3, lo, hi)] = true
	}
	if len(seen) < 2 {
		t.Fatal("no jitter")
	}
}
