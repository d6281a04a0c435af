package limit

import (
	"net/netip"
	"sync/atomic"
	"testing"
)

// BenchmarkPerIP times one Acquire and one Release from parallel
// goroutines, in three cases:
//
//   - same_ip: every goroutine on one group, one shard: the worst case.
//   - own_ip: one group per goroutine, its entry kept alive: the steady
//     state of a client with a live connection.
//   - distinct_ips: each goroutine cycling through 4,096 groups, so each
//     Acquire inserts an entry and each Release deletes it.
//
// Run with:
//
//	go test -run xxx -bench . -benchmem -cpu 1,2 ./limit/
func BenchmarkPerIP(b *testing.B) {
	b.Run("same_ip", func(b *testing.B) {
		p := NewPerIP(1 << 30)
		ip := v6(1, 1)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !p.Acquire(ip) {
					b.Error("refused")
				}
				p.Release(ip)
			}
		})
	})
	var goroutine atomic.Int64
	b.Run("own_ip", func(b *testing.B) {
		p := NewPerIP(2)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ip := v4(int(goroutine.Add(1)))
			p.Acquire(ip)
			for pb.Next() {
				if !p.Acquire(ip) {
					b.Error("refused")
				}
				p.Release(ip)
			}
		})
	})
	b.Run("distinct_ips", func(b *testing.B) {
		p := NewPerIP(1)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			g := int(goroutine.Add(1))
			ips := make([]netip.Addr, 4096)
			for i := range ips {
				ips[i] = v6(g<<16|i, 1)
			}
			i := 0
			for pb.Next() {
				ip := ips[i%len(ips)]
				if !p.Acquire(ip) {
					b.Error("refused")
				}
				p.Release(ip)
				i++
			}
		})
	})
}
