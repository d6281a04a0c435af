package health

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/upgrade"
)

// dialOnce tries a real backend handshake with b and reports the outcome
// to c as the proxy does.
func dialOnce(t *testing.T, c *Checker, b *balancer.Backend, set []*balancer.Backend, p Passive) error {
	t.Helper()
	var h fasthttp.RequestHeader
	h.SetRequestURI("/ws")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	up, err := upgrade.Dial(ctxTimeout(t), b.Addr, time.Second, &upgrade.UpstreamRequest{Header: &h, Host: b.Addr}, time.Second)
	switch {
	case err == nil:
		up.Conn.Close()
		c.ReportSuccess(b)
	case upgrade.Retryable(err):
		c.ReportFailure(b, set, p)
	}
	return err
}

// TestPassiveEjectsOnRefusedDials is the issue's "passive ejection on
// refused dials".
func TestPassiveEjectsOnRefusedDials(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	var reg balancer.Registry
	dead := reg.Backend(refusedAddr(t), 1)
	set := append(backends(3), dead)
	p := Passive{EjectFor: time.Hour}

	for i := range 3 {
		if !dead.Healthy() {
			t.Fatalf("ejected after %d failures, want 3", i)
		}
		err := dialOnce(t, c, dead, set, p)
		var de *upgrade.DialError
		if !errors.As(err, &de) {
			t.Fatalf("dial %d: %v, want a DialError", i, err)
		}
	}
	if dead.Healthy() {
		t.Fatal("not ejected after 3 refused dials")
	}
	s := backendState(c, dead.Addr)
	if !s.Ejected || s.Healthy || s.ActiveDown || s.Ejections != 1 {
		t.Errorf("state: %+v", s)
	}
	if d := time.Until(s.EjectedUntil); d < 59*time.Minute || d > time.Hour {
		t.Errorf("ejected for %v, want 1h", d)
	}
	// The set's policies now skip it.
	bset := balancer.NewSet(set)
	for range 20 {
		b := balancer.NewRoundRobin().Pick(bset, nil, balancer.Tried{})
		if b == nil || b.Same(dead) {
			t.Fatalf("picked %v", b)
		}
		b.Release()
	}
}

func TestPassiveSuccessResetsFailures(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	bs := backends(4)
	p := Passive{EjectFor: time.Hour}
	c.ReportFailure(bs[0], bs, p)
	c.ReportFailure(bs[0], bs, p)
	if got := backendState(c, bs[0].Addr).RecentFailures; got != 2 {
		t.Errorf("recent failures %d, want 2", got)
	}
	c.ReportSuccess(bs[0])
	c.ReportFailure(bs[0], bs, p)
	c.ReportFailure(bs[0], bs, p)
	if !bs[0].Healthy() {
		t.Error("ejected although a success came between the failures")
	}
	c.ReportFailure(bs[0], bs, p)
	if bs[0].Healthy() {
		t.Error("not ejected after 3 failures in a row")
	}
	// Failures while ejected are connections started before: ignored.
	c.ReportFailure(bs[0], bs, p)
	if s := backendState(c, bs[0].Addr); s.Ejections != 1 || s.RecentFailures != 0 {
		t.Errorf("state: %+v", s)
	}
}

func TestPassiveFailWindow(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	bs := backends(4)
	p := Passive{MaxFails: 2, FailWindow: 40 * time.Millisecond, EjectFor: time.Hour}
	c.ReportFailure(bs[0], bs, p)
	time.Sleep(60 * time.Millisecond)
	c.ReportFailure(bs[0], bs, p)
	if !bs[0].Healthy() {
		t.Error("a failure outside the window counted")
	}
	c.ReportFailure(bs[0], bs, p)
	if bs[0].Healthy() {
		t.Error("2 failures within the window did not eject")
	}
}

func TestMaxEjectedPercent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		n, pct    int
		wantUsed  int // usable backends left when every one keeps failing
		activeOff int // backends down by an active check beforehand
	}{
		{"one backend is never ejected", 1, 0, 1, 0},
		{"default keeps half of 4", 4, 0, 2, 0},
		{"default keeps half of 3, rounded up", 3, 0, 2, 0},
		{"default keeps 1 of 2", 2, 0, 1, 0},
		{"100% still keeps the last", 3, 100, 1, 0},
		{"25% of 4", 4, 25, 3, 0},
		{"90% of 10", 10, 90, 1, 0},
		{"active-down backends count as unusable", 4, 0, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newChecker(t)
			bs := backends(tc.n)
			for i := range tc.activeOff {
				fail(c, fakeProber(c, bs[i], Check{Fall: 1}))
			}
			p := Passive{EjectFor: time.Hour, MaxEjectedPercent: tc.pct}
			for range 2 { // every backend fails again and again
				for _, b := range bs {
					for range 3 {
						c.ReportFailure(b, bs, p)
					}
				}
			}
			usable := 0
			for _, b := range bs {
				if b.Healthy() {
					usable++
				}
			}
			if usable != tc.wantUsed {
				t.Errorf("%d usable, want %d", usable, tc.wantUsed)
			}
		})
	}
}

