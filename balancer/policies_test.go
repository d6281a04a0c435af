package balancer

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
)

func allPolicies(t *testing.T) map[string]Policy {
	t.Helper()
	out := map[string]Policy{}
	for _, name := range []string{NameHash, NameLeastConn, NameRoundRobin, NameRandomTwo} {
		p, err := New(name, 1.25)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = p
	}
	return out
}

// TestPoliciesCommon: every policy returns nil on an empty or all-down Set,
// never returns an unhealthy or tried backend, and counts the connection.
func TestPoliciesCommon(t *testing.T) {
	t.Parallel()
	for name, p := range allPolicies(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if b := p.Pick(NewSet(nil), []byte("k"), Tried{}); b != nil {
				t.Errorf("empty Set: got %s", b.Addr)
			}
			if b := p.Pick(nil, []byte("k"), Tried{}); b != nil {
				t.Errorf("nil Set: got %s", b.Addr)
			}
			bs := backends(nil, 6, func(i int) int { return 1 + i%3 })
			s := NewSet(bs)
			bs[1].SetHealthy(false)
			bs[4].SetHealthy(false)
			var tried Tried
			tried.Add(bs[0])
			for i := range 3000 {
				k := testKeys()[i]
				b := p.Pick(s, k, tried)
				if b == nil || !b.Healthy() || b.Same(bs[0]) {
					t.Fatalf("pick %d: got %v", i, b)
				}
				if b.Conns() < 1 {
					t.Fatalf("pick %d: %s has %d connections after the pick", i, b.Addr, b.Conns())
				}
			}
			tried.Add(bs[2])
			tried.Add(bs[3])
			tried.Add(bs[5])
			if b := p.Pick(s, []byte("k"), tried); b != nil {
				t.Errorf("every healthy backend tried: got %s", b.Addr)
			}
			for _, b := range bs {
				b.SetHealthy(false)
			}
			if b := p.Pick(s, []byte("k"), Tried{}); b != nil {
				t.Errorf("all down: got %s", b.Addr)
			}
		})
	}
}

// TestLeastConn: with connections only opening, loads stay proportional to
// weights to within one connection; a released backend is picked next.
func TestLeastConn(t *testing.T) {
	t.Parallel()
	weights := []int{1, 2, 3, 4}
	bs := backends(nil, 4, func(i int) int { return weights[i] })
	s := NewSet(bs)
	p := NewLeastConn()
	for range 1000 {
		p.Pick(s, nil, Tried{})
	}
	for i, b := range bs {
		if want := int64(100 * weights[i]); b.Conns() < want-1 || b.Conns() > want+1 {
			t.Errorf("%s (weight %d) has %d connections, want %d ±1", b.Addr, weights[i], b.Conns(), want)
		}
	}
	for range 50 {
		bs[2].Release()
	}
	for range 50 {
		if b := p.Pick(s, nil, Tried{}); b != bs[2] {
			t.Fatalf("picked %s, want %s which lost 50 connections", b.Addr, bs[2].Addr)
		}
	}
	// Ties are broken at random: equal idle backends all get first picks.
	seen := map[*Backend]bool{}
	eq := backends(nil, 5, nil)
	es := NewSet(eq)
	for range 200 {
		b := p.Pick(es, nil, Tried{})
		seen[b] = true
		b.Release()
	}
	if len(seen) != 5 {
		t.Errorf("ties went to %d of 5 idle backends", len(seen))
	}
}

