package balancer

import "math/bits"

// mix combines a key's hash with a backend's seed into the 64-bit value
// that rendezvous hashing ranks. It is Stafford's "Mix13" finalizer (the
// one splitmix64 uses) over kh^seed: a bijection with full avalanche, so
// one key's values for different backends are unrelated, and so are one
// backend's values for different keys. It is part of the on-the-wire
// contract (see the package doc): changing it moves every key.
func mix(kh, seed uint64) uint64 {
	x := kh ^ seed
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// mulHi returns the high 64 bits of a×b.
func mulHi(a, b uint64) uint64 {
	hi, _ := bits.Mul64(a, b)
	return hi
}

// log2Bits is the number of mantissa bits that index log2Table.
const log2Bits = 10

// log2Table[j] is log2(1 + j/1024) in Q32 fixed point (1.0 = 1<<32),
// computed with integer arithmetic only, so it is the same on every
// platform (math.Log2 may differ in the last bit between architectures,
// and Go may fuse float multiply-adds on some of them).
var log2Table = func() (t [1<<log2Bits + 1]uint64) {
	for j := range t {
		t[j] = log2Q32(uint64(j))
	}
	return t
}()

// log2Q32 returns log2(1 + j/1024) in Q32 for j in [0, 1024], by repeated
// squaring in Q62: each squaring of x in [1,2) doubles its logarithm, and
// whether the square reaches 2 gives the next bit.
func log2Q32(j uint64) uint64 {
	if j >= 1<<log2Bits {
		return 1 << 32
	}
	x := (1<<log2Bits + j) << (62 - log2Bits) // Q62, in [1,2)
	var r uint64
	for bit := 31; bit >= 0; bit-- {
		hi, lo := bits.Mul64(x, x) // Q124
		x = hi<<2 | lo>>62         // Q62, in [1,4)
		if x >= 2<<62 {
			x >>= 1
			r |= 1 << bit
		}
	}
	return r
}

// neglog2 returns −log2(h/2⁶⁴) in Q32 fixed point for h > 0, a value in
// (0, 64<<32]. It interpolates log2Table linearly (error below 2e-7, far
// under anything a share of keys could show) and is monotone: a larger h
// never gives a larger result.
func neglog2(h uint64) uint64 {
	lz := bits.LeadingZeros64(h)
	m := h << lz                                    // leading 1 at bit 63
	j := (m >> (63 - log2Bits)) & (1<<log2Bits - 1) // next 10 bits
	r := (m >> (31 - log2Bits)) & (1<<32 - 1)       // the 32 after them
	lo, hi := log2Table[j], log2Table[j+1]
	frac := lo + ((hi-lo)*r)>>32 // log2 of the mantissa, Q32, in [0,1)
	// log2(h) = 63 − lz + frac, so −log2(h/2⁶⁴) = 1 + lz − frac.
	return uint64(1+lz)<<32 - frac
}

// topK is how many candidates a scan past the first choice keeps (see
// prefIter).
const topK = 8

type cand struct {
	score uint64
	idx   int
}

func (a cand) less(b cand) bool {
	return a.score < b.score || a.score == b.score && a.idx < b.idx
}

// prefIter walks a key's preference order over a Set without allocating.
// The first scan only finds the first choice, which is all a pick needs
// when that backend is healthy, untried and under its bound. Past it, each
// scan keeps, in a fixed array, the topK best candidates ranked after the
// last one returned. So the common case costs one scan of n hash
// evaluations, and walking m backends deep costs 1 + ⌈(m−1)/topK⌉ scans.
// It lives on the caller's stack.
type prefIter struct {
	s         *Set
	kh        uint64
	top       [topK]cand
	n         int  // filled entries of top
	i         int  // next entry of top to return
	last      cand // last candidate returned
	exhausted bool // no candidates beyond those in top
	batches   int  // scans done since the start of the walk
}

func (it *prefIter) init(s *Set, kh uint64) {
	it.s, it.kh = s, kh
	it.first()
}

// first scans the Set for the key's first choice alone.
func (it *prefIter) first() {
	s, kh := it.s, it.kh
	best := cand{idx: -1}
	for i, p := range s.params {
		h := mix(kh, p.seed)
		var sc uint64
		if s.equal {
			sc = ^h
		} else {
			sc = mulHi(neglog2(h|1), p.invW)
		}
		if i == 0 || sc < best.score {
			best = cand{sc, i}
		}
	}
	it.n, it.i, it.batches = 0, 0, 1
	if best.idx >= 0 {
		it.top[0], it.n = best, 1
	}
	it.exhausted = len(s.params) <= 1
}

// fill scans the Set for the topK best candidates ranked after it.last.
// The score is computed inline (Set.score is too large to inline, and a
// call per backend doubles the cost of a scan).
func (it *prefIter) fill() {
	s, kh, floor := it.s, it.kh, it.last
	n := 0
	for i, p := range s.params {
		h := mix(kh, p.seed)
		var c cand
		if s.equal {
			c = cand{^h, i}
		} else {
			c = cand{mulHi(neglog2(h|1), p.invW), i}
		}
		if !floor.less(c) || n == topK && !c.less(it.top[topK-1]) {
			continue
		}
		n = insert(&it.top, n, c)
	}
	it.n, it.i = n, 0
	it.exhausted = n < topK
	it.batches++
}

// insert adds c to the n sorted candidates in top, dropping the last one if
// top is full, and returns the new count.
func insert(top *[topK]cand, n int, c cand) int {
	if n == topK {
		n--
	}
	j := n
	for j > 0 && c.less(top[j-1]) {
		top[j] = top[j-1]
		j--
	}
	top[j] = c
	return n + 1
}

// reset restarts the walk at the first choice.
func (it *prefIter) reset() {
	if it.batches > 1 {
		it.first()
		return
	}
	it.i = 0
}

// next returns the index of the next backend in preference order, or −1
// when every backend has been returned.
func (it *prefIter) next() int {
	if it.i == it.n {
		if it.exhausted || it.n == 0 {
			return -1
		}
		it.fill()
		if it.n == 0 {
			return -1
		}
	}
	it.last = it.top[it.i]
	it.i++
	return it.last.idx
}
