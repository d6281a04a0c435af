package tls

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// askServer approves only the given names and records what it was asked.
type askServer struct {
	*httptest.Server
	mu    sync.Mutex
	asked []string
}

func newAskServer(t testing.TB, approve ...string) *askServer {
	a := &askServer{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("domain")
		a.mu.Lock()
		a.asked = append(a.asked, name)
		a.mu.Unlock()
		for _, n := range approve {
			if n == name {
				return // 200
			}
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *askServer) askedAbout() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.asked...)
}

// TestOnDemand: a name the ask URL approves gets a certificate from Pebble at
// its first handshake; a refused name gets none; the rate limit stops
// issuance without retrying.
func TestOnDemand(t *testing.T) {
	e := newEdge(t)
	p := startPebble(t, e.HTTPPort, e.TLSPort)
	ask := newAskServer(t, "ok.wsproxy.test", "ok2.wsproxy.test")
	m, err := New(acmeGlobal(t, p, e), []Site{{Policy: Policy{
		Mode:      ModeOnDemand,
		Ask:       ask.URL + "/check?token=x",
		RateLimit: RateLimit{Burst: 1, Interval: time.Hour},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	e.serve(m)
	if err := m.Start(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p.issued() != 0 {
		t.Fatal("on-demand site obtained at Start")
	}

	start := time.Now()
	state, err := get(tlsAddr(e), "ok.wsproxy.test", p.Roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("on-demand: first handshake, certificate included, took %v", time.Since(start).Round(time.Millisecond))
	checkServed(t, state, "ok.wsproxy.test")
	if _, err := get(tlsAddr(e), "ok.wsproxy.test", p.Roots); err != nil {
		t.Fatalf("second handshake: %v", err)
	}
	if _, err := get(tlsAddr(e), "no.wsproxy.test", p.Roots); err == nil {
		t.Error("handshake for a refused name succeeded")
	}
	// Approved, but over the rate limit: refused at once, not retried.
	start = time.Now()
	if _, err := get(tlsAddr(e), "ok2.wsproxy.test", p.Roots); err == nil {
		t.Error("handshake over the rate limit succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refusal over the rate limit took %v", d)
	}
	if n := p.issued(); n != 1 {
		t.Errorf("pebble issued %d certificates, want 1", n)
	}
	asked := strings.Join(ask.askedAbout(), " ")
	for _, n := range []string{"ok.wsproxy.test", "no.wsproxy.test", "ok2.wsproxy.test"} {
		if !strings.Contains(asked, n) {
			t.Errorf("ask URL was not asked about %s (asked: %s)", n, asked)
		}
	}
	exp := m.Expiry()
	if !exp["ok.wsproxy.test"].Equal(state.PeerCertificates[0].NotAfter) {
		t.Errorf("Expiry() = %v", exp)
	}
	if _, ok := exp["no.wsproxy.test"]; ok {
		t.Errorf("Expiry() lists a refused name: %v", exp)
	}
}

func TestLimiter(t *testing.T) {
	l := &limiter{rl: RateLimit{Burst: 2, Interval: time.Minute}}
	t0 := time.Unix(1000, 0)
	for i, c := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {time.Second, true}, {2 * time.Second, false}, {60 * time.Second, true}, {60 * time.Second, false}, {61 * time.Second, true}} {
		if got := l.allow(t0.Add(c.at)); got != c.want {
			t.Errorf("%d: allow at %v = %v, want %v", i, c.at, got, c.want)
		}
	}
}
