package relay

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// MessageRate is a limit on the data messages one side may send: a token
// bucket that holds Burst tokens and gains one every Interval. A message
// takes its token when its first frame arrives (the Tracker counts it at
// the message boundary), so a message is never cut in two by the limit.
// The zero value is no limit.
type MessageRate struct {
	// Interval is the time between two tokens (DURATION/N for "N per
	// DURATION"); 0 is no limit.
	Interval time.Duration
	// Burst is how many messages may pass at once after a quiet spell;
	// below 1 it is taken as 1.
	Burst int
}

// On reports whether the rate limits anything.
func (r MessageRate) On() bool { return r.Interval > 0 }

// LimitAction is what happens to a direction whose sender is over its
// message rate.
type LimitAction uint8

const (
	// LimitClose closes both sides with 1008 (policy violation) and a
	// reason naming the side; the message over the limit is not forwarded.
	LimitClose LimitAction = iota
	// LimitPause stops reading the direction until a token returns, so
	// TCP pushes back on the sender. No message is lost or reordered.
	LimitPause
)

// maxLimitBurst bounds a burst so that the bucket's arithmetic (burst ×
// interval in nanoseconds) cannot overflow for any interval the config
// accepts.
const maxLimitBurst = 1 << 20

// gcra is a token bucket in "theoretical arrival time" form: tat is when
// the bucket would be full again; the bucket holds burst tokens at most,
// one every interval. Times are unix nanoseconds.
type gcra struct {
	interval int64
	ahead    int64 // (burst-1)*interval: how far tat may run past now
}

func newGCRA(r MessageRate) gcra {
	b := int64(min(max(r.Burst, 1), maxLimitBurst))
	return gcra{interval: int64(r.Interval), ahead: (b - 1) * int64(r.Interval)}
}

// avail is the whole tokens in a bucket whose tat is tat, at now.
func (g *gcra) avail(tat, now int64) uint64 {
	room := now + g.ahead + g.interval - max(tat, now)
	if room < g.interval {
		return 0
	}
	return uint64(room / g.interval)
}

// next is when a bucket whose tat is tat has a token again (now if it has).
func (g *gcra) next(tat, now int64) int64 { return max(now, tat-g.ahead) }

// charge is tat after n messages at now. A bucket may go into debt (past
// ahead): that happens only to a shared bucket raced by two loops, and
// the debt is paid back in time like any other token.
func (g *gcra) charge(tat, now int64, n uint64) int64 {
	return max(tat, now) + int64(n)*g.interval
}

// ownBucket is one direction's bucket: only that direction's driver
// touches it, so it needs no lock.
type ownBucket struct {
	g   gcra
	tat int64
}

// sharedBucket is one direction's bucket of a hash key, shared by every
// connection with that key, possibly on several loops: its state is one
// atomic word.
type sharedBucket struct {
	g   gcra
	tat atomic.Int64
}

func (b *sharedBucket) avail(now int64) uint64 { return b.g.avail(b.tat.Load(), now) }

func (b *sharedBucket) take(n uint64, now int64) {
	for {
		old := b.tat.Load()
		if b.tat.CompareAndSwap(old, b.g.charge(old, now, n)) {
			return
		}
	}
}

// KeyBucket holds the message-rate buckets of one hash key, one per
// direction, shared by all of the key's connections on this proxy. Get
// one from KeyLimits.Acquire and give it back with Release.
type KeyBucket struct {
	key  string
	refs int // under KeyLimits.mu
	dir  [2]sharedBucket
}

// KeyLimits are the per-key message rates of one route: the buckets of
// every key with a live connection. A key's bucket is forgotten when its
// last connection ends, so memory follows live connections; a key that
// reconnects gets a full bucket (the handshake rates bound how often).
// It is safe for concurrent use.
type KeyLimits struct {
	rates [2]MessageRate
	mu    sync.Mutex
	m     map[string]*KeyBucket
}

// NewKeyLimits returns the per-key limits for messages from clients and
// from backends; nil if neither is on.
func NewKeyLimits(fromClient, fromBackend MessageRate) *KeyLimits {
	if !fromClient.On() && !fromBackend.On() {
		return nil
	}
	return &KeyLimits{rates: [2]MessageRate{fromClient, fromBackend}, m: map[string]*KeyBucket{}}
}

// Acquire returns key's buckets, creating them full; nil when k is nil or
// the key is empty (a connection without a key is limited per connection
// only).
func (k *KeyLimits) Acquire(key string) *KeyBucket {
	if k == nil || key == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.m[key]
	if b == nil {
		b = &KeyBucket{key: key}
		for i := range b.dir {
			b.dir[i].g = newGCRA(k.rates[i])
		}
		k.m[key] = b
	}
	b.refs++
	return b
}

