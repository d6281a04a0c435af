package limit

import (
	"math"
	"net/netip"
	"sync"
	"time"
	"unsafe"
)

// Rate limits how often each client group (see Options) may pass: a token
// bucket per group that holds up to burst tokens and refills at perSecond
// tokens a second, each Allow taking one. Create one with NewRate; an empty
// Rate is not valid.
//
// A Rate is safe for concurrent use. Its state is split into 64 shards, each
// with its own lock, and no goroutine runs behind it: all upkeep happens
// inside Allow (and Sweep).
//
// # Memory
//
// A bucket that is full again behaves exactly like one never used, so its
// entry is dropped without losing anything. Dropping is incremental and
// paid for by the arrival of new groups: when a shard's map has doubled
// since its last sweep, the shard is swept of full buckets, so a shard holds
// at most about twice the groups whose buckets are not full (below its cap),
// at O(1) cost per new group on average. Allow for a group that already has
// an entry is one map lookup and store.
//
// On top of that each shard holds at most MaxEntries/64 entries (see
// Options), whatever arrives. When a new group finds its shard at that cap,
// the shard is first swept if it has not been for one refill period (the
// time an empty bucket takes to fill, burst/perSecond), then, if still full,
// one entry is evicted: the fullest (the one that would be full again
// soonest) of 8 entries sampled from a random place in the map.
//
// Evicting fails open for the evicted group only: its bucket is forgotten,
// so its next request finds a full bucket. The alternatives were worse.
// Failing closed (refusing new groups while the table is full) would let a
// flood from many addresses lock out every legitimate new user. Failing open
// for the new group (letting it pass untracked) would let one address
// bypass the limit entirely for as long as a flood keeps the table full.
// Evicting the fullest sampled entry loses the least state, and a flood
// gains little from it: each address it uses gets at most one burst per
// eviction, about what it would get from a fresh address anyway, while the
// per-IP connection cap and the total caps still hold.
type Rate struct {
	unlimited bool
	interval  int64 // nanoseconds per token
	ahead     int64 // (burst-1)*interval: how far a group's tat may run ahead of now and still pass
	refill    int64 // burst*interval: time for an empty bucket to fill
	perShard  int   // entry cap of one shard
	minSweep  int   // smallest sweep threshold
	base      time.Time
	g         grouping
	shards    [numShards]rateShard
}

// The buckets are kept in GCRA form: one "theoretical arrival time" (tat)
// per group, in nanoseconds since Rate.base. A request at t passes if
// max(tat, t) - t <= ahead, and then tat becomes max(tat, t) + interval. The
// bucket is full when tat <= t, which is also what a missing entry means.
type rateShardData struct {
	mu        sync.Mutex
	m         map[key]int64 // group -> tat
	sweepAt   int           // sweep when len(m) reaches this
	lastSweep int64         // time of the last sweep
}

type rateShard struct {
	rateShardData
	_ [cacheLine - unsafe.Sizeof(rateShardData{})%cacheLine]byte
}

// evictSample is how many entries an eviction looks at.
const evictSample = 8

// maxRefill bounds burst*interval so that time arithmetic cannot overflow:
// 2^62 ns is about 146 years.
const maxRefill = 1 << 62

// NewRate returns a Rate that lets each client group make burst requests at
// once and perSecond requests a second after that. burst < 1 is taken as 1.
// If perSecond <= 0 (or so large that a token takes under a nanosecond)
// there is no limit: Allow always reports true and nothing is stored.
//
// opts is optional; the zero Options (or none) groups IPv4 by /32 and IPv6
// by /64 and tracks at most DefaultMaxEntries groups. NewRate panics if
// perSecond is NaN, if more than one Options is given or if it fails
// Validate.
func NewRate(perSecond float64, burst int, opts ...Options) *Rate {
	if math.IsNaN(perSecond) {
		panic("limit: NaN rate")
	}
	o := withDefaults(opts)
	r := &Rate{g: newGrouping(o), base: time.Now()}
	interval := 1e9 / perSecond
	if perSecond <= 0 || interval < 1 {
		r.unlimited = true
		return r
	}
	b := min(max(int64(burst), 1), maxRefill)
	r.interval = int64(min(math.Round(interval), float64(maxRefill/b)))
	r.ahead = (b - 1) * r.interval
	r.refill = b * r.interval
	r.perShard = (o.MaxEntries + numShards - 1) / numShards
	r.minSweep = min(64, r.perShard)
	for i := range r.shards {
		s := &r.shards[i]
		s.m = make(map[key]int64)
		s.sweepAt = r.minSweep
	}
	return r
}

