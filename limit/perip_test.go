package limit

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// TestPerIPConcurrentCap: goroutines acquiring at once for one group (the
// same address, or different addresses in one /64) get exactly max
// successes.
func TestPerIPConcurrentCap(t *testing.T) {
	t.Parallel()
	const max, goroutines = 10, 200
	for _, same := range []bool{true, false} {
		p := NewPerIP(max)
		for round := range 20 {
			var ok atomic.Int32
			var start, done sync.WaitGroup
			start.Add(1)
			for g := range goroutines {
				ip := v6(7, 1)
				if !same {
					ip = v6(7, uint64(g))
				}
				done.Go(func() {
					start.Wait()
					if p.Acquire(ip) {
						ok.Add(1)
					}
				})
			}
			start.Done()
			done.Wait()
			if got := ok.Load(); got != max {
				t.Fatalf("same=%v round %d: %d acquisitions succeeded, want %d", same, round, got, max)
			}
			if got := p.Count(v6(7, 12345)); got != max {
				t.Fatalf("same=%v round %d: Count %d, want %d", same, round, got, max)
			}
			for range max {
				p.Release(v6(7, 99))
			}
			if p.Len() != 0 {
				t.Fatalf("same=%v round %d: Len %d after releasing all, want 0", same, round, p.Len())
			}
		}
	}
}

func TestPerIPReleaseFrees(t *testing.T) {
	t.Parallel()
	p := NewPerIP(2)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !p.Acquire(a) || !p.Acquire(a) {
		t.Fatal("first two acquisitions refused")
	}
	if p.Acquire(a) {
		t.Fatal("third acquisition allowed with max 2")
	}
	if p.Count(a) != 2 {
		t.Fatalf("Count %d after a refused Acquire, want 2 (unchanged)", p.Count(a))
	}
	if !p.Acquire(b) {
		t.Fatal("another address refused")
	}
	p.Release(a)
	if p.Count(a) != 1 {
		t.Fatalf("Count %d after Release, want 1", p.Count(a))
	}
	if !p.Acquire(a) {
		t.Fatal("Acquire refused after Release")
	}
	if p.Acquire(a) {
		t.Fatal("Acquire allowed over max after Release")
	}
	if p.Max() != 2 {
		t.Fatalf("Max %d, want 2", p.Max())
	}
}

// TestPerIPDeletesAtZero: memory follows live connections: every entry is
// gone once all are released, and extra releases change nothing.
func TestPerIPDeletesAtZero(t *testing.T) {
	t.Parallel()
	p := NewPerIP(3)
	const n = 5000
	for i := range n {
		for range 1 + i%3 {
			if !p.Acquire(v4(i)) {
				t.Fatalf("%v refused", v4(i))
			}
		}
	}
	if p.Len() != n {
		t.Fatalf("Len %d, want %d", p.Len(), n)
	}
	for i := range n {
		for range 1 + i%3 {
			p.Release(v4(i))
		}
		if p.Count(v4(i)) != 0 {
			t.Fatalf("Count(%v) %d after releasing all, want 0", v4(i), p.Count(v4(i)))
		}
	}
	if p.Len() != 0 {
		t.Fatalf("Len %d after releasing all, want 0", p.Len())
	}
	// A Release without an Acquire is ignored: the count does not go
	// negative and the cap still holds.
	ip := v4(1)
	p.Release(ip)
	if p.Count(ip) != 0 || p.Len() != 0 {
		t.Fatalf("after a stray Release: Count %d, Len %d, want 0, 0", p.Count(ip), p.Len())
	}
	for range 3 {
		p.Acquire(ip)
	}
	if p.Acquire(ip) {
		t.Fatal("cap exceeded after a stray Release")
	}
}

func TestPerIPGrouping(t *testing.T) {
	t.Parallel()
	m := netip.MustParseAddr

	p := NewPerIP(2)
	if !p.Acquire(m("2001:db8::1")) || !p.Acquire(m("2001:db8::ffff:2")) {
		t.Fatal("first two in the /64 refused")
	}
	if p.Acquire(m("2001:db8::3")) {
		t.Fatal("third address in the same /64 allowed with max 2")
	}
	if !p.Acquire(m("2001:db8:0:1::1")) {
		t.Fatal("next /64 refused")
	}
	if p.Len() != 2 || p.Count(m("2001:db8::abcd")) != 2 {
		t.Fatalf("Len %d, Count %d, want 2, 2", p.Len(), p.Count(m("2001:db8::abcd")))
	}
	// IPv4 by itself, mapped or not.
	if !p.Acquire(m("192.0.2.1")) || !p.Acquire(m("::ffff:192.0.2.1")) || p.Acquire(m("192.0.2.1")) {
		t.Fatal("IPv4 and its mapped form are not one group of max 2")
	}
	if !p.Acquire(m("192.0.2.2")) {
		t.Fatal("neighbouring IPv4 address refused")
	}

	// Other prefix lengths.
	p = NewPerIP(1, Options{V4Prefix: 24, V6Prefix: 128})
	if !p.Acquire(m("198.51.100.1")) || p.Acquire(m("198.51.100.200")) {
		t.Fatal("IPv4 /24 not grouped")
	}
	if !p.Acquire(m("2001:db8::1")) || !p.Acquire(m("2001:db8::2")) {
		t.Fatal("IPv6 /128: neighbours grouped")
	}
}

