package balancer

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkPick measures one Pick and the Release that ends the
// connection, for each policy, over Sets of 10, 100 and 1000 backends that
// already hold 20 connections per backend, cycling through 1024 keys.
func BenchmarkPick(b *testing.B) {
	unbounded, _ := NewHash(0, nil)
	bounded, _ := NewHash(1.25, nil)
	policies := []struct {
		name string
		p    Policy
	}{
		{"hash", unbounded},
		{"hash_bounded", bounded},
		{"least_conn", NewLeastConn()},
		{"round_robin", NewRoundRobin()},
		{"random_two", NewRandomTwo()},
	}
	for _, weighted := range []bool{false, true} {
		for _, n := range []int{10, 100, 1000} {
			var weight func(int) int
			if weighted {
				weight = func(i int) int { return 1 + i%4 }
			}
			bs := backends(nil, n, weight)
			for _, be := range bs {
				for range 20 {
					be.Acquire()
				}
			}
			s := NewSet(bs)
			keys := testKeys()[:1024]
			for _, pc := range policies {
				b.Run(fmt.Sprintf("%s/weighted=%v/n=%d", pc.name, weighted, n), func(b *testing.B) {
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						pc.p.Pick(s, keys[i&1023], Tried{}).Release()
						i++
					}
				})
			}
		}
	}
}

// BenchmarkPickParallel is BenchmarkPick for 100 backends on every CPU at
// once: the cost of the shared counters under contention.
func BenchmarkPickParallel(b *testing.B) {
	bounded, _ := NewHash(1.25, nil)
	for _, pc := range []struct {
		name string
		p    Policy
	}{
		{"hash_bounded", bounded},
		{"least_conn", NewLeastConn()},
		{"round_robin", NewRoundRobin()},
		{"random_two", NewRandomTwo()},
	} {
		s := NewSet(backends(nil, 100, nil))
		keys := testKeys()[:1024]
		b.Run(pc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					pc.p.Pick(s, keys[i&1023], Tried{}).Release()
					i++
				}
			})
		})
	}
}

// BenchmarkRetry: the third attempt of a connection (two backends tried).
func BenchmarkRetry(b *testing.B) {
	h, _ := NewHash(1.25, nil)
	s := NewSet(backends(nil, 100, nil))
	key := []byte("room-1")
	pref := s.AppendPreference(nil, key)
	var tried Tried
	tried.Add(pref[0])
	tried.Add(pref[1])
	b.ReportAllocs()
	for b.Loop() {
		h.Pick(s, key, tried).Release()
	}
}

func BenchmarkKey(b *testing.B) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	ctx := request(b, "/ws?room=lobby", "10.0.0.1:4000",
		"Cookie", "a=b; sid=s-99", "X-Forwarded-For", "198.51.100.1, 10.0.0.7")
	dst := make([]byte, 0, 256)
	for _, tc := range []struct {
		name string
		spec KeySpec
	}{
		{"query", KeySpec{Sources: []KeySource{{Kind: KeyQuery, Name: "room"}}}},
		{"cookie", KeySpec{Sources: []KeySource{{Kind: KeyCookie, Name: "sid"}}}},
		{"ip_xff", KeySpec{Sources: []KeySource{{Kind: KeyClientIP}}, TrustedProxies: trusted}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tc.spec.Key(ctx, dst)
			}
		})
	}
}

func BenchmarkNewSet(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		bs := backends(nil, n, func(i int) int { return 1 + i%4 })
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewSet(bs)
			}
		})
	}
}
