package balancer

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestDistributionEqual: 100,000 keys over 10 equal backends, each within
// ±5% of its 10% share (±500 keys; one standard deviation is 95).
func TestDistributionEqual(t *testing.T) {
	t.Parallel()
	s := NewSet(backends(nil, 10, nil))
	counts := make([]int, s.Len())
	for _, i := range assign(s, testKeys()) {
		counts[i]++
	}
	want := numKeys / 10
	for i, c := range counts {
		dev := float64(c-want) / float64(want)
		t.Logf("%s: %d keys (%+.2f%%)", s.Backends()[i].Addr, c, 100*dev)
		if math.Abs(dev) > 0.05 {
			t.Errorf("%s has %d keys, want %d ±5%%", s.Backends()[i].Addr, c, want)
		}
	}
}

// TestDistributionWeighted: shares follow weights within ±5% relative.
func TestDistributionWeighted(t *testing.T) {
	t.Parallel()
	for _, weights := range [][]int{{1, 2, 3, 4}, {1, 2, 3, 4, 1, 2, 3, 4, 1, 2}, {1, 10}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			t.Parallel()
			s := NewSet(backends(nil, len(weights), func(i int) int { return weights[i] }))
			total := 0
			for _, w := range weights {
				total += w
			}
			counts := make([]int, s.Len())
			for _, i := range assign(s, testKeys()) {
				counts[i]++
			}
			for i, c := range counts {
				want := float64(numKeys) * float64(weights[i]) / float64(total)
				dev := (float64(c) - want) / want
				t.Logf("weight %d: %d keys, want %.0f (%+.2f%%)", weights[i], c, want, 100*dev)
				if math.Abs(dev) > 0.05 {
					t.Errorf("backend %d (weight %d) has %d keys, want %.0f ±5%%", i, weights[i], c, want)
				}
			}
		})
	}
}

// TestRemoveOne: removing any one of 10 backends moves exactly the keys
// that were on it; every other key keeps its backend.
func TestRemoveOne(t *testing.T) {
	t.Parallel()
	for _, weighted := range []bool{false, true} {
		t.Run(fmt.Sprintf("weighted=%v", weighted), func(t *testing.T) {
			t.Parallel()
			var weight func(int) int
			if weighted {
				weight = func(i int) int { return 1 + i%4 }
			}
			bs := backends(nil, 10, weight)
			before := lookupAddrs(NewSet(bs), testKeys())
			for gone := range bs {
				rest := slices.Delete(slices.Clone(bs), gone, gone+1)
				after := lookupAddrs(NewSet(rest), testKeys())
				moved, stray := 0, 0
				for k := range before {
					switch {
					case before[k] == bs[gone].Addr:
						moved++
					case after[k] != before[k]:
						stray++
					}
				}
				if stray != 0 {
					t.Errorf("removing %s moved %d keys that were on other backends, want 0", bs[gone].Addr, stray)
				}
				if gone == 0 {
					t.Logf("removing %s: %d keys (%.2f%%) moved, all of them its own; %d others moved",
						bs[gone].Addr, moved, 100*float64(moved)/numKeys, stray)
				}
			}
		})
	}
}

// TestAddOne: adding an 11th backend to 10 equal ones moves only keys that
// now go to the new backend, and their expected fraction is exactly its
// weight share, 1/11 = 9.09%. The bound asserted is 1/11 + 0.5% (the
// standard deviation over 100,000 keys is 0.09%). With weights the share is
// w_new/(W+w_new).
func TestAddOne(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		weight func(int) int
		newW   int
	}{
		{"equal", nil, 1},
		{"weighted", func(i int) int { return 1 + i%4 }, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := new(Registry)
			bs := backends(reg, 10, tc.weight)
			total := 0
			for _, b := range bs {
				total += b.Weight
			}
			before := lookupAddrs(NewSet(bs), testKeys())
			extra := reg.Backend("10.1.0.0:8080", tc.newW)
			after := lookupAddrs(NewSet(append(slices.Clone(bs), extra)), testKeys())
			moved, stray := 0, 0
			for k := range before {
				if after[k] != before[k] {
					moved++
					if after[k] != extra.Addr {
						stray++
					}
				}
			}
			bound := float64(tc.newW) / float64(total+tc.newW)
			frac := float64(moved) / numKeys
			t.Logf("adding a backend of weight %d to total weight %d moved %.2f%% of keys (expected %.2f%%)",
				tc.newW, total, 100*frac, 100*bound)
			if stray != 0 {
				t.Errorf("%d keys moved to an old backend, want 0", stray)
			}
			if frac > bound+0.005 || frac < bound-0.005 {
				t.Errorf("moved fraction %.4f, want %.4f ±0.005", frac, bound)
			}
		})
	}
}