// Allow takes a token from ip's group's bucket at time now and reports
// whether there was one. Pass time.Now(): its monotonic reading keeps the
// buckets right across wall-clock changes. Tests may pass any times; for
// exact results they should not go backwards for a group, as a time earlier
// than the group's last one refills nothing.
//
// Allow does not allocate when the group already has an entry; a new group
// costs one map insert, and sometimes a sweep or an eviction in its shard
// (see Rate).
func (r *Rate) Allow(ip netip.Addr, now time.Time) bool {
	if r.unlimited {
		return true
	}
	k := r.g.key(ip)
	t := int64(now.Sub(r.base))
	s := &r.shards[r.g.shard(k)]
	s.mu.Lock()
	tat, ok := s.m[k]
	if !ok {
		// A missing entry is a full bucket: the request passes.
		r.insert(s, k, t)
		s.mu.Unlock()
		return true
	}
	tat = max(tat, t)
	if tat-t > r.ahead {
		s.mu.Unlock()
		return false
	}
	s.m[k] = tat + r.interval
	s.mu.Unlock()
	return true
}

// insert records a first request at t for k, which s does not hold, making
// room first if s is at its thresholds. s.mu is held.
func (r *Rate) insert(s *rateShard, k key, t int64) {
	n := len(s.m)
	// Sweep when the map has doubled since the last sweep, or when it is
	// at the cap and a refill period has passed since (or the clock went
	// back), so that full buckets go before any live one is evicted.
	if n >= s.sweepAt ||
		(n >= r.perShard && (t-s.lastSweep >= r.refill || t < s.lastSweep)) {
		r.sweep(s, t)
		n = len(s.m)
	}
	if n >= r.perShard {
		evict(s, t)
	}
	s.m[k] = t + r.interval
}

// sweep deletes s's full buckets at t and returns how many. s.mu is held.
// It sets the next threshold at twice the entries left, so that sweeping
// costs O(1) per inserted entry on average.
func (r *Rate) sweep(s *rateShard, t int64) int {
	n := 0
	for k, tat := range s.m {
		if tat <= t {
			delete(s.m, k)
			n++
		}
	}
	s.lastSweep = t
	s.sweepAt = max(r.minSweep, 2*len(s.m))
	return n
}

// evict makes room for one entry in s at t: it deletes the full buckets
// among evictSample entries taken from a random place in the map, or, if
// there are none, the fullest of them. s.mu is held and s is not empty.
func evict(s *rateShard, t int64) {
	var victim key
	oldest := int64(math.MaxInt64)
	freed := false
	seen := 0
	for k, tat := range s.m { // Go starts each range at a random place
		if tat <= t {
			delete(s.m, k)
			freed = true
		} else if tat < oldest {
			victim, oldest = k, tat
		}
		if seen++; seen == evictSample {
			break
		}
	}
	if !freed {
		delete(s.m, victim)
	}
}

// Sweep deletes every full bucket at now, in every shard, and returns how
// many it deleted. Allow already sweeps as it goes; Sweep is for a caller
// that wants stale entries gone after a burst of traffic has passed (for an
// accurate Len, say), from a timer it already runs. Go maps do not shrink,
// so the memory stays at the peak, which the cap bounds. It locks one shard
// at a time.
func (r *Rate) Sweep(now time.Time) int {
	if r.unlimited {
		return 0
	}
	t := int64(now.Sub(r.base))
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += r.sweep(s, t)
		s.mu.Unlock()
	}
	return n
}

// Len returns how many groups have an entry, that is a bucket that may not
// be full. It never exceeds MaxEntries rounded up to a multiple of 64. It
// locks each shard in turn, so under concurrent use it is a close estimate,
// not a snapshot.
func (r *Rate) Len() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
