package relay

import (
	"sync/atomic"
	"testing"
	"time"
)

// limitedConfig has what the proxy runs with when a route sets
// max_message_rate both ways: limits that never bind at benchmark speed,
// and live figures reported to a callback once a second.
func limitedConfig(flushes *atomic.Uint64) Config {
	rate := MessageRate{Interval: time.Microsecond, Burst: 1 << 16} // 1M/s
	return Config{
		Pool:        NewPool(0),
		ClientRate:  rate,
		BackendRate: rate,
		OnFlush: func(s *Session, up, down Counts) {
			flushes.Add(up.Messages + down.Messages)
		},
	}
}

// BenchmarkRelayEcho64Limited is BenchmarkRelayEcho64 with a message-rate
// limit on both directions and live counters: compare the two in one run.
func BenchmarkRelayEcho64Limited(b *testing.B) {
	var n atomic.Uint64
	benchRelayWith(b, 64, limitedConfig(&n))
}

func BenchmarkRelayEcho4KLimited(b *testing.B) {
	var n atomic.Uint64
	benchRelayWith(b, 4096, limitedConfig(&n))
}