// TestWeightChange: changing one backend's weight moves keys only to it
// (when it grows) or only from it (when it shrinks).
func TestWeightChange(t *testing.T) {
	t.Parallel()
	reg := new(Registry)
	bs := backends(reg, 10, func(i int) int { return 2 })
	before := lookupAddrs(NewSet(bs), testKeys())
	for _, w := range []int{1, 3, 8} {
		changed := slices.Clone(bs)
		changed[4] = reg.Backend(bs[4].Addr, w)
		after := lookupAddrs(NewSet(changed), testKeys())
		moved, stray := 0, 0
		for k := range before {
			if after[k] == before[k] {
				continue
			}
			moved++
			if w > 2 && after[k] != bs[4].Addr || w < 2 && before[k] != bs[4].Addr {
				stray++
			}
		}
		t.Logf("weight 2→%d moved %.2f%% of keys", w, 100*float64(moved)/numKeys)
		if stray != 0 {
			t.Errorf("weight 2→%d: %d keys moved between other backends", w, stray)
		}
	}
}

// TestAgreement: two balancers built independently (separate Registries,
// backends discovered in different orders, duplicates included) agree on
// all 100,000 keys, for the first choice and for the bounded-load picks.
func TestAgreement(t *testing.T) {
	t.Parallel()
	weight := func(i int) int { return 1 + i%3 }
	a := backends(nil, 10, weight)
	b := shuffled(backends(nil, 10, weight), 7)
	b = append(b, b[3]) // a duplicate entry changes nothing
	sa, sb := NewSet(a), NewSet(b)
	la, lb := lookupAddrs(sa, testKeys()), lookupAddrs(sb, testKeys())
	for k := range la {
		if la[k] != lb[k] {
			t.Fatalf("key %q: %s in one balancer, %s in the other", testKeys()[k], la[k], lb[k])
		}
	}

	ha, _ := NewHash(1.25, nil)
	hb, _ := NewHash(1.25, nil)
	skew := skewedKeys(20_000, 3)
	for i, k := range skew {
		pa, pb := ha.Pick(sa, k, Tried{}), hb.Pick(sb, k, Tried{})
		if pa.Addr != pb.Addr {
			t.Fatalf("connection %d, key %q: %s in one balancer, %s in the other", i, k, pa.Addr, pb.Addr)
		}
	}
}

// TestGolden pins key→backend results. If it fails, the hash changed: in
// production that moves every user to another backend, and mixed versions
// of wsproxy disagree during a rolling upgrade. Change the hash only on
// purpose, and update these values then.
func TestGolden(t *testing.T) {
	t.Parallel()
	equal := NewSet(backends(nil, 10, nil))
	weighted := NewSet(backends(nil, 10, func(i int) int { return 1 + i%4 }))
	for _, tc := range []struct {
		set  *Set
		key  string
		want string
	}{
		{equal, "", "10.0.0.1:8080"},
		{equal, "room-42", "10.0.0.8:8080"},
		{equal, "user-1", "10.0.0.6:8080"},
		{equal, "alice@example.com", "10.0.0.9:8080"},
		{equal, "lobby", "10.0.0.2:8080"},
		{equal, "2001:db8::1", "10.0.0.5:8080"},
		{weighted, "", "10.0.0.1:8080"},
		{weighted, "room-42", "10.0.0.8:8080"},
		{weighted, "lobby", "10.0.0.3:8080"},
		{weighted, "2001:db8::1", "10.0.0.7:8080"},
		{weighted, "channel/news", "10.0.0.1:8080"},
	} {
		if got := tc.set.Lookup([]byte(tc.key)).Addr; got != tc.want {
			t.Errorf("Lookup(%q) = %s, want %s", tc.key, got, tc.want)
		}
	}
	// Every one of the 100,000 keys, summarised.
	for _, tc := range []struct {
		name string
		set  *Set
		want uint64
	}{
		{"equal", equal, 0x6ab4d5617773e5ec},
		{"weighted", weighted, 0x8df08bfac8bee89f},
	} {
		d := xxhash.New()
		for _, a := range lookupAddrs(tc.set, testKeys()) {
			d.WriteString(a)
		}
		if got := d.Sum64(); got != tc.want {
			t.Errorf("%s: digest of all assignments = %#x, want %#x", tc.name, got, tc.want)
		}
	}
	// The fixed-point logarithm table, which weighted scores depend on.
	d := xxhash.New()
	for _, v := range log2Table {
		fmt.Fprintf(d, "%d,", v)
	}
	if got, want := d.Sum64(), uint64(0x8a577d5f23da9614); got != want {
		t.Errorf("digest of log2Table = %#x, want %#x", got, want)
	}
}