// TestPerIPUnlimited: with no cap nothing is refused, but the connections
// are still counted (a reload may set a cap over them) and released.
func TestPerIPUnlimited(t *testing.T) {
	t.Parallel()
	for _, max := range []int{0, -1} {
		p := NewPerIP(max)
		for i := range 999 {
			if !p.Acquire(v4(i % 3)) {
				t.Fatalf("max %d: Acquire refused", max)
			}
		}
		if p.Len() != 3 || p.Count(v4(0)) != 333 {
			t.Fatalf("max %d: Len %d, Count %d, want 3, 333", max, p.Len(), p.Count(v4(0)))
		}
		for i := range 999 {
			p.Release(v4(i % 3))
		}
		if p.Len() != 0 {
			t.Fatalf("max %d: Len %d after releasing all", max, p.Len())
		}
	}
}

// TestPerIPRace: concurrent Acquire, Release, Count and Len on overlapping
// groups; the count of a group never exceeds max, and all entries are gone
// at the end.
func TestPerIPRace(t *testing.T) {
	t.Parallel()
	const max, goroutines, ops, groups = 4, 16, 3000, 40
	p := NewPerIP(max)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var held []netip.Addr
			for range ops {
				switch r := rng.IntN(10); {
				case r < 5:
					i := rng.IntN(groups)
					ip := v4(i)
					if i%2 == 1 {
						ip = v6(i, rng.Uint64())
					}
					if p.Acquire(ip) {
						held = append(held, ip)
					}
				case r < 9 && len(held) > 0:
					j := rng.IntN(len(held))
					p.Release(held[j])
					held[j] = held[len(held)-1]
					held = held[:len(held)-1]
				default:
					if c := p.Count(v4(rng.IntN(groups))); c > max {
						t.Errorf("Count %d > max %d", c, max)
					}
					if n := p.Len(); n > groups {
						t.Errorf("Len %d > %d groups", n, groups)
					}
				}
			}
			for _, ip := range held {
				p.Release(ip)
			}
		})
	}
	wg.Wait()
	if p.Len() != 0 {
		t.Fatalf("Len %d after all releases, want 0", p.Len())
	}
}

// TestPerIPWithMaxSharesCounts: a PerIP from WithMax enforces its own cap
// over the connections counted on the original, whether the cap goes up,
// down, or from unlimited to limited, and a release on either frees the
// same slot. The original keeps its cap.
func TestPerIPWithMaxSharesCounts(t *testing.T) {
	t.Parallel()
	a := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name     string
		from, to int
		live     int // acquired on the original before WithMax
		more     int // further acquisitions the new cap allows
	}{
		{"raise", 1, 2, 1, 1},
		{"lower", 3, 1, 2, 0},
		{"unlimited to limited", 0, 2, 2, 0},
		{"limited to unlimited", 1, 0, 1, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := NewPerIP(tc.from)
			for i := 0; i < tc.live; i++ {
				if !old.Acquire(a) {
					t.Fatalf("live acquisition %d refused", i)
				}
			}
			p := old.WithMax(tc.to)
			if p.Max() != tc.to || old.Max() != tc.from {
				t.Fatalf("Max: new %d old %d, want %d %d", p.Max(), old.Max(), tc.to, tc.from)
			}
			for i := 0; i < tc.more; i++ {
				if !p.Acquire(a) {
					t.Fatalf("acquisition %d under the new cap refused", i)
				}
			}
			if tc.to > 0 && p.Acquire(a) {
				t.Fatalf("acquisition beyond the new cap %d allowed (count %d)", tc.to, p.Count(a))
			}
			if got, want := old.Count(a), tc.live+tc.more; got != want {
				t.Fatalf("old Count %d, want %d (shared)", got, want)
			}
			// Releasing on the original frees a slot under the new cap.
			for i := 0; i < tc.live+tc.more; i++ {
				old.Release(a)
			}
			if p.Count(a) != 0 || p.Len() != 0 {
				t.Fatalf("after releasing all: Count %d Len %d", p.Count(a), p.Len())
			}
		})
	}
}
