package balancer

// The evidence behind the choice of weighted rendezvous hashing (see the
// package doc): the production Set.Lookup against three candidates that live
// only here, Maglev, a ketama-style ring and jump consistent hash, all fed
// the same 64-bit xxhash of the key.
//
//	go test -run xxx -bench Algorithms -benchmem ./balancer/
//
// Each benchmark times one lookup and reports, computed once per
// algorithm and size:
//
//	maxdev%    largest deviation of a backend's share of keys from 1/n,
//	           over 1,000·n keys (pure sampling noise alone is about
//	           4 / √1000 ≈ 13% at the largest of n backends, less for
//	           small n; more than that is the algorithm's own imbalance)
//	tableimb%  the algorithm's own imbalance, without keys: largest
//	           deviation of a backend's share of the table or ring
//	stray%     keys that move between two surviving backends when the
//	           middle backend (by address) is removed: 0 is ideal
//	addmove%   keys that move when an (n+1)th backend is added; the ideal
//	           is 100/(n+1)%
//	build-µs   time to build the lookup structure

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// lookuper is one consistent-hashing candidate: built from a list of
// addresses (sorted), it maps a key hash to an index in that list.
type lookuper interface {
	lookup(kh uint64) int
}

type algorithm struct {
	name  string
	build func(addrs []string) lookuper
}

var algorithms = []algorithm{
	{"rendezvous", newRendezvousCandidate},
	{"maglev", newMaglev},
	{"ring160", func(a []string) lookuper { return newRing(a, 160) }},
	{"jump", newJump},
}

// rendezvous: the production code (equal weights).
type rendezvousCandidate struct {
	s *Set
}

func newRendezvousCandidate(addrs []string) lookuper {
	reg := new(Registry)
	bs := make([]*Backend, len(addrs))
	for i, a := range addrs {
		bs[i] = reg.Backend(a, 1)
	}
	return &rendezvousCandidate{s: NewSet(bs)}
}

func (r *rendezvousCandidate) lookup(kh uint64) int {
	best, bestScore := 0, uint64(0)
	for i, p := range r.s.params {
		if sc := ^mix(kh, p.seed); i == 0 || sc < bestScore {
			best, bestScore = i, sc
		}
	}
	return best
}

// maglev: Eisenbud et al., "Maglev: A Fast and Reliable Software Network
// Load Balancer" (NSDI 2016), section 3.4: each backend walks its own
// permutation of a prime-sized table, and the backends take turns claiming
// their next free slot. The table size is fixed (a deployment cannot change
// it without moving every key) at 131,071 slots, over 100 per backend up to
// 1,000 backends, as the paper advises.
type maglev struct {
	table []int32
}

const maglevSize = 131071 // prime