// TestRoundRobin: the order is smooth (3,2,1 gives a b a c b a, rotated)
// and exact over whole cycles, and unhealthy backends are skipped.
func TestRoundRobin(t *testing.T) {
	t.Parallel()
	if got, want := buildRROrder([]uint64{3, 2, 1}), []uint32{0, 1, 0, 2, 1, 0}; !slices.Equal(got, want) {
		t.Errorf("order for 3,2,1 = %v, want %v", got, want)
	}
	if got, want := buildRROrder([]uint64{4, 4, 4}), []uint32{0, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("order for 4,4,4 = %v, want %v", got, want)
	}
	if got := buildRROrder([]uint64{MaxWeight, MaxWeight - 1, 1}); len(got) > maxRROrder+3 {
		t.Errorf("order of %d entries, want at most %d", len(got), maxRROrder+3)
	}

	weights := []int{1, 2, 3, 4}
	bs := backends(nil, 4, func(i int) int { return weights[i] })
	s := NewSet(bs)
	p := NewRoundRobin()
	seq := make([]string, 0, 10)
	for range 1000 {
		b := p.Pick(s, nil, Tried{})
		if len(seq) < 10 {
			seq = append(seq, b.Addr[len(b.Addr)-6:len(b.Addr)-5])
		}
	}
	t.Logf("weights 1,2,3,4: %s", strings.Join(seq, " "))
	for i, b := range bs {
		if want := int64(100 * weights[i]); b.Conns() != want {
			t.Errorf("%s (weight %d) has %d connections, want %d", b.Addr, weights[i], b.Conns(), want)
		}
	}
	// Longest run of one backend: at most 2 for weights 1,2,3,4.
	run, longest, last := 0, 0, (*Backend)(nil)
	for range 100 {
		b := p.Pick(s, nil, Tried{})
		if b == last {
			run++
		} else {
			run = 1
		}
		last, longest = b, max(longest, run)
	}
	if longest > 2 {
		t.Errorf("a backend was picked %d times in a row", longest)
	}
	releaseAll(bs)
	bs[3].SetHealthy(false)
	for range 600 {
		p.Pick(s, nil, Tried{})
	}
	if bs[3].Conns() != 0 || bs[0].Conns()+bs[1].Conns()+bs[2].Conns() != 600 {
		t.Errorf("with %s down: %d %d %d %d", bs[3].Addr, bs[0].Conns(), bs[1].Conns(), bs[2].Conns(), bs[3].Conns())
	}
}

// TestRandomTwo: with connections only opening, the power of two choices
// keeps every backend within a few connections of its weighted share.
func TestRandomTwo(t *testing.T) {
	t.Parallel()
	for _, weights := range [][]int{{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 2, 3, 4}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			t.Parallel()
			bs := backends(nil, len(weights), func(i int) int { return weights[i] })
			s := NewSet(bs)
			total := 0
			for _, w := range weights {
				total += w
			}
			p := NewRandomTwo()
			const picks = 10_000
			for range picks {
				p.Pick(s, nil, Tried{})
			}
			worst := 0.0
			for i, b := range bs {
				want := float64(picks*weights[i]) / float64(total)
				worst = max(worst, math.Abs(float64(b.Conns())-want)/want)
			}
			t.Logf("largest deviation from the weighted share: %.2f%%", 100*worst)
			if worst > 0.05 {
				t.Errorf("a backend is %.1f%% away from its share, want ≤ 5%%", 100*worst)
			}
		})
	}
}

func TestConcurrentPicks(t *testing.T) {
	t.Parallel()
	bs := backends(nil, 10, func(i int) int { return 1 + i%3 })
	s := NewSet(bs)
	var wg sync.WaitGroup
	for name, p := range allPolicies(t) {
		for g := range 4 {
			wg.Go(func() {
				for i, k := range testKeys()[g*1000 : g*1000+1000] {
					b := p.Pick(s, k, Tried{})
					if b == nil {
						t.Errorf("%s: no backend", name)
						return
					}
					if i%2 == 0 {
						b.Release()
					}
				}
			})
		}
	}
	wg.Wait()
	var sum int64
	for _, b := range bs {
		sum += b.Conns()
	}
	if sum != 4*4*500 {
		t.Errorf("%d connections counted, want %d", sum, 4*4*500)
	}
}

