package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// LeastConn is a non-sticky policy: the eligible backend with the fewest
// live WebSocket connections for its weight, that is the lowest
// (conns+1)/weight (the load it would have after this connection, which
// also makes an idle heavy backend win over an idle light one). Ties are
// broken at random. It ignores the key. Cost: one scan of the Set, reading
// each backend's counter and health (one cache line per backend).
type LeastConn struct{}

// NewLeastConn returns the LeastConn policy.
func NewLeastConn() *LeastConn { return &LeastConn{} }

// Pick implements Policy.
func (*LeastConn) Pick(s *Set, _ []byte, tried Tried) *Backend {
	if s == nil {
		return nil
	}
	i := leastLoaded(s, &tried)
	if i < 0 {
		return nil
	}
	b := s.backends[i]
	b.Acquire()
	return b
}

// Peek implements Policy.
func (*LeastConn) Peek(s *Set, _ []byte) *Backend {
	if s == nil {
		return nil
	}
	if i := leastLoaded(s, &Tried{}); i >= 0 {
		return s.backends[i]
	}
	return nil
}

// leastLoaded returns the index of the eligible backend of s with the
// lowest (conns+1)/weight, ties broken uniformly at random, or −1.
func leastLoaded(s *Set, tried *Tried) int {
	best := -1
	var bestC, bestW, ties uint64
	var r rng
	for i, b := range s.backends {
		if !eligible(b, tried) {
			continue
		}
		c, w := uint64(max(b.live.conns.Load(), 0))+1, s.weights[i]
		if best < 0 {
			best, bestC, bestW, ties = i, c, w, 1
			continue
		}
		switch x, y := c*bestW, bestC*w; {
		case x < y:
			best, bestC, bestW, ties = i, c, w, 1
		case x == y:
			// Reservoir sampling over the tied backends.
			if ties == 1 {
				r = newRNG()
			}
			ties++
			if mulHi(r.next(), ties) == 0 { // probability 1/ties
				best, bestC, bestW = i, c, w
			}
		}
	}
	return best
}

// lessLoaded reports whether backend i of s has a lower (conns+1)/weight
// than backend j.
func lessLoaded(s *Set, i, j int) bool {
	ci := uint64(max(s.backends[i].live.conns.Load(), 0)) + 1
	cj := uint64(max(s.backends[j].live.conns.Load(), 0)) + 1
	return ci*s.weights[j] < cj*s.weights[i]
}

// RoundRobin is a non-sticky policy: smooth weighted round robin. Each Set
// has a fixed order in which every backend appears as often as its weight
// (after dividing the weights by their greatest common divisor), spread out
// evenly: weights 3,2,1 give a b a c b a (as nginx's smooth weighted round
// robin does), not a a a b b c. A pick takes
// the next position of that order with one atomic increment, and skips
// ineligible backends. The counter is the policy's, so a Set swap does not
// restart the cycle, and it starts at a random position so that proxies
// started together do not send their first connections to the same
// backend. It ignores the key.
//
// The order is built on a Set's first round-robin pick, in O(W log n) for
// a total weight W, and holds W entries; weights whose reduced total exceeds
// 65,536 are scaled down to about that, which makes their proportions
// approximate.
type RoundRobin struct {
	next atomic.Uint64
}

// NewRoundRobin returns the RoundRobin policy.
func NewRoundRobin() *RoundRobin {
	p := &RoundRobin{}
	p.next.Store(rand.Uint64())
	return p
}

// Pick implements Policy.
func (p *RoundRobin) Pick(s *Set, _ []byte, tried Tried) *Backend {
	if s == nil || len(s.backends) == 0 {
		return nil
	}
	b := p.at(s, p.next.Add(1), &tried)
	if b != nil {
		b.Acquire()
	}
	return b
}

// Peek implements Policy: the backend of the position the next Pick takes,
// read without advancing the counter.
func (p *RoundRobin) Peek(s *Set, _ []byte) *Backend {
	if s == nil || len(s.backends) == 0 {
		return nil
	}
	return p.at(s, p.next.Load()+1, &Tried{})
}

