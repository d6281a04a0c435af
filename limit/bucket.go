package limit

import (
	"math"
	"sync/atomic"
	"time"
)

// Bucket is one token bucket shared by every caller: a route's handshake
// rate, whatever the clients' addresses. It holds burst tokens and gains
// perSecond a second; Take takes one. Its state is a few atomic words: no
// lock, no goroutine. A nil *Bucket is no limit.
//
// A refusal comes with a Retry-After that books the client a place in a
// virtual queue: each refusal reserves the next admission slot after
// those already promised (one per token interval), and the client is
// told to come back at it, rounded up to whole seconds (Retry-After has
// no finer unit). Rounding up, never jitter, because a storm's refusals
// share one instant: their returns fall on the whole seconds after it,
// and a jittered first second comes back half empty while the bucket
// refills to no more than its burst, so its tokens are lost for good.
// Slots are booked a tenth faster than the rate, so that each second's
// returning clients outnumber its tokens and the route stays busy, at the
// cost of about one client in ten being told to wait once more. A
// reconnect storm thus returns as a stream of about perSecond clients a
// second instead of as a second storm; TestBucketStormStream replays one.
type Bucket struct {
	interval int64 // ns per token
	ahead    int64 // (burst-1)*interval
	booking  int64 // ns between two promised slots: interval less a tenth
	base     time.Time
	tat      atomic.Int64 // ns since base when the bucket is full again
	slot     atomic.Int64 // ns since base of the last admission slot promised
}

// maxRetryAfter caps the Retry-After a Bucket gives, in seconds: past
// it a client is better off with its own backoff.
const maxRetryAfter = 60

// NewBucket returns a bucket of perSecond tokens a second, burst at once
// (at least 1); nil if perSecond is not positive.
func NewBucket(perSecond float64, burst int) *Bucket {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		return nil
	}
	iv := int64(math.Max(1, math.Round(1e9/perSecond)))
	b := int64(min(max(burst, 1), 1<<20))
	return &Bucket{interval: iv, ahead: (b - 1) * iv, booking: max(1, iv*9/10), base: time.Now()}
}

// Take takes a token at now and reports whether there was one; if not,
// retryAfter is how long the caller should tell the client to wait, in
// whole seconds from 1 to 60.
func (b *Bucket) Take(now time.Time) (ok bool, retryAfter time.Duration) {
	if b == nil {
		return true, 0
	}
	t := int64(now.Sub(b.base))
	for {
		tat := b.tat.Load()
		next := max(tat, t)
		if next-t > b.ahead {
			return false, b.refused(t, next-b.ahead)
		}
		if b.tat.CompareAndSwap(tat, next+b.interval) {
			return true, 0
		}
	}
}

// refused books a slot for a client refused at t (ns since base) whose
// next token comes at token, and returns its Retry-After.
func (b *Bucket) refused(t, token int64) time.Duration {
	var slot int64
	for {
		old := b.slot.Load()
		slot = max(old+b.booking, token)
		if slot-t > maxRetryAfter*int64(time.Second) {
			slot = old // the queue is full: do not push it further
		}
		if b.slot.CompareAndSwap(old, slot) {
			break
		}
	}
	sec := int64(time.Second)
	secs := (slot - t + sec - 1) / sec
	return time.Duration(min(max(secs, 1), maxRetryAfter)) * time.Second
}