func TestEjectionNilSet(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	b := backends(1)[0]
	for range 5 {
		c.ReportFailure(b, nil, Passive{})
	}
	if !b.Healthy() {
		t.Error("a backend alone (nil set) was ejected")
	}
}

func TestEjectionExpiresAndDoubles(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	bs := backends(2)
	b := bs[0]
	const base = 20 * time.Millisecond
	p := Passive{MaxFails: 1, EjectFor: base}

	ejectFor := func() time.Duration {
		t.Helper()
		before := time.Now()
		c.ReportFailure(b, bs, p)
		if b.Healthy() {
			t.Fatal("not ejected")
		}
		return backendState(c, b.Addr).EjectedUntil.Sub(before)
	}
	near := func(got, want time.Duration) bool { return got >= want && got < want+base*3/4 }

	for i, want := range []time.Duration{base, 2 * base, 4 * base, 8 * base} {
		got := ejectFor()
		if !near(got, want) {
			t.Errorf("ejection %d lasts %v, want %v", i+1, got, want)
		}
		start := time.Now()
		eventually(t, "the backend to return", b.Healthy)
		if d := time.Since(start); d < want-base/2 {
			t.Errorf("ejection %d ended after %v, want %v", i+1, d, want)
		}
		if s := backendState(c, b.Addr); s.Ejected || !s.Healthy {
			t.Errorf("after return: %+v", s)
		}
	}
	// In for 10×EjectFor: the doubling starts over.
	time.Sleep(10*base + base/2)
	if got := ejectFor(); !near(got, base) {
		t.Errorf("after a healthy period the ejection lasts %v, want %v", got, base)
	}
	if s := backendState(c, b.Addr); s.Ejections != 5 {
		t.Errorf("ejections %d, want 5", s.Ejections)
	}
}

func TestEjectionCap(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	bs := backends(2)
	p := Passive{MaxFails: 1, EjectFor: 2 * time.Minute}
	for i, want := range []time.Duration{2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute} {
		// End the ejection by hand, as its timer would.
		before := time.Now()
		c.ReportFailure(bs[0], bs, p)
		s := backendState(c, bs[0].Addr)
		if d := s.EjectedUntil.Sub(before); d < want || d > want+time.Second {
			t.Errorf("ejection %d lasts %v, want %v", i+1, d, want)
		}
		c.mu.Lock()
		st := (*c.states.Load())[bs[0].Addr]
		timer := st.timer
		c.mu.Unlock()
		if timer.Stop() {
			c.expire(st) // does the timer's wg.Done
		}
		if !bs[0].Healthy() {
			t.Fatal("not returned")
		}
	}
}

// TestActiveAndPassiveCombine checks that neither input overrides the
// other: the backend is usable only when neither says down.
func TestActiveAndPassiveCombine(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	bs := backends(4)
	b := bs[0]
	pr := fakeProber(c, b, Check{Rise: 1, Fall: 1})
	p := Passive{EjectFor: 30 * time.Millisecond}
	eject := func() {
		for range 3 {
			c.ReportFailure(b, bs, p)
		}
		if !backendState(c, b.Addr).Ejected {
			t.Fatal("not ejected")
		}
	}

	// Active down, then ejected; the ejection ends first: still down.
	fail(c, pr)
	eject()
	eventually(t, "the ejection to end", func() bool { return !backendState(c, b.Addr).Ejected })
	if b.Healthy() {
		t.Fatal("the end of an ejection overrode a failing check")
	}
	pass(c, pr)
	if !b.Healthy() {
		t.Fatal("not healthy with a passing check and no ejection")
	}

	// Ejected, then the check fails and passes again: still ejected.
	eject()
	fail(c, pr)
	pass(c, pr)
	if s := backendState(c, b.Addr); b.Healthy() || s.ActiveDown || !s.Ejected {
		t.Fatalf("a passing check ended an ejection: healthy=%v %+v", b.Healthy(), s)
	}
	eventually(t, "the ejection to end", b.Healthy)

	// Both down, the check recovers first, then the ejection ends.
	eject()
	fail(c, pr)
	pass(c, pr)
	if b.Healthy() {
		t.Fatal("healthy while ejected")
	}
	eventually(t, "the backend to return", b.Healthy)
}

// TestPassiveConcurrent runs the hot paths together, for the race detector.
func TestPassiveConcurrent(t *testing.T) {
	t.Parallel()
	c := newChecker(t)
	bs := backends(8)
	p := Passive{EjectFor: time.Millisecond, FailWindow: 5 * time.Millisecond}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				b := bs[(g+i)%len(bs)]
				if i%3 == 0 {
					c.ReportFailure(b, bs, p)
				} else {
					c.ReportSuccess(b)
				}
				if i%200 == 0 {
					c.State()
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "every backend to return", func() bool {
		for _, b := range bs {
			if !b.Healthy() {
				return false
			}
		}
		return true
	})
}
