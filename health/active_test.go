package health

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/examples/echoserver"
)

// TestHTTPCheckFailsAndRecovers is the issue's "a backend that starts
// failing its check leaves the set and returns after it recovers".
func TestHTTPCheckFailsAndRecovers(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t)
	c := newChecker(t)
	b := balancer.NewBackend(hb.addr(), 1)
	set := balancer.NewSet([]*balancer.Backend{b})
	stop := c.Watch(b, fast(HTTP, "/healthz"))
	defer stop()

	eventually(t, "two passing probes", func() bool { return checkState(t, c, b.Addr).Successes >= 2 })
	if !b.Healthy() {
		t.Fatal("a passing backend is unhealthy")
	}

	hb.status.Store(http.StatusServiceUnavailable)
	eventually(t, "the backend to go down", func() bool { return !b.Healthy() })
	cs := checkState(t, c, b.Addr)
	if cs.Failures < 3 || cs.Healthy || !strings.Contains(cs.LastError, "503") {
		t.Errorf("after going down: %+v", cs)
	}
	if s := backendState(c, b.Addr); !s.ActiveDown || s.Healthy || s.Ejected {
		t.Errorf("backend state: %+v", s)
	}
	if got := balancer.NewRoundRobin().Pick(set, nil, balancer.Tried{}); got != nil {
		t.Errorf("a policy picked the unhealthy backend")
	}

	hb.status.Store(http.StatusOK)
	eventually(t, "the backend to come back", b.Healthy)
	cs = checkState(t, c, b.Addr)
	if cs.Successes < 2 || !cs.Healthy || cs.LastError != "" {
		t.Errorf("after coming back: %+v", cs)
	}
	if got := hb.path.Load(); got == nil || *got != "/healthz" {
		t.Errorf("probe path %v", got)
	}
}

// TestRiseAndFallCounts checks the exact counts with results recorded by
// hand.
func TestRiseAndFallCounts(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	b := backends(1)[0]
	p := fakeProber(c, b, Check{Rise: 2, Fall: 3})
	steps := []struct {
		ok   bool
		want bool // healthy afterwards
	}{
		{false, true}, {false, true}, {true, true}, // a success resets the failures
		{false, true}, {false, true}, {false, false}, // third failure in a row
		{true, false}, {false, false}, {true, false}, {true, true}, // two successes in a row
		{false, true},
	}
	for i, s := range steps {
		if s.ok {
			pass(c, p)
		} else {
			fail(c, p)
		}
		if b.Healthy() != s.want {
			t.Fatalf("step %d (ok=%v): healthy=%v, want %v", i, s.ok, b.Healthy(), s.want)
		}
	}
	if cs := checkState(t, c, b.Addr); cs.Probes != uint64(len(steps)) || cs.Failures != 1 || cs.LastError != errProbe.Error() {
		t.Errorf("state: %+v", cs)
	}
}

func TestHTTPCheckStatus(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t)
	hb.status.Store(http.StatusTeapot)
	c := newChecker(t)

	// Expecting 418, getting 418: healthy.
	var reg balancer.Registry
	ok := reg.Backend(hb.addr(), 1)
	chk := fast(HTTP, "/")
	chk.Status = http.StatusTeapot
	defer c.Watch(ok, chk)()
	// Expecting any 2xx, getting 418: unhealthy.
	bad := reg.Backend(hb.addr(), 2)
	defer c.Watch(bad, fast(HTTP, "/"))()

	eventually(t, "the 2xx check to fail", func() bool { return !bad.Healthy() })
	s := backendState(c, hb.addr())
	if len(s.Checks) != 2 {
		t.Fatalf("checks: %+v", s.Checks)
	}
	for _, cs := range s.Checks {
		switch cs.Check.Status {
		case http.StatusTeapot:
			if !cs.Healthy || cs.Failures != 0 || cs.Probes == 0 {
				t.Errorf("418 check: %+v", cs)
			}
		case 0:
			if cs.Healthy || !strings.Contains(cs.LastError, "HTTP status 418, want 2xx") {
				t.Errorf("2xx check: %+v", cs)
			}
		}
	}
	// One address: any check saying down makes it down, whichever Backend
	// (sharing live state) the check was given.
	if ok.Healthy() {
		t.Error("address healthy while one of its checks fails")
	}
}

