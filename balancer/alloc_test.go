//go:build !race

package balancer

import (
	"net/netip"
	"testing"
)

// TestPickAllocs: no policy allocates per pick, bounded or not, weighted or
// not, first try or retry.
func TestPickAllocs(t *testing.T) {
	for _, weighted := range []bool{false, true} {
		var weight func(int) int
		if weighted {
			weight = func(i int) int { return 1 + i%4 }
		}
		s := NewSet(backends(nil, 100, weight))
		s.Backends()[3].SetHealthy(false)
		s.rrOrder()
		unbounded, _ := NewHash(0, nil)
		policies := allPolicies(t)
		policies["hash_unbounded"] = unbounded
		for name, p := range policies {
			var tried Tried
			tried.Add(s.Backends()[5])
			keys := testKeys()
			i := 0
			allocs := testing.AllocsPerRun(1000, func() {
				b := p.Pick(s, keys[i%len(keys)], tried)
				b.Release()
				i++
			})
			if allocs != 0 {
				t.Errorf("%s (weighted=%v): %v allocations per Pick, want 0", name, weighted, allocs)
			}
		}
	}
}

func TestLookupAllocs(t *testing.T) {
	s := NewSet(backends(nil, 50, func(i int) int { return 1 + i%3 }))
	key := []byte("room-1")
	dst := make([]*Backend, 0, 50)
	if a := testing.AllocsPerRun(100, func() { s.Lookup(key) }); a != 0 {
		t.Errorf("Lookup: %v allocations, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { s.AppendPreference(dst[:0], key) }); a != 0 {
		t.Errorf("AppendPreference: %v allocations, want 0", a)
	}
}

// TestKeyAllocs: Key allocates nothing once the request is parsed, from
// any source, including a walk of X-Forwarded-For or Forwarded.
func TestKeyAllocs(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	ctx := request(t, "/chat/lobby?room=lobby", "10.0.0.1:4000",
		"X-User", "u-17", "Cookie", "a=b; sid=s-99",
		"X-Forwarded-For", "198.51.100.1, 10.0.0.7",
		"X-Forwarded-For", "[2001:db8::5]:99, 10.0.0.9",
		"Forwarded", `for=198.51.100.2, for="[2001:db8::6]:80";proto=https, for=10.0.0.8`)
	dst := make([]byte, 0, 256)
	for _, tc := range []struct {
		src  string
		spec KeySpec
	}{
		{"query", KeySpec{Sources: mustSources(t, "header:X-None", "query:room")}},
		{"header", KeySpec{Sources: mustSources(t, "header:X-User")}},
		{"cookie", KeySpec{Sources: mustSources(t, "cookie:sid")}},
		{"path", KeySpec{Sources: mustSources(t, "path")}},
		{"ip", KeySpec{Sources: mustSources(t, "ip")}},
		{"xff", KeySpec{Sources: mustSources(t, "ip"), TrustedProxies: trusted}},
		{"forwarded", KeySpec{Sources: mustSources(t, "ip"), TrustedProxies: trusted, ClientIPHeader: HeaderForwarded}},
	} {
		key, ok := tc.spec.Key(ctx, dst)
		if !ok {
			t.Fatalf("%s: no key", tc.src)
		}
		t.Logf("%s: %q", tc.src, key)
		if a := testing.AllocsPerRun(1000, func() { tc.spec.Key(ctx, dst) }); a != 0 {
			t.Errorf("%s: %v allocations per Key, want 0", tc.src, a)
		}
	}
}