func newMaglev(addrs []string) lookuper {
	m := uint64(maglevSize)
	n := len(addrs)
	offset, skip, next := make([]uint64, n), make([]uint64, n), make([]uint64, n)
	for i, a := range addrs {
		h := xxhash.Sum64String(a)
		offset[i] = h % m
		skip[i] = mix(h, 1)%(m-1) + 1
	}
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	for filled := uint64(0); ; {
		for i := range n {
			c := (offset[i] + next[i]*skip[i]) % m
			for table[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			table[c] = int32(i)
			next[i]++
			if filled++; filled == m {
				return &maglev{table: table}
			}
		}
	}
}

func (m *maglev) lookup(kh uint64) int {
	return int(m.table[mulHi(kh, uint64(len(m.table)))])
}

// ring: ketama-style consistent hashing, v points per backend on a 64-bit
// circle; a key goes to the first point clockwise.
type ring struct {
	points []uint64
	owner  []int32
}

func newRing(addrs []string, v int) lookuper {
	type point struct {
		h uint64
		i int32
	}
	pts := make([]point, 0, len(addrs)*v)
	for i, a := range addrs {
		for j := range v {
			pts = append(pts, point{xxhash.Sum64String(a + "-" + strconv.Itoa(j)), int32(i)})
		}
	}
	slices.SortFunc(pts, func(x, y point) int {
		if x.h != y.h {
			if x.h < y.h {
				return -1
			}
			return 1
		}
		return int(x.i - y.i)
	})
	r := &ring{points: make([]uint64, len(pts)), owner: make([]int32, len(pts))}
	for k, p := range pts {
		r.points[k], r.owner[k] = p.h, p.i
	}
	return r
}

func (r *ring) lookup(kh uint64) int {
	k, _ := slices.BinarySearch(r.points, kh)
	if k == len(r.points) {
		k = 0
	}
	return int(r.owner[k])
}

// jump: Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash
// Algorithm" (2014). Buckets are numbered; only the last one can be removed
// without renumbering the others.
type jump struct{ n int64 }

func newJump(addrs []string) lookuper { return jump{int64(len(addrs))} }

func (j jump) lookup(key uint64) int {
	b, next := int64(-1), int64(0)
	for next < j.n {
		b = next
		key = key*2862933555777941757 + 1
		next = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// tableShares returns each backend's share of a table-based candidate's
// key space, or nil for the others.
func tableShares(l lookuper, n int) []float64 {
	shares := make([]float64, n)
	switch t := l.(type) {
	case *maglev:
		for _, i := range t.table {
			shares[i] += 1 / float64(len(t.table))
		}
	case *ring:
		for k, p := range t.points {
			prev := t.points[(k+len(t.points)-1)%len(t.points)]
			shares[t.owner[k]] += float64(p-prev) / math.Exp2(64)
		}
	default:
		return nil
	}
	return shares
}

type algoMetrics struct {
	maxDev, tableImb, stray, addMove float64
	build                            time.Duration
}

var algoMetricsCache = map[string]algoMetrics{}

func measure(a algorithm, n int) algoMetrics {
	id := fmt.Sprintf("%s/%d", a.name, n)
	if m, ok := algoMetricsCache[id]; ok {
		return m
	}
	addrs := make([]string, n+1)
	for i := range addrs {
		addrs[i] = addr(i)
	}
	slices.Sort(addrs) // as a Set orders them
	extra := addrs[n]  // sorts last, so jump can add it without renumbering
	addrs = addrs[:n]
	var m algoMetrics

	start := time.Now()
	base := a.build(addrs)
	m.build = time.Since(start)

	gone := n / 2
	removed := a.build(slices.Delete(slices.Clone(addrs), gone, gone+1))
	added := a.build(append(slices.Clone(addrs), extra))

	keys := 1000 * n
	counts := make([]int, n)
	stray, moved := 0, 0
	for k := range keys {
		kh := mix(uint64(k), 0x6b6579) // distinct, well spread key hashes
		i := base.lookup(kh)
		counts[i]++
		j := removed.lookup(kh)
		if j >= gone {
			j++ // back to base numbering
		}
		if i != gone && j != i {
			stray++
		}
		if added.lookup(kh) != i {
			moved++
		}
	}
	for _, c := range counts {
		m.maxDev = max(m.maxDev, 100*math.Abs(float64(c*n)/float64(keys)-1))
	}
	for _, s := range tableShares(base, n) {
		m.tableImb = max(m.tableImb, 100*math.Abs(s*float64(n)-1))
	}
	m.stray = 100 * float64(stray) / float64(keys)
	m.addMove = 100 * float64(moved) / float64(keys)
	algoMetricsCache[id] = m
	return m
}

func BenchmarkAlgorithms(b *testing.B) {
	for _, a := range algorithms {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", a.name, n), func(b *testing.B) {
				m := measure(a, n)
				addrs := make([]string, n)
				for i := range addrs {
					addrs[i] = addr(i)
				}
				l := a.build(addrs)
				b.ReportAllocs()
				b.ResetTimer()
				var kh uint64
				for b.Loop() {
					kh += 0x9e3779b97f4a7c15
					l.lookup(kh)
				}
				b.ReportMetric(m.maxDev, "maxdev%")
				b.ReportMetric(m.tableImb, "tableimb%")
				b.ReportMetric(m.stray, "stray%")
				b.ReportMetric(m.addMove, "addmove%")
				b.ReportMetric(float64(m.build.Microseconds()), "build-µs")
			})
		}
	}
}

// TestAlgorithmCandidates keeps the benchmark's candidates honest: each
// maps keys into range and spreads them, and the properties the package
// doc quotes hold at n = 10.
func TestAlgorithmCandidates(t *testing.T) {
	t.Parallel()
	for _, a := range algorithms {
		m := measure(a, 10)
		t.Logf("%-10s maxdev %.1f%%  tableimb %.1f%%  stray %.2f%%  addmove %.2f%%", a.name, m.maxDev, m.tableImb, m.stray, m.addMove)
		if m.maxDev > 15 {
			t.Errorf("%s: a backend is %.1f%% off its share", a.name, m.maxDev)
		}
		if m.addMove > 100.0/11+10 {
			t.Errorf("%s: adding a backend moved %.1f%% of keys", a.name, m.addMove)
		}
	}
	for d := uint64(2); d*d <= maglevSize; d++ {
		if maglevSize%d == 0 {
			t.Fatalf("maglevSize is divisible by %d", d)
		}
	}
	if m := measure(algorithms[0], 10); m.stray != 0 {
		t.Errorf("rendezvous moved %.2f%% of keys between surviving backends", m.stray)
	}
}