func TestHTTPCheckStatusMismatch(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t) // answers 200
	c := newChecker(t)
	b := balancer.NewBackend(hb.addr(), 1)
	chk := fast(HTTP, "/")
	chk.Status = http.StatusNoContent
	defer c.Watch(b, chk)()
	eventually(t, "the backend to go down", func() bool { return !b.Healthy() })
	if cs := checkState(t, c, b.Addr); !strings.Contains(cs.LastError, "HTTP status 200, want 204") {
		t.Errorf("last error %q", cs.LastError)
	}
}

func TestHTTPCheckTimeout(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t)
	hb.hang.Store(true)
	c := newChecker(t)
	b := balancer.NewBackend(hb.addr(), 1)
	chk := fast(HTTP, "/")
	chk.Timeout = 30 * time.Millisecond
	chk.Fall = 2
	defer c.Watch(b, chk)()
	eventually(t, "the backend to go down", func() bool { return !b.Healthy() })
	if cs := checkState(t, c, b.Addr); !strings.Contains(cs.LastError, "no answer within 30ms") || cs.Failures < 2 {
		t.Errorf("state: %+v", cs)
	}
}

func TestHTTPCheckRefused(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	b := balancer.NewBackend(refusedAddr(t), 1)
	defer c.Watch(b, fast(HTTP, "/"))()
	eventually(t, "the backend to go down", func() bool { return !b.Healthy() })
	if cs := checkState(t, c, b.Addr); !strings.Contains(cs.LastError, "refused") {
		t.Errorf("last error %q", cs.LastError)
	}
}

func TestHTTPCheckHost(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t)
	c := newChecker(t)
	b := balancer.NewBackend(hb.addr(), 1)
	chk := fast(HTTP, "/status")
	chk.Host = "backend.example"
	stop := c.Watch(b, chk)
	eventually(t, "a probe", func() bool { return hb.requests.Load() > 0 })
	stop()
	if h := hb.host.Load(); *h != "backend.example" {
		t.Errorf("Host %q", *h)
	}

	// Default: the backend's address.
	stop = c.Watch(b, fast(HTTP, "/default"))
	eventually(t, "a probe", func() bool { p := hb.path.Load(); return *p == "/default" })
	stop()
	if h := hb.host.Load(); *h != hb.addr() {
		t.Errorf("default Host %q, want %q", *h, hb.addr())
	}
}

func TestWebSocketCheck(t *testing.T) {
	t.Parallel()
	srv, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := newChecker(t)

	up := balancer.NewBackend(srv.Addr(), 1)
	defer c.Watch(up, fast(WebSocket, "/ws"))()
	down := balancer.NewBackend(refusedAddr(t), 1)
	defer c.Watch(down, fast(WebSocket, "/ws"))()

	eventually(t, "the closed port to go down", func() bool { return !down.Healthy() })
	eventually(t, "three probes of the echo server", func() bool { return checkState(t, c, up.Addr).Probes >= 3 })
	if cs := checkState(t, c, up.Addr); !up.Healthy() || cs.Failures != 0 || cs.LastError != "" {
		t.Errorf("echo server: healthy=%v %+v", up.Healthy(), cs)
	}
	if cs := checkState(t, c, down.Addr); !strings.Contains(cs.LastError, "refused") {
		t.Errorf("closed port: %+v", cs)
	}
	// Each probe closes its connection.
	eventually(t, "the probes' connections to close", func() bool { return srv.Conns() == 0 })
}

func TestWebSocketCheckRefusedUpgrade(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t) // a plain HTTP server answers 200, not 101
	c := newChecker(t)
	b := balancer.NewBackend(hb.addr(), 1)
	defer c.Watch(b, fast(WebSocket, "/"))()
	eventually(t, "the backend to go down", func() bool { return !b.Healthy() })
	if cs := checkState(t, c, b.Addr); !strings.Contains(cs.LastError, "HTTP 200") {
		t.Errorf("last error %q", cs.LastError)
	}
}