// at returns the first eligible backend from position k of s's order on,
// without counting a connection on it.
func (p *RoundRobin) at(s *Set, k uint64, tried *Tried) *Backend {
	order := s.rrOrder()
	size := uint64(len(order))
	pos := k % size
	// Skip ineligible entries, but not forever: with most backends down a
	// scan of the Set is cheaper than a walk of the whole order.
	for range min(size, uint64(2*len(s.backends)+MaxTries)) {
		if b := s.backends[order[pos]]; eligible(b, tried) {
			return b
		}
		if pos++; pos == size {
			pos = 0
		}
	}
	n := uint64(len(s.backends))
	for j := range n {
		if b := s.backends[(k+j)%n]; eligible(b, tried) {
			return b
		}
	}
	return nil
}

// maxRROrder is the largest round-robin order a Set builds.
const maxRROrder = 1 << 16

// buildRROrder returns the smooth weighted round-robin order for weights:
// backend i appears weights[i]/g times (g their greatest common divisor),
// at the positions where it is most behind its share. This is the
// Sainte-Laguë apportionment: the next entry goes to the backend with the
// lowest (2kᵢ+1)/wᵢ, kᵢ being its entries so far, ties to the lower index.
func buildRROrder(weights []uint64) []uint32 {
	g := uint64(0)
	for _, w := range weights {
		g = gcd(g, w)
	}
	w := make([]uint64, len(weights))
	var total uint64
	for i, x := range weights {
		w[i] = x / g
		total += w[i]
	}
	if total > maxRROrder {
		scaled := uint64(0)
		for i := range w {
			w[i] = max(1, w[i]*maxRROrder/total)
			scaled += w[i]
		}
		total = scaled
	}

	// A binary min-heap of backend indices keyed by (2kᵢ+1)/wᵢ.
	k := make([]uint64, len(w))
	less := func(i, j int) bool {
		x, y := (2*k[i]+1)*w[j], (2*k[j]+1)*w[i]
		return x < y || x == y && i < j
	}
	heap := make([]int, len(w))
	for i := range heap {
		heap[i] = i
	}
	down := func(at int) {
		for {
			l, m := 2*at+1, at
			if l < len(heap) && less(heap[l], heap[m]) {
				m = l
			}
			if r := l + 1; r < len(heap) && less(heap[r], heap[m]) {
				m = r
			}
			if m == at {
				return
			}
			heap[at], heap[m] = heap[m], heap[at]
			at = m
		}
	}
	for at := len(heap)/2 - 1; at >= 0; at-- {
		down(at)
	}
	order := make([]uint32, 0, total)
	for range total {
		i := heap[0]
		order = append(order, uint32(i))
		k[i]++
		down(0)
	}
	return order
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// RandomTwo is a non-sticky policy: the power of two choices. It draws two
// distinct eligible backends at random, each with probability proportional
// to its weight, and takes the one with the lower (conns+1)/weight. This
// comes close to LeastConn's balance while reading two counters instead of
// all of them, and without herding every new connection onto the same
// least-loaded backend. It ignores the key. If random draws keep hitting
// ineligible backends, it falls back to a LeastConn scan.
type RandomTwo struct{}

// NewRandomTwo returns the RandomTwo policy.
func NewRandomTwo() *RandomTwo { return &RandomTwo{} }

// randomTwoDraws bounds the random draws of one pick.
const randomTwoDraws = 8

// Pick implements Policy.
func (*RandomTwo) Pick(s *Set, _ []byte, tried Tried) *Backend {
	b := randomTwo(s, &tried)
	if b != nil {
		b.Acquire()
	}
	return b
}

// Peek implements Policy: one random answer among those Pick could give.
func (*RandomTwo) Peek(s *Set, _ []byte) *Backend { return randomTwo(s, &Tried{}) }

// randomTwo returns RandomTwo's choice without counting a connection on it.
func randomTwo(s *Set, tried *Tried) *Backend {
	if s == nil || len(s.backends) == 0 {
		return nil
	}
	r := newRNG()
	a, b := -1, -1
	for range randomTwoDraws {
		i := s.sample(r.next())
		if i == a || !eligible(s.backends[i], tried) {
			continue
		}
		if a < 0 {
			a = i
			if len(s.backends) == 1 {
				break
			}
			continue
		}
		b = i
		break
	}
	switch {
	case a < 0:
		if a = leastLoaded(s, tried); a < 0 {
			return nil
		}
	case b >= 0 && lessLoaded(s, b, a):
		a = b
	}
	return s.backends[a]
}