// Release gives back a bucket from Acquire (nil is ignored).
func (k *KeyLimits) Release(b *KeyBucket) {
	if k == nil || b == nil {
		return
	}
	k.mu.Lock()
	if b.refs--; b.refs <= 0 {
		delete(k.m, b.key)
	}
	k.mu.Unlock()
}

// Len is how many keys have buckets.
func (k *KeyLimits) Len() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// dirLimit is the message-rate state of one direction of a session. It
// belongs to that direction's driver (the loop, or the direction's
// goroutine).
type dirLimit struct {
	own    *ownBucket    // nil: no per-connection limit
	shared *sharedBucket // nil: no per-key limit
	pause  bool
	off    bool // the session is closing: the rest passes unlimited

	given uint64 // the Budget handed to the Tracker by begin
	at    int64  // when begin ran

	// Loop driver only: bytes read past the limit, forwarded when tokens
	// return; the direction is not read meanwhile.
	held  *[]byte
	heldN int
	// wake brings the loop back when tokens return: the timing wheel's
	// tick (100ms) is too coarse for a rate whose burst fills sooner. Made
	// at the first pause and reused.
	wake *time.Timer
}

// newDirLimit returns the limit of one direction, nil if it has none.
func newDirLimit(own MessageRate, shared *sharedBucket, action LimitAction) *dirLimit {
	if !own.On() && (shared == nil || shared.g.interval <= 0) {
		return nil
	}
	l := &dirLimit{pause: action == LimitPause}
	if own.On() {
		l.own = &ownBucket{g: newGCRA(own)}
	}
	if shared != nil && shared.g.interval > 0 {
		l.shared = shared
	}
	return l
}

// begin settles what the last Advance used and gives t the tokens
// available at now.
func (l *dirLimit) begin(t *Tracker, now int64) {
	l.settle(t)
	if l.off {
		t.Limited = false
		return
	}
	n := uint64(math.MaxUint64)
	if l.own != nil {
		n = l.own.g.avail(l.own.tat, now)
	}
	if l.shared != nil {
		n = min(n, l.shared.avail(now))
	}
	t.Budget, l.given, l.at = n, n, now
}

// settle charges the buckets for the messages started since begin.
func (l *dirLimit) settle(t *Tracker) {
	used := l.given - t.Budget
	if used == 0 || !t.Limited {
		return
	}
	l.given = t.Budget
	if l.own != nil {
		l.own.tat = l.own.g.charge(l.own.tat, l.at, used)
	}
	if l.shared != nil {
		l.shared.take(used, l.at)
	}
}

// nextToken is when both buckets have a token again.
func (l *dirLimit) nextToken(now int64) int64 {
	at := now
	if l.own != nil {
		at = max(at, l.own.g.next(l.own.tat, now))
	}
	if l.shared != nil {
		at = max(at, l.shared.g.next(l.shared.tat.Load(), now))
	}
	return at
}

// resumeBatch is how long a paused direction lets tokens gather before it
// is read again (unless its bucket would fill sooner), so that a sender
// over its rate costs a wakeup per batch rather than one per message.
const resumeBatch = int64(10 * time.Millisecond)

// wakeAt is when a paused direction should look again: once a token is
// back, after resumeBatch, but before a bucket fills and tokens are lost
// to its cap.
func (l *dirLimit) wakeAt(now int64) int64 {
	full := now + resumeBatch
	if l.own != nil {
		full = min(full, l.own.tat)
	}
	if l.shared != nil {
		full = min(full, l.shared.tat.Load())
	}
	return max(l.nextToken(now), full)
}

// hold keeps rest (bytes read past the limit) in a buffer from pool.
func (l *dirLimit) hold(rest []byte, pool *Pool) {
	var b *[]byte
	if len(rest) <= pool.size {
		b = pool.get()
	} else {
		// Bytes read before the relay started can exceed a pool buffer.
		s := make([]byte, len(rest))
		b = &s
	}
	l.heldN = copy(*b, rest)
	l.held = b
}

// limitReason is the reason of the 1008 close for a side over its rate.
func limitReason(from Side) string {
	if from == SideBackend {
		return "backend message rate limit exceeded"
	}
	return "message rate limit exceeded"
}

// newLimits builds the limits of both directions of s: index 0 is
// client to backend.
func (s *Session) newLimits() (c2b, b2c *dirLimit) {
	cfg := s.cfg
	var sc, sb *sharedBucket
	if k := s.Keys; k != nil {
		sc, sb = &k.dir[0], &k.dir[1]
	}
	return newDirLimit(cfg.ClientRate, sc, cfg.OverLimit), newDirLimit(cfg.BackendRate, sb, cfg.OverLimit)
}

// noteLimitClose records which side's rate closed the session.
func (s *Session) noteLimitClose(from Side) {
	s.closeMu.Lock()
	if s.LimitClosed == SideNone {
		s.LimitClosed = from
	}
	s.closeMu.Unlock()
}