func TestWatchSharesOneProbe(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t)
	c := newChecker(t)
	var reg balancer.Registry
	b1 := reg.Backend(hb.addr(), 1)
	b2 := reg.Backend(hb.addr(), 5) // another route's weight, same address

	chk := fast(HTTP, "")
	explicit := chk.WithDefaults() // the same check once defaults are in
	stop1 := c.Watch(b1, chk)
	stop2 := c.Watch(b2, explicit)
	if n := c.running.Load(); n != 1 {
		t.Fatalf("%d probe goroutines for one address and check, want 1", n)
	}
	if cs := checkState(t, c, hb.addr()); cs.Watchers != 2 {
		t.Errorf("watchers %d, want 2", cs.Watchers)
	}

	other := explicit
	other.Path = "/other"
	stop3 := c.Watch(b1, other)
	if n := c.running.Load(); n != 2 {
		t.Errorf("%d probe goroutines for two checks, want 2", n)
	}
	stop3()

	stop1()
	stop1() // idempotent: must not drop stop2's watch
	if n := c.running.Load(); n != 1 {
		t.Fatalf("%d probe goroutines after one of two stops, want 1", n)
	}
	if cs := checkState(t, c, hb.addr()); cs.Watchers != 1 {
		t.Errorf("watchers %d, want 1", cs.Watchers)
	}
	stop2()
	if n := c.running.Load(); n != 0 {
		t.Errorf("%d probe goroutines after the last stop", n)
	}
	if s := c.State(); len(s) != 0 {
		t.Errorf("state kept after the last watch: %+v", s)
	}
}

func TestStopReleasesDownBackend(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	b := balancer.NewBackend(refusedAddr(t), 1)
	stop := c.Watch(b, fast(HTTP, "/"))
	eventually(t, "the backend to go down", func() bool { return !b.Healthy() })
	stop()
	if !b.Healthy() {
		t.Error("backend still down after its only check stopped")
	}
}

func TestStopAndCloseLeaveNoGoroutines(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t)
	hb.hang.Store(true) // probes are in flight when stopped
	c := NewChecker(nil)
	b := balancer.NewBackend(hb.addr(), 1)
	chk := fast(HTTP, "/")
	chk.Timeout = time.Minute

	stop := c.Watch(b, chk)
	eventually(t, "a probe in flight", func() bool { return hb.requests.Load() > 0 })
	start := time.Now()
	stop()
	if n := c.running.Load(); n != 0 {
		t.Errorf("%d probe goroutines after stop", n)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("stop took %v with a probe in flight", d)
	}

	for i := range 5 {
		chk.Path = "/" + string(rune('a'+i))
		c.Watch(b, chk)
	}
	c.ReportFailure(b, nil, Passive{})
	start = time.Now()
	c.Close()
	if n := c.running.Load(); n != 0 {
		t.Errorf("%d probe goroutines after Close", n)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with probes in flight", d)
	}
	c.Close() // idempotent

	// A closed Checker starts nothing.
	stop = c.Watch(b, fast(HTTP, "/after"))
	if n := c.running.Load(); n != 0 {
		t.Errorf("Watch after Close started %d goroutines", n)
	}
	stop()
}

func TestWatchInvalidCheck(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	b := backends(1)[0]
	stop := c.Watch(b, Check{Path: "no-slash"})
	defer stop()
	if n := c.running.Load(); n != 0 {
		t.Errorf("an invalid check started %d goroutines", n)
	}
}

func TestCloseRestoresHealth(t *testing.T) {
	t.Parallel()
	c := NewChecker(nil)
	bs := backends(4)
	p := fakeProber(c, bs[0], Check{Fall: 1})
	fail(c, p)
	for range 3 {
		c.ReportFailure(bs[1], bs, Passive{EjectFor: time.Hour})
	}
	if bs[0].Healthy() || bs[1].Healthy() {
		t.Fatal("setup: backends not down")
	}
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close waited %v for an ejection timer", d)
	}
	if !bs[0].Healthy() || !bs[1].Healthy() {
		t.Error("Close left backends down")
	}
}