// TestEqualFastPath: with equal weights, the hash-only fast path ranks
// backends exactly as the weighted formula does.
func TestEqualFastPath(t *testing.T) {
	t.Parallel()
	fast := NewSet(backends(nil, 10, nil))
	slow := NewSet(backends(nil, 10, nil))
	slow.equal = false
	a, b := assign(fast, testKeys()), assign(slow, testKeys())
	diff := 0
	for k := range a {
		if a[k] != b[k] {
			diff++
		}
	}
	if diff != 0 {
		t.Errorf("%d of %d keys differ between the fast path and the weighted formula", diff, numKeys)
	}
}

// TestPreferenceOrder: the allocation-free walk (in batches of topK)
// returns the same order as AppendPreference, first choice = Lookup.
func TestPreferenceOrder(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 7, 8, 9, 30} {
		for _, weighted := range []bool{false, true} {
			var weight func(int) int
			if weighted {
				weight = func(i int) int { return 1 + i%5 }
			}
			s := NewSet(backends(nil, n, weight))
			for _, k := range testKeys()[:200] {
				pref := s.AppendPreference(nil, k)
				if len(pref) != n || pref[0] != s.Lookup(k) {
					t.Fatalf("n=%d: preference of %q has %d entries, first %v, want %d, first %v", n, k, len(pref), pref[0], n, s.Lookup(k))
				}
				var it prefIter
				it.init(s, xxhash.Sum64(k))
				for pass := 0; pass < 2; pass++ {
					for j, want := range pref {
						if i := it.next(); i < 0 || s.Backends()[i] != want {
							t.Fatalf("n=%d weighted=%v key %q pass %d: walk step %d = %d, want %s", n, weighted, k, pass, j, i, want.Addr)
						}
					}
					if i := it.next(); i != -1 {
						t.Fatalf("n=%d: walk returned %d after the last backend", n, i)
					}
					it.reset()
				}
			}
		}
	}
}

func TestNewSet(t *testing.T) {
	t.Parallel()
	reg := new(Registry)
	s := NewSet([]*Backend{reg.Backend("b:1", 0), nil, reg.Backend("a:1", MaxWeight+5), NewBackend("b:1", 3)})
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	if a, b := s.Backends()[0], s.Backends()[1]; a.Addr != "a:1" || b.Addr != "b:1" || b.Weight != 3 {
		t.Errorf("backends = %s/%d %s/%d, want a:1 then b:1 with weight 3 (the highest of the duplicates)", a.Addr, a.Weight, b.Addr, b.Weight)
	}
	if s.weights[0] != MaxWeight {
		t.Errorf("weight %d, want clamped to %d", s.weights[0], MaxWeight)
	}
	empty := NewSet(nil)
	if empty.Lookup([]byte("k")) != nil || empty.Len() != 0 {
		t.Error("empty Set found a backend")
	}
}

func TestNeglog2(t *testing.T) {
	t.Parallel()
	worst := 0.0
	prev := uint64(math.MaxUint64)
	for i := 0; i < 200_000; i++ {
		h := mix(uint64(i), 1) >> (i % 64)
		if h == 0 {
			continue
		}
		got := float64(neglog2(h)) / (1 << 32)
		want := -math.Log2(float64(h) / (1 << 64))
		worst = max(worst, math.Abs(got-want))
	}
	if worst > 1e-6 {
		t.Errorf("neglog2 error up to %g, want < 1e-6", worst)
	}
	// Monotone: larger h, smaller or equal −log2.
	for h := uint64(1); h < 1<<63; h = h*3 + 1 {
		if v := neglog2(h); v > prev {
			t.Fatalf("neglog2 not monotone at %d", h)
		} else {
			prev = v
		}
	}
	if neglog2(1) != 64<<32 {
		t.Errorf("neglog2(1) = %d, want 64<<32", neglog2(1))
	}
}
