package balancer

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// Hash is the sticky policy: weighted rendezvous hashing of the connection's
// key, with bounded loads.
//
// Every key ranks all backends of the Set (see Set.AppendPreference); a
// connection goes to the first backend in its key's order that is healthy,
// not already tried and under its load bound. The order depends only on the
// key and on the backends' addresses and weights, so every wsproxy process
// with the same backends sends a key to the same place.
//
// Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
// Bounded Loads", 2018): with L live connections on the Set's healthy
// backends and W their total weight, backend i takes a new connection only
// while it holds fewer than ⌈c·(L+1)·wᵢ/W⌉, c times its weighted share. A
// connection whose first choice is full goes to its key's next choice with
// room: most keys stay put, only the overflow of hot keys moves. The check
// and the count are one atomic step, so concurrent picks cannot overshoot a
// bound. The bound holds when connections arrive; connections closing
// elsewhere can later leave a backend above c times a smaller average, and
// nothing is moved to fix that. If every eligible backend is full (possible
// only when tried backends are excluded), the key's first eligible backend
// takes the connection anyway.
//
// Connections without a key (an empty key) go to the fallback policy.
//
// Cost: one xxhash of the key, then one scan of the Set (n hash mixes, plus
// n atomic loads when bounded); see the package doc for figures.
type Hash struct {
	cMilli   uint64 // load factor ×1000; 0: unbounded
	fallback Policy
}

// MaxLoadFactor is the largest bounded-load factor NewHash accepts.
const MaxLoadFactor = 100

// NewHash returns the Hash policy. loadFactor is the bound c: a backend
// never takes more than c times its share of the live connections. 0
// disables the bound (pure consistent hashing); otherwise it must be
// between 1 and MaxLoadFactor and is used to three decimals. 1.25 is a good
// start: a c close to 1 sends more connections away from their key's first
// choice, a large one bounds little. fallback serves connections without a
// key; nil means NewLeastConn().
func NewHash(loadFactor float64, fallback Policy) (*Hash, error) {
	if loadFactor != 0 && !(loadFactor >= 1 && loadFactor <= MaxLoadFactor) {
		return nil, fmt.Errorf("hash load factor %v: want 0 (unbounded) or between 1 and %d", loadFactor, MaxLoadFactor)
	}
	if fallback == nil {
		fallback = NewLeastConn()
	}
	return &Hash{cMilli: uint64(math.Round(loadFactor * 1000)), fallback: fallback}, nil
}

// LoadFactor returns h's bounded-load factor; 0 means unbounded.
func (h *Hash) LoadFactor() float64 { return float64(h.cMilli) / 1000 }

// Pick implements Policy.
func (h *Hash) Pick(s *Set, key []byte, tried Tried) *Backend {
	if s != nil && len(s.backends) > 0 && len(key) == 0 {
		return h.fallback.Pick(s, key, tried)
	}
	return h.pick(s, key, &tried, true)
}

// Peek implements Policy.
func (h *Hash) Peek(s *Set, key []byte) *Backend {
	if s != nil && len(s.backends) > 0 && len(key) == 0 {
		return h.fallback.Peek(s, key)
	}
	return h.pick(s, key, &Tried{}, false)
}

// pick returns the backend for a non-empty key. With count it counts the
// connection on it, in the same atomic step as the load-bound check;
// without, it only reads the counters.
func (h *Hash) pick(s *Set, key []byte, tried *Tried, count bool) *Backend {
	if s == nil || len(s.backends) == 0 {
		return nil
	}
	var it prefIter
	it.init(s, xxhash.Sum64(key))
	if h.cMilli == 0 {
		for i := it.next(); i >= 0; i = it.next() {
			if b := s.backends[i]; eligible(b, tried) {
				if count {
					b.Acquire()
				}
				return b
			}
		}
		return nil
	}

	var load, weight uint64
	for i, b := range s.backends {
		if !b.live.down.Load() {
			load += uint64(max(b.live.conns.Load(), 0))
			weight += s.weights[i]
		}
	}
	if weight == 0 {
		return nil
	}
	num := h.cMilli * (load + 1) // < 2¹⁷·2⁴⁰
	den := 1000 * weight
	for i := it.next(); i >= 0; i = it.next() {
		b := s.backends[i]
		if !eligible(b, tried) {
			continue
		}
		limit := capacity(num, s.weights[i], den)
		if count && b.tryAcquire(limit) || !count && b.live.conns.Load() < limit {
			return b
		}
	}
	it.reset()
	for i := it.next(); i >= 0; i = it.next() {
		if b := s.backends[i]; eligible(b, tried) {
			if count {
				b.Acquire()
			}
			return b
		}
	}
	return nil
}

// capacity returns ⌈num·w/den⌉, the bound of a backend of weight w.
func capacity(num, w, den uint64) int64 {
	hi, lo := bits.Mul64(num, w)
	if hi >= den { // cannot happen: num·w < 2⁷³ and den ≥ 1000
		return math.MaxInt64
	}
	q, r := bits.Div64(hi, lo, den)
	if r != 0 {
		q++
	}
	return int64(min(q, math.MaxInt64))
}