func TestTried(t *testing.T) {
	t.Parallel()
	reg := new(Registry)
	var tr Tried
	for i := range MaxTries {
		if !tr.Add(reg.Backend(addr(i), 1)) {
			t.Fatalf("Add %d refused", i)
		}
	}
	if tr.Add(reg.Backend(addr(99), 1)) || tr.Len() != MaxTries {
		t.Errorf("Add beyond MaxTries accepted, Len %d", tr.Len())
	}
	if !tr.Contains(reg.Backend(addr(3), 7)) {
		t.Error("a backend with a new weight is not recognised as tried")
	}
	if tr.Contains(NewBackend(addr(3), 1)) {
		t.Error("a backend with the same address but its own live state counts as tried")
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	var reg Registry
	a := reg.Backend("a:1", 1)
	if reg.Backend("a:1", 1) != a {
		t.Error("same address and weight gave a new Backend")
	}
	a2 := reg.Backend("a:1", 5)
	if a2 == a || a2.Weight != 5 || !a2.Same(a) {
		t.Error("new weight: want a new Backend sharing live state")
	}
	a.Acquire()
	a2.SetHealthy(false)
	if a2.Conns() != 1 || a.Healthy() {
		t.Error("live state is not shared")
	}
	// A rebuilt Set keeps the counts: the fabio #665 failure mode.
	s1 := NewSet([]*Backend{a, reg.Backend("b:1", 1)})
	s2 := NewSet([]*Backend{reg.Backend("b:1", 1), reg.Backend("a:1", 5)})
	if s2.Backends()[0].Conns() != s1.Backends()[0].Conns() {
		t.Error("rebuilding the Set reset the connection count")
	}
	reg.Backend("c:1", 1)
	if n := reg.Prune(func(addr string) bool { return addr == "b:1" }); n != 1 || reg.Len() != 2 {
		t.Errorf("Prune forgot %d, %d left; want 1 (c:1, a:1 has a connection), 2 left", n, reg.Len())
	}
	a.Release()
	if n := reg.Prune(func(string) bool { return false }); n != 2 || reg.Len() != 0 {
		t.Errorf("Prune forgot %d, %d left; want 2, 0", n, reg.Len())
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := New("ip_hash", 0); err == nil {
		t.Error("unknown policy accepted")
	}
	if _, err := New(NameHash, 0.5); err == nil {
		t.Error("load factor 0.5 accepted")
	}
}

// TestPeek: Peek counts no connection and never returns an unhealthy
// backend; for the deterministic policies (hash with a key, round robin,
// least_conn without ties) it answers what the next Pick returns, however
// often it is asked.
func TestPeek(t *testing.T) {
	t.Parallel()
	for name, p := range allPolicies(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if p.Peek(nil, []byte("k")) != nil || p.Peek(NewSet(nil), []byte("k")) != nil {
				t.Fatal("Peek on a nil or empty Set returned a backend")
			}
			bs := backends(nil, 5, func(i int) int { return 1 + i%3 })
			s := NewSet(bs)
			bs[2].SetHealthy(false)
			// Uneven loads so that least_conn has a single answer.
			for i, b := range bs {
				for range i + 1 {
					b.Acquire()
				}
			}
			for i := range 200 {
				k := testKeys()[i]
				var want *Backend
				for range 3 {
					b := p.Peek(s, k)
					if b == nil || !b.Healthy() {
						t.Fatalf("key %d: Peek returned %v", i, b)
					}
					if want != nil && name != NameRandomTwo && !b.Same(want) {
						t.Fatalf("key %d: Peek answered %s then %s", i, want.Addr, b.Addr)
					}
					want = b
				}
				for j, b := range bs {
					if b.Conns() != int64(j+1) {
						t.Fatalf("key %d: Peek changed %s's count to %d", i, b.Addr, b.Conns())
					}
				}
				if name == NameRandomTwo {
					continue
				}
				got := p.Pick(s, k, Tried{})
				if !got.Same(want) {
					t.Fatalf("key %d: Peek said %s, Pick took %s", i, want.Addr, got.Addr)
				}
				got.Release()
			}
		})
	}
}
