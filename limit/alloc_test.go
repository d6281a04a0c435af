//go:build !race

package limit

import (
	"testing"
	"time"
)

// TestAllocs: Acquire, Release and Allow do not allocate for a group that
// already has an entry, whether they succeed or refuse. Not parallel:
// AllocsPerRun refuses to run in a parallel test.
func TestAllocs(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func() func()
	}{
		{"PerIP Acquire+Release", func() func() {
			p := NewPerIP(10)
			ip := v6(1, 1)
			p.Acquire(ip) // keeps the entry alive
			return func() {
				p.Acquire(ip)
				p.Release(ip)
			}
		}},
		{"PerIP Acquire refused", func() func() {
			p := NewPerIP(1)
			ip := v4(1)
			p.Acquire(ip)
			return func() { p.Acquire(ip) }
		}},
		{"PerIP Count", func() func() {
			p := NewPerIP(1)
			ip := v4(1)
			p.Acquire(ip)
			return func() { p.Count(ip) }
		}},
		{"Rate Allow", func() func() {
			r := NewRate(1e6, 1)
			ip := v6(1, 1)
			now := t0
			r.Allow(ip, now)
			return func() {
				now = now.Add(time.Microsecond)
				if !r.Allow(ip, now) {
					panic("refused")
				}
			}
		}},
		{"Rate Allow refused", func() func() {
			r := NewRate(1, 1)
			ip := v4(1)
			r.Allow(ip, t0)
			return func() {
				if r.Allow(ip, t0) {
					panic("allowed")
				}
			}
		}},
		{"Rate Allow real clock", func() func() {
			r := NewRate(1, 1)
			ip := v4(1)
			r.Allow(ip, time.Now())
			return func() { r.Allow(ip, time.Now()) }
		}},
	} {
		if allocs := testing.AllocsPerRun(1000, tc.f()); allocs != 0 {
			t.Errorf("%s: %v allocations per run, want 0", tc.name, allocs)
		}
	}
}
