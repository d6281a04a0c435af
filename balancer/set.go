package balancer

import (
	"cmp"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Set is an immutable snapshot of a route's backends, with the tables the
// policies need precomputed. A Set never changes after NewSet returns, so
// any number of goroutines may pick from it at once without locking.
//
// The owner of a route (the proxy) keeps its current Set in an
// atomic.Pointer[Set]: discovery builds a new Set and Stores it, each new
// connection Loads it once and uses that snapshot for its pick and its
// retries. No lock shared by all connections is taken on that path. Live
// state (connection counts, health) is not part of the snapshot: it lives on
// the Backends, which successive Sets share (see Registry).
type Set struct {
	backends []*Backend // sorted by Addr, distinct addresses
	params   []hashParams
	weights  []uint64
	cum      []uint64 // cum[i] = weights[0] + … + weights[i]
	total    uint64   // sum of weights
	equal    bool     // every weight is the same: rank by hash alone

	rr atomic.Pointer[[]uint32] // round-robin order, built on first use
}

// hashParams is what scoring a key against one backend needs, kept apart
// from the rest so that a scan over all backends reads 16 bytes each.
type hashParams struct {
	seed uint64 // xxhash64 of Addr
	invW uint64 // ⌊(2⁶⁴−1)/weight⌋
}

// NewSet returns a Set of the given backends. The order of backends does not
// matter: the Set sorts them by Addr, so the same addresses and weights give
// the same Set, and the same choices, whatever order discovery found them
// in. Nil entries are skipped; of several backends with the same Addr, the
// one with the highest weight is kept. Weights are clamped to [1,
// MaxWeight]. NewSet does not keep backends.
func NewSet(backends []*Backend) *Set {
	bs := make([]*Backend, 0, len(backends))
	for _, b := range backends {
		if b != nil {
			bs = append(bs, b)
		}
	}
	slices.SortStableFunc(bs, func(x, y *Backend) int {
		if c := strings.Compare(x.Addr, y.Addr); c != 0 {
			return c
		}
		return cmp.Compare(y.Weight, x.Weight)
	})
	bs = slices.CompactFunc(bs, func(x, y *Backend) bool { return x.Addr == y.Addr })
	bs = slices.Clip(bs)

	s := &Set{
		backends: bs,
		params:   make([]hashParams, len(bs)),
		weights:  make([]uint64, len(bs)),
		cum:      make([]uint64, len(bs)),
		equal:    true,
	}
	for i, b := range bs {
		w := uint64(min(max(b.Weight, 1), MaxWeight))
		s.weights[i] = w
		s.total += w
		s.cum[i] = s.total
		s.params[i] = hashParams{seed: xxhash.Sum64String(b.Addr), invW: ^uint64(0) / w}
		if w != s.weights[0] {
			s.equal = false
		}
	}
	return s
}

// Len returns the number of backends in s.
func (s *Set) Len() int { return len(s.backends) }

// Backends returns s's backends, sorted by Addr. The slice is s's own: do
// not modify it.
func (s *Set) Backends() []*Backend { return s.backends }

// Lookup returns key's first choice in s: the backend that Hash picks when
// every backend is healthy and under its load bound. It ignores health and
// load and has no side effect, which makes it the function to call to find
// where a key's connections go (a publisher looking for a user's backend),
// bearing in mind that bounded loads may have sent an overflow connection
// to the key's next choice. It returns nil if s is empty.
func (s *Set) Lookup(key []byte) *Backend {
	if len(s.backends) == 0 {
		return nil
	}
	kh := xxhash.Sum64(key)
	best, bestScore := 0, uint64(0)
	for i, p := range s.params {
		h := mix(kh, p.seed)
		var sc uint64
		if s.equal {
			sc = ^h
		} else {
			sc = mulHi(neglog2(h|1), p.invW)
		}
		if i == 0 || sc < bestScore {
			best, bestScore = i, sc
		}
	}
	return s.backends[best]
}

// AppendPreference appends all of s's backends to dst in key's preference
// order (first choice first) and returns the extended slice. Hash walks this
// order when a backend is unhealthy, already tried or full. It does not
// allocate when dst has room; it costs O(n log n) hash evaluations and is
// meant for diagnostics and tests, not for the pick path.
func (s *Set) AppendPreference(dst []*Backend, key []byte) []*Backend {
	kh := xxhash.Sum64(key)
	start := len(dst)
	dst = append(dst, s.backends...)
	slices.SortFunc(dst[start:], func(x, y *Backend) int {
		i, _ := slices.BinarySearchFunc(s.backends, x.Addr, cmpAddr)
		j, _ := slices.BinarySearchFunc(s.backends, y.Addr, cmpAddr)
		if c := cmp.Compare(s.score(kh, i), s.score(kh, j)); c != 0 {
			return c
		}
		return cmp.Compare(i, j)
	})
	return dst
}

func cmpAddr(b *Backend, addr string) int { return strings.Compare(b.Addr, addr) }

// score returns backend i's rank for the key hashed to kh: lower is
// preferred, ties go to the lower index (the smaller Addr).
//
// This is weighted rendezvous hashing: with h the 64-bit mix of key and
// backend read as u = h/2⁶⁴ in (0,1), the score is −log2(u)/weight, an
// exponential variable of rate proportional to weight, so backend i comes
// first for a fraction weight_i/Σweight of keys. The logarithm is computed in integer
// fixed point (neglog2) so that every platform gets the same bits. When all
// weights are equal the score is simply the complement of h, which orders
// backends the same way without the logarithm.
func (s *Set) score(kh uint64, i int) uint64 {
	p := s.params[i]
	h := mix(kh, p.seed)
	if s.equal {
		return ^h
	}
	return mulHi(neglog2(h|1), p.invW)
}

// rrOrder returns the smooth weighted round-robin order of s, building it
// on first use. Concurrent first uses may each build it; one wins.
func (s *Set) rrOrder() []uint32 {
	if p := s.rr.Load(); p != nil {
		return *p
	}
	order := buildRROrder(s.weights)
	s.rr.CompareAndSwap(nil, &order)
	return *s.rr.Load()
}

// sample maps r, a uniform random 64-bit value, to a backend index with
// probability proportional to weight.
func (s *Set) sample(r uint64) int {
	n := uint64(len(s.backends))
	if s.equal {
		return int(mulHi(r, n))
	}
	x := mulHi(r, s.total) // uniform in [0, total)
	i, _ := slices.BinarySearch(s.cum, x+1)
	return i
}
