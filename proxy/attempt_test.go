package proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/health"
	"github.com/wsproxy/wsproxy/limit"
	"github.com/wsproxy/wsproxy/upgrade"
)

func testRoute(n, retries, maxFails int) *route {
	var reg balancer.Registry
	bs := make([]*balancer.Backend, n)
	for i := range bs {
		bs[i] = reg.Backend("127.0.0.1:"+string(rune('1'+i)), 1)
	}
	r := &route{cfg: &config.Route{LBRetries: retries}, name: "r", policy: balancer.NewRoundRobin(),
		passive: health.Passive{MaxFails: maxFails}}
	r.set.Store(balancer.NewSet(bs))
	return r
}

// TestAttemptsRetryRule: the one rule for WebSocket and HTTP alike.
func TestAttemptsRetryRule(t *testing.T) {
	t.Parallel()
	h := health.NewChecker(slog.New(slog.DiscardHandler))
	defer h.Close()
	dialErr := &upgrade.DialError{Addr: "x", Err: errors.New("refused")}
	for name, tc := range map[string]struct {
		err        error
		replayable bool
		retries    int
		want       int // attempts made
	}{
		"dial error, retried up to lb_retries": {dialErr, true, 2, 3},
		"fasthttp dial timeout":                {fasthttp.ErrDialTimeout, true, 2, 3},
		"net dial error":                       {&net.OpError{Op: "dial", Err: errors.New("refused")}, true, 1, 2},
		"handshake failed":                     {&upgrade.HandshakeError{}, true, 5, 3}, // three backends
		"backend's own answer":                 {&upgrade.HTTPResponseError{StatusCode: 401}, true, 2, 1},
		"timeout after sending":                {errors.New("read timeout"), true, 2, 1},
		"request not replayable":               {dialErr, false, 2, 1},
		"success":                              {nil, true, 2, 1},
	} {
		t.Run(name, func(t *testing.T) {
			r := testRoute(3, tc.retries, 0)
			for _, counted := range []bool{true, false} {
				att := r.attempts(h, nil, tc.replayable, counted)
				var last *balancer.Backend
				for b := att.Next(); b != nil; b = att.Next() {
					att.Report(b, tc.err)
					last = b
				}
				if att.Tries() != tc.want {
					t.Fatalf("counted %v: %d attempts, want %d", counted, att.Tries(), tc.want)
				}
				if !errors.Is(att.Err(), tc.err) && tc.err != nil || tc.err == nil && att.Err() != nil {
					t.Fatalf("Err %v, want %v", att.Err(), tc.err)
				}
				// Only a counted success keeps a live count on its backend.
				var live int64
				for _, b := range r.set.Load().Backends() {
					live += b.Conns()
				}
				if want := int64(0); counted && tc.err == nil {
					if live != 1 {
						t.Fatalf("live count %d after a counted success, want 1", live)
					}
					last.Release()
				} else if live != want {
					t.Fatalf("live count %d, want 0", live)
				}
			}
		})
	}
}

// TestAttemptsReportPassiveHealth: backend failures count towards ejection,
// the backend's own answers do not.
func TestAttemptsReportPassiveHealth(t *testing.T) {
	t.Parallel()
	h := health.NewChecker(slog.New(slog.DiscardHandler))
	defer h.Close()
	r := testRoute(3, 0, 2)
	b := r.set.Load().Backends()[0]
	fail := func(err error) {
		att := r.attempts(h, nil, true, false)
		att.Next()
		att.Report(b, err)
	}
	fail(&upgrade.HTTPResponseError{StatusCode: 401})
	fail(&upgrade.HTTPResponseError{StatusCode: 401})
	if !b.Healthy() {
		t.Fatal("ejected for the backend's own answers")
	}
	fail(&upgrade.DialError{Addr: b.Addr, Err: errors.New("refused")})
	fail(&upgrade.DialError{Addr: b.Addr, Err: errors.New("refused")})
	if b.Healthy() {
		t.Fatal("not ejected after max_fails dial failures")
	}
}

// TestTicketReleasedOnce: an admission counts against all three caps and
// Release gives it back once however often it is called.
func TestTicketReleasedOnce(t *testing.T) {
	t.Parallel()
	var live atomic.Int64
	cfg := &config.Config{}
	cfg.Global.MaxConnections = 2
	rt := &runtime{cfg: cfg, perIP: limit.NewPerIP(1)}
	r := &route{cfg: &config.Route{MaxConnections: 1}, live: new(atomic.Int64)}
	ip, other := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	tk, why := admit(&live, rt, r, ip)
	if why != admitted {
		t.Fatalf("first admission: %v", why)
	}
	if _, why := admit(&live, rt, r, ip); why != overPerIP {
		t.Fatalf("second from one address: %v, want overPerIP", why)
	}
	if _, why := admit(&live, rt, r, other); why != overCapacity {
		t.Fatalf("second on a route capped at 1: %v, want overCapacity", why)
	}
	if live.Load() != 1 || r.live.Load() != 1 {
		t.Fatalf("refusals counted: live %d, route %d", live.Load(), r.live.Load())
	}
	tk.Release()
	tk.Release()
	var none *ticket
	none.Release()
	if live.Load() != 0 || r.live.Load() != 0 {
		t.Fatalf("after Release twice: live %d, route %d, want 0", live.Load(), r.live.Load())
	}
	tk2, why := admit(&live, rt, r, ip)
	if why != admitted {
		t.Fatalf("after release, the per-IP slot is still taken: %v", why)
	}
	tk2.Release()
}
