// Package retry holds the wait between attempts that the Consul watches,
// the self-registration and the certificate storage's locks share.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff returns how long to wait after the n-th failure in a row (n >= 1):
// lo·2^(n−1) capped at hi, drawn uniformly from the upper half of that
// ("equal jitter"), so that many clients failing together do not retry
// together, and the wait still grows.
func Backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	if d > hi || d <= 0 {
		d = hi
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(d-half+1)
}

// Sleep waits for d or until ctx is done, and reports whether the full
// wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
