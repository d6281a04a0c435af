package proxy

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

// BenchmarkConnectionMetrics is the metrics work of one WebSocket
// connection: the handshake and connection counters at its start, and the
// frames, bytes, close code and duration at its end. The frame path itself
// has no metric code, so this is the whole cost of metrics per connection.
func BenchmarkConnectionMetrics(b *testing.B) {
	cfg, err := config.Parse("bench", []byte("{\n\taccess_log off\n}\n:1 {\n\troute /ws {\n\t\tname chat\n\t\tto 127.0.0.1:9\n\t}\n}"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	r := s.rt.Load().routes[0]
	c := &wsConn{route: r, backend: balancer.NewBackend("127.0.0.1:9", 1), start: time.Now()}
	ss := &relay.Session{ClosedBy: relay.SideClient, CloseCode: 1000}
	ss.ClientToBackend = relay.DirStats{Bytes: 1000, Frames: 10, Messages: 10}
	ss.BackendToClient = ss.ClientToBackend
	b.ReportAllocs()
	for b.Loop() {
		s.metrics.handshakes.WithLabelValues(r.name, "101").Inc()
		s.metrics.wsTotal.WithLabelValues(r.name, c.backend.Addr).Inc()
		s.metrics.recordEnd(c, ss)
	}
}
