package tls

import (
	"crypto/ecdsa"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// benchLogger logs at Info, as a proxy would: certmagic's per-handshake
// Debug lines are not formatted.
var benchLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// BenchmarkHandshake measures TLS handshakes per second on loopback against
// TLSConfig, client and server on the same machine, with the ECDSA P-256
// certificate certmagic makes by default (here from the local CA, so no CA is
// needed). Sequential runs show one client's latency; -parallel has
// GOMAXPROCS clients at once (client and server share the cores, so this is
// a floor on what the server alone does). Each iteration dials, completes the handshake, reads the server's
// close and closes: a wss:// connection's TLS cost before its first byte.
func BenchmarkHandshake(b *testing.B) {
	m, err := New(Global{StorageDir: b.TempDir(), Logger: benchLogger}, []Site{
		{Names: []string{"localhost"}, Policy: Policy{Mode: ModeInternal}},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	if err := m.Start(ctxTimeout(b, time.Minute)); err != nil {
		b.Fatal(err)
	}
	roots := rootPool(b, m.LocalRoot())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	cfg := m.TLSConfig()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = tls.Server(c, cfg).Handshake()
			}()
		}
	}()

	for _, bc := range []struct {
		name     string
		version  uint16
		resume   bool
		parallel bool
	}{
		{"TLS13", tls.VersionTLS13, false, false},
		{"TLS13-parallel", tls.VersionTLS13, false, true},
		{"TLS13-resumed", tls.VersionTLS13, true, false},
		{"TLS12", tls.VersionTLS12, false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ccfg := &tls.Config{ServerName: "localhost", RootCAs: roots, NextProtos: []string{"http/1.1"},
				MinVersion: bc.version, MaxVersion: bc.version}
			if bc.resume {
				ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			dial := func() tls.ConnectionState {
				c, err := tls.Dial("tcp", ln.Addr().String(), ccfg)
				if err != nil {
					b.Fatal(err)
				}
				var buf [1]byte
				_, _ = c.Read(buf[:]) // the server closes; TLS 1.3 tickets arrive here
				state := c.ConnectionState()
				c.Close()
				return state
			}
			state := dial()
			if _, ok := state.PeerCertificates[0].PublicKey.(*ecdsa.PublicKey); !ok {
				b.Fatalf("certificate key %T, want ECDSA", state.PeerCertificates[0].PublicKey)
			}
			if bc.parallel {
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						dial()
					}
				})
			} else {
				for b.Loop() {
					state = dial()
				}
			}
			if state.Version != bc.version || state.DidResume != bc.resume || state.NegotiatedProtocol != "http/1.1" {
				b.Fatalf("version %x, resumed %v, ALPN %q", state.Version, state.DidResume, state.NegotiatedProtocol)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}

// BenchmarkGetCertificate is the cost of choosing a certificate for a
// handshake: the site lookup by SNI plus certmagic's cache lookup.
func BenchmarkGetCertificate(b *testing.B) {
	m, err := New(Global{StorageDir: b.TempDir(), Logger: benchLogger}, []Site{
		{Names: []string{"localhost", "*.dev.test"}, Policy: Policy{Mode: ModeInternal}},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	if err := m.Start(ctxTimeout(b, time.Minute)); err != nil {
		b.Fatal(err)
	}
	get := m.TLSConfig().GetCertificate
	hello := &tls.ClientHelloInfo{ServerName: "a.dev.test", SupportedProtos: []string{"http/1.1"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := get(hello); err != nil {
			b.Fatal(err)
		}
	}
}
