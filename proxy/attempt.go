package proxy

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/health"
	"github.com/wsproxy/wsproxy/limit"
	"github.com/wsproxy/wsproxy/upgrade"
)

// attempts are the tries at backends for one request, WebSocket or plain
// HTTP, under one rule:
//
//	att := r.attempts(checker, key, replayable)
//	for b := att.Next(); b != nil; b = att.Next() {
//		err := try(b)
//		if !att.Report(b, err) {
//			break
//		}
//	}
//
// Next picks a backend the request has not tried yet (nil when none is
// left or the route's lb_retries are used up); Report feeds passive health
// and says whether another attempt may follow. Neither blocks, so the same
// value drives a synchronous loop or a chain of callbacks (an event loop's
// dial completions): the caller keeps it, and key, alive between them. A
// backend Next returns is counted as a live connection on it; Report
// releases that count after a failure, and after a success the caller
// owns it (a WebSocket keeps it for the connection's life). Plain HTTP
// requests are not counted: their attempts release at once.
//
// It is not safe for concurrent use: one request, one attempt at a time.
type attempts struct {
	r          *route
	health     *health.Checker
	set        *balancer.Set
	key        []byte
	tried      balancer.Tried
	n          int
	replayable bool // the request can be sent again
	counted    bool // the connection stays counted on the backend
	last       error
	done       bool // Report said no further attempt
}

// attempts starts the tries of one request on r. replayable says the
// request can be sent again after a failed attempt (a plain request whose
// body has been streamed cannot); counted says a success keeps the
// backend's live count (WebSocket connections).
func (r *route) attempts(h *health.Checker, key []byte, replayable, counted bool) attempts {
	return attempts{r: r, health: h, set: r.set.Load(), key: key, replayable: replayable, counted: counted}
}

// Next returns the backend to try next, or nil when there is none.
func (a *attempts) Next() *balancer.Backend {
	if a.done || a.n > a.r.cfg.LBRetries {
		return nil
	}
	b := a.r.policy.Pick(a.set, a.key, a.tried)
	if b == nil {
		return nil
	}
	a.n++
	if !a.counted {
		b.Release()
	}
	return b
}

// Report records the outcome of the attempt at b (err nil for success)
// and reports whether another attempt may follow: only after a backend
// failure (see backendFailed) of a request that can be sent again.
// Passive health counts exactly those failures, and a success clears
// them; a backend's own answer (a 401 to a handshake, an HTTP timeout
// after the request went out) is neither.
func (a *attempts) Report(b *balancer.Backend, err error) bool {
	failed := err != nil && backendFailed(err)
	if err != nil && a.counted {
		b.Release()
	}
	if a.r.passive.MaxFails > 0 {
		switch {
		case err == nil:
			a.health.ReportSuccess(b)
		case failed:
			a.health.ReportFailure(b, a.set.Backends(), a.r.passive)
		}
	}
	if err == nil {
		a.last, a.done = nil, true
		return false
	}
	a.last = err
	a.done = !(failed && a.replayable && a.tried.Add(b))
	return !a.done
}

// Err is the error of the last attempt; nil if none failed (or none was
// made: no backend available).
func (a *attempts) Err() error { return a.last }

// Tries is the number of attempts made so far.
func (a *attempts) Tries() int { return a.n }

// backendFailed is the one retry rule: the attempt failed before the
// backend could act on the request, so another backend may be tried. That
// is a failed dial (upgrade.DialError, fasthttp's dial errors), or a
// WebSocket handshake the backend did not complete (upgrade.HandshakeError).
// A backend's own answer, a timeout after the request was sent, and a
// cancelled request are not.
func backendFailed(err error) bool {
	if upgrade.Retryable(err) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, fasthttp.ErrDialTimeout)
}

// ticket is one WebSocket's admission: its count against the proxy's
// max_connections, its route's, and its client address's
// max_connections_per_ip. Release gives all three back, once however
// often it is called; whoever holds the connection calls it when the
// connection ends or never starts.
type ticket struct {
	live     *atomic.Int64 // the proxy's
	route    *route
	perIP    *limit.PerIP // the limiter ip was counted on (reloads share its counts)
	ip       netip.Addr
	released atomic.Bool
}

// admission is why admit refused a connection.
type admission int

const (
	admitted     admission = iota
	overPerIP              // 429
	overCapacity           // 503: the proxy's or the route's cap
)

// admit counts a new WebSocket from ip against the per-IP, proxy and
// route caps, and returns its ticket; when a cap is full it counts nothing
// and says which.
func admit(live *atomic.Int64, rt *runtime, r *route, ip netip.Addr) (*ticket, admission) {
	if !rt.perIP.Acquire(ip) {
		return nil, overPerIP
	}
	if max := int64(rt.cfg.Global.MaxConnections); live.Add(1) > max && max > 0 {
		live.Add(-1)
		rt.perIP.Release(ip)
		return nil, overCapacity
	}
	if max := int64(r.cfg.MaxConnections); r.live.Add(1) > max && max > 0 {
		r.live.Add(-1)
		live.Add(-1)
		rt.perIP.Release(ip)
		return nil, overCapacity
	}
	return &ticket{live: live, route: r, perIP: rt.perIP, ip: ip}, admitted
}

// Release gives the admission back; calls after the first do nothing. A
// nil ticket is none.
func (t *ticket) Release() {
	if t == nil || t.released.Swap(true) {
		return
	}
	t.route.live.Add(-1)
	t.live.Add(-1)
	t.perIP.Release(t.ip)
}
