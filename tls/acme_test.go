package tls

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// acmeGlobal points a Manager at Pebble and at e's ports.
func acmeGlobal(t testing.TB, p *pebble, e *edge) Global {
	return Global{
		StorageDir: t.TempDir(),
		CA:         p.Directory,
		CARoot:     p.MiniCA,
		Email:      "ops@wsproxy.test",
		HTTPPort:   e.HTTPPort,
		HTTPSPort:  e.TLSPort,
		ListenHost: "127.0.0.1",
		Logger:     testLogger(t),
	}
}

func tlsAddr(e *edge) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(e.TLSPort)) }

// TestACMEHTTP01 obtains a certificate from Pebble over HTTP-01 answered by
// HandleHTTPChallenge behind fasthttp, serves it, reloads from storage without
// a new issuance, and leaves no goroutine behind.
func TestACMEHTTP01(t *testing.T) {
	checkLeaks := noLeaks(t)
	e := newEdge(t)
	p := startPebble(t, e.HTTPPort, e.TLSPort)
	g := acmeGlobal(t, p, e)
	g.DisableTLSALPNChallenge = true
	sites := []Site{{Names: []string{"A.wsproxy.test"}}}

	m, err := New(g, sites)
	if err != nil {
		t.Fatal(err)
	}
	e.serve(m)
	start := time.Now()
	if err := m.Start(ctxTimeout(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	t.Logf("HTTP-01: certificate obtained from Pebble in %v", time.Since(start).Round(time.Millisecond))
	if e.httpHits.Load() == 0 || e.alpnHits.Load() != 0 {
		t.Errorf("challenges answered: %d HTTP-01, %d TLS-ALPN-01; want some HTTP-01 only", e.httpHits.Load(), e.alpnHits.Load())
	}
	state, err := get(tlsAddr(e), "a.wsproxy.test", p.Roots)
	if err != nil {
		t.Fatal(err)
	}
	checkServed(t, state, "a.wsproxy.test")
	exp := m.Expiry()
	if got := exp["a.wsproxy.test"]; !got.Equal(state.PeerCertificates[0].NotAfter) {
		t.Errorf("Expiry()[a.wsproxy.test] = %v, want %v (all: %v)", got, state.PeerCertificates[0].NotAfter, exp)
	}
	// A name no site serves gets no certificate.
	if _, err := get(tlsAddr(e), "other.wsproxy.test", p.Roots); err == nil {
		t.Error("handshake for an unknown name succeeded")
	}

	// Reload: a new Manager over the same storage loads, does not obtain.
	m2, err := New(g, sites)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := p.issued(); n != 1 {
		t.Errorf("pebble issued %d certificates, want 1", n)
	}
	if got := m2.Expiry()["a.wsproxy.test"]; !got.Equal(state.PeerCertificates[0].NotAfter) {
		t.Errorf("reloaded Manager serves a certificate expiring %v, want %v", got, state.PeerCertificates[0].NotAfter)
	}

	// Stop leaves nothing running once the servers and the CA (which
	// holds the ACME client's idle connections) are gone.
	m.Stop()
	m2.Stop()
	m2.Stop() // idempotent
	e.stop()
	p.stop()
	checkLeaks()
}

// TestACMETLSALPN01 obtains a certificate over TLS-ALPN-01 only, answered by
// TLSConfig's GetCertificate on the proxy's TLS listener.
func TestACMETLSALPN01(t *testing.T) {
	e := newEdge(t)
	p := startPebble(t, e.HTTPPort, e.TLSPort)
	g := acmeGlobal(t, p, e)
	g.DisableHTTPChallenge = true
	g.Email = "" // certmagic would ask for one on stdin: it must not
	m, err := New(g, []Site{{Names: []string{"b.wsproxy.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	e.serve(m)
	start := time.Now()
	stdout := captureStdout(t)
	err = m.Start(ctxTimeout(t, 2*time.Minute))
	if out := stdout(); out != "" {
		t.Errorf("Start wrote to stdout: %q", out)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TLS-ALPN-01: certificate obtained from Pebble in %v", time.Since(start).Round(time.Millisecond))
	if e.alpnHits.Load() == 0 || e.httpHits.Load() != 0 {
		t.Errorf("challenges answered: %d HTTP-01, %d TLS-ALPN-01; want some TLS-ALPN-01 only", e.httpHits.Load(), e.alpnHits.Load())
	}
	state, err := get(tlsAddr(e), "b.wsproxy.test", p.Roots)
	if err != nil {
		t.Fatal(err)
	}
	checkServed(t, state, "b.wsproxy.test")
}

// TestACMECARefuses: a CA that refuses a name fails Start with the site and
// the CA's reason, and the name is not served.
func TestACMECARefuses(t *testing.T) {
	e := newEdge(t)
	p := startPebble(t, e.HTTPPort, e.TLSPort, "blocked.wsproxy.test")
	m, err := New(acmeGlobal(t, p, e), []Site{
		{Names: []string{"blocked.wsproxy.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	e.serve(m)
	err = m.Start(ctxTimeout(t, time.Minute))
	var se *SiteError
	if !errors.As(err, &se) || se.Index != 0 || se.Site != "blocked.wsproxy.test" {
		t.Fatalf("Start: %v, want a SiteError for site 0", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "tls: site blocked.wsproxy.test:") || !strings.Contains(msg, "rejectedIdentifier") {
		t.Errorf("error %q does not give the site and the CA's reason", msg)
	}
	t.Logf("refusal: %v", err)
	if _, err := get(tlsAddr(e), "blocked.wsproxy.test", p.Roots); err == nil {
		t.Error("handshake succeeded for a refused name")
	}
}

// TestACMESharedStorage: two Managers (two proxy instances) sharing a storage
// directory obtain one certificate between them, and both serve it.
func TestACMESharedStorage(t *testing.T) {
	e := newEdge(t)
	p := startPebble(t, e.HTTPPort, e.TLSPort)
	g := acmeGlobal(t, p, e)
	sites := []Site{{Names: []string{"shared.wsproxy.test"}}}
	var ms [2]*Manager
	for i := range ms {
		m, err := New(g, sites)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		ms[i] = m
	}
	e.serve(ms[0]) // its challenge handlers answer for both (memory and storage)
	var wg sync.WaitGroup
	errs := make([]error, len(ms))
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.Start(ctxTimeout(t, 2*time.Minute)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Manager %d: %v", i, err)
		}
	}
	if n := p.issued(); n != 1 {
		t.Errorf("pebble issued %d certificates for two instances, want 1", n)
	}
	a, b := ms[0].Expiry()["shared.wsproxy.test"], ms[1].Expiry()["shared.wsproxy.test"]
	if a.IsZero() || !a.Equal(b) {
		t.Errorf("instances serve certificates expiring %v and %v, want the same one", a, b)
	}
}

// captureStdout sends os.Stdout to a pipe until the returned function is
// called, which returns what was written.
func captureStdout(t testing.TB) func() string {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	return func() string {
		os.Stdout = saved
		w.Close()
		s := <-out
		r.Close()
		return s
	}
}
