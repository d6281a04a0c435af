package limit

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRateAllow times one Allow from parallel goroutines, with fake
// time advancing 1µs per call, in four cases:
//
//   - same_ip: every goroutine on one group, one shard: the worst case.
//   - own_ip: one group per goroutine, known: the steady state.
//   - real_clock: own_ip with time.Now per call, which costs extra.
//   - flood: a new group on every call, past the default cap, so most
//     calls also evict: a distributed flood.
//
// Run with:
//
//	go test -run xxx -bench . -benchmem -cpu 1,2 ./limit/
func BenchmarkRateAllow(b *testing.B) {
	b.Run("same_ip", func(b *testing.B) {
		r := NewRate(1e6, 1000)
		ip := v6(1, 1)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			now := t0
			for pb.Next() {
				now = now.Add(time.Microsecond)
				r.Allow(ip, now)
			}
		})
	})
	var goroutine atomic.Int64
	b.Run("own_ip", func(b *testing.B) {
		r := NewRate(1e6, 1000)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ip := v4(int(goroutine.Add(1)))
			now := t0
			for pb.Next() {
				now = now.Add(time.Microsecond)
				if !r.Allow(ip, now) {
					b.Error("refused")
				}
			}
		})
	})
	b.Run("real_clock", func(b *testing.B) {
		r := NewRate(1e9, 1000)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ip := v4(int(goroutine.Add(1)))
			for pb.Next() {
				r.Allow(ip, time.Now())
			}
		})
	})
	b.Run("flood", func(b *testing.B) {
		r := NewRate(1, 10)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			g := int(goroutine.Add(1))
			now := t0
			i := 0
			for pb.Next() {
				now = now.Add(time.Microsecond)
				var a [16]byte
				a[0], a[1] = 0x20, 0x01
				a[2], a[3] = byte(g), byte(g>>8)
				a[4], a[5], a[6], a[7] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
				if !r.Allow(netip.AddrFrom16(a), now) {
					b.Error("new group refused")
				}
				i++
			}
		})
		if r.Len() > DefaultMaxEntries {
			b.Errorf("Len %d over the cap", r.Len())
		}
	})
}
