package tls

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/tls/pebbletest"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger collects logs in a buffer, printed if the test fails or
// WSPROXY_TEST_LOGS is set (certmagic logs from goroutines that may outlive a
// test, so t.Log is not safe).
func testLogger(t testing.TB) *slog.Logger {
	var buf syncBuffer
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("WSPROXY_TEST_LOGS") != "" {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// pebble is a running Pebble ACME server (package pebbletest) with
// pebble-challtestsrv as its DNS server, answering 127.0.0.1 for every name.
type pebble struct{ *pebbletest.Server }

// startPebble starts Pebble validating HTTP-01 on httpPort and TLS-ALPN-01 on
// tlsPort of 127.0.0.1, refusing orders for blocked names. Both processes are
// killed by PID when the test ends (or by stop).
func startPebble(t testing.TB, httpPort, tlsPort int, blocked ...string) *pebble {
	t.Helper()
	return &pebble{pebbletest.Start(t, httpPort, tlsPort, blocked...)}
}

// stop kills Pebble and its DNS server by PID and waits for them.
func (p *pebble) stop() { p.Stop() }

// issued counts the certificates Pebble has issued.
func (p *pebble) issued() int { return p.Issued() }

// edge stands in for the proxy: a plain HTTP fasthttp server answering
// challenges through the Manager, and a TLS fasthttp server using its
// TLSConfig. Listeners are open (on loopback) before Pebble starts, so Pebble
// can be told their ports.
type edge struct {
	httpLn, tlsLn     net.Listener
	HTTPPort, TLSPort int
	httpHits          atomic.Int64 // challenge requests answered
	alpnHits          atomic.Int64 // acme-tls/1 handshakes
	servers           []*fasthttp.Server
	done              []chan struct{}
}

func newEdge(t testing.TB) *edge {
	t.Helper()
	e := &edge{}
	var err error
	if e.httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if e.tlsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	e.HTTPPort = e.httpLn.Addr().(*net.TCPAddr).Port
	e.TLSPort = e.tlsLn.Addr().(*net.TCPAddr).Port
	t.Cleanup(e.stop)
	return e
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// serve starts serving with m.
func (e *edge) serve(m *Manager) {
	httpSrv := &fasthttp.Server{Logger: quietLogger{}, Handler: func(ctx *fasthttp.RequestCtx) {
		if m.HandleHTTPChallenge(ctx) {
			e.httpHits.Add(1)
			return
		}
		ctx.Error("not found", fasthttp.StatusNotFound)
	}}
	cfg := m.TLSConfig()
	get := cfg.GetCertificate
	cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == "acme-tls/1" {
			e.alpnHits.Add(1)
		}
		return get(h)
	}
	tlsSrv := &fasthttp.Server{Logger: quietLogger{}, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString("hello over " + ctx.Conn().(*tls.Conn).ConnectionState().NegotiatedProtocol)
	}}
	e.servers = []*fasthttp.Server{httpSrv, tlsSrv}
	for i, ln := range []net.Listener{e.httpLn, tls.NewListener(e.tlsLn, cfg)} {
		done := make(chan struct{})
		e.done = append(e.done, done)
		go func() {
			defer close(done)
			_ = e.servers[i].Serve(ln)
		}()
	}
}

func (e *edge) stop() {
	for _, s := range e.servers {
		_ = s.Shutdown()
	}
	e.httpLn.Close()
	e.tlsLn.Close()
	for _, d := range e.done {
		<-d
	}
	e.servers, e.done = nil, nil
}

// get does a TLS handshake with sni to addr trusting only roots, then one
// HTTP request over it; it returns the connection state.
func get(addr, sni string, roots *x509.CertPool) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 60 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	state := conn.ConnectionState()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return state, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "hello over http/1.1"; string(body) != want {
		return state, fmt.Errorf("body %q, want %q", body, want)
	}
	return state, nil
}

// checkServed fails t unless state shows a verified certificate for name,
// ALPN http/1.1 and TLS 1.3.
func checkServed(t testing.TB, state tls.ConnectionState, name string) {
	t.Helper()
	if state.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", state.NegotiatedProtocol)
	}
	if state.Version != tls.VersionTLS13 {
		t.Errorf("TLS version %x, want 1.3", state.Version)
	}
	if len(state.VerifiedChains) == 0 {
		t.Fatalf("no verified chain")
	}
	if err := state.PeerCertificates[0].VerifyHostname(name); err != nil {
		t.Error(err)
	}
}

// processWide are goroutines that are not the Manager's to stop: those that
// libraries start once per process and keep (fasthttp's Date header clock;
// certmagic's ACME rate limiter, one per CA and account, shared by every
// Manager, so reloads add none), and the test servers' fasthttp worker pool
// janitor, which ends 10 seconds after Shutdown.
var processWide = []string{
	"fasthttp.updateServerDate",
	"certmagic.(*RingBufferRateLimiter).loop",
	"fasthttp.(*workerPool).Start.func2",
}

// goroutines returns the stacks of all goroutines but the caller's, by ID.
func goroutines() map[string]string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := make(map[string]string)
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the caller
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}

// noLeaks records the goroutines running now; the function it returns waits
// up to 10 seconds for every goroutine started since, except processWide
// ones, to end, and fails t with the stacks of those that do not.
func noLeaks(t testing.TB) func() {
	before := goroutines()
	return func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var leaked []string
		next:
			for id, g := range goroutines() {
				if _, ok := before[id]; ok {
					continue
				}
				for _, pw := range processWide {
					if strings.Contains(g, pw) {
						continue next
					}
				}
				leaked = append(leaked, g)
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines left running:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
