package limit

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Bucket is one token bucket shared by every caller: a route's handshake
// rate, whatever the clients' addresses. It holds burst tokens and gains
// perSecond a second; Take takes one. Its state is a few atomic words: no
// lock, no goroutine. A nil *Bucket is no limit.
//
// A refusal comes with a Retry-After that spreads the refused clients
// over about as many seconds as the refusals of the last two seconds
// would take to admit at the rate, with jitter, so that a reconnect storm
// comes back as a stream rather than as a second storm.
type Bucket struct {
	interval int64 // ns per token
	ahead    int64 // (burst-1)*interval
	rate     float64
	base     time.Time
	tat      atomic.Int64 // ns since base when the bucket is full again

	// Refusals in the current one-second window and in the one before.
	window   atomic.Int64 // window number (seconds since base)
	cur      atomic.Int64
	prev     atomic.Int64
	maxRetry int64 // seconds
}

// maxRetryAfter caps the Retry-After a Bucket gives.
const maxRetryAfter = 60

// NewBucket returns a bucket of perSecond tokens a second, burst at once
// (at least 1); nil if perSecond is not positive.
func NewBucket(perSecond float64, burst int) *Bucket {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		return nil
	}
	iv := int64(math.Max(1, math.Round(1e9/perSecond)))
	b := int64(min(max(burst, 1), 1<<20))
	return &Bucket{interval: iv, ahead: (b - 1) * iv, rate: perSecond, base: time.Now(), maxRetry: maxRetryAfter}
}

// Take takes a token at now and reports whether there was one; if not,
// retryAfter is how long the caller should tell the client to wait: whole
// seconds, at least until the next token, jittered over the backlog.
func (b *Bucket) Take(now time.Time) (ok bool, retryAfter time.Duration) {
	if b == nil {
		return true, 0
	}
	t := int64(now.Sub(b.base))
	for {
		tat := b.tat.Load()
		next := max(tat, t)
		if next-t > b.ahead {
			return false, b.refused(t, next-b.ahead-t)
		}
		if b.tat.CompareAndSwap(tat, next+b.interval) {
			return true, 0
		}
	}
}

// refused counts a refusal at t (ns since base) and chooses its
// Retry-After; wait is the time until the next token.
func (b *Bucket) refused(t, wait int64) time.Duration {
	w := t / int64(time.Second)
	if old := b.window.Load(); w != old && b.window.CompareAndSwap(old, w) {
		if w == old+1 {
			b.prev.Store(b.cur.Swap(0))
		} else {
			b.prev.Store(0)
			b.cur.Store(0)
		}
	}
	pending := b.cur.Add(1) + b.prev.Load()
	spread := min(max(int64(math.Ceil(float64(pending)/b.rate)), 1), b.maxRetry)
	least := (wait + int64(time.Second) - 1) / int64(time.Second)
	secs := min(max(least, 1)+rand.Int64N(spread), b.maxRetry)
	return time.Duration(secs) * time.Second
}
