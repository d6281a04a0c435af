package proxy

import (
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

// drainRate is how many connections per second a drain closes at most: the
// closes are spread over min(window, n/drainRate), so a few connections go
// at once while a hundred thousand do not all reconnect in the same second.
const drainRate = 1000

// closeSpread closes sessions from the proxy's side at random times within
// the spread of window for their number.
func closeSpread(sessions []*relay.Session, window time.Duration, toClient, toBackend uint16, reason string) {
	spread := min(window, time.Duration(len(sessions))*time.Second/drainRate)
	for _, ss := range sessions {
		if spread <= 0 {
			ss.Close(toClient, toBackend, reason)
			continue
		}
		time.AfterFunc(rand.N(spread), func() { ss.Close(toClient, toBackend, reason) })
	}
}

// probeChanged dials the static backends of the routes that t changes and
// whose backend set differs from the old route's, once per address, and
// returns the result by address. Routes whose backends did not change are
// not dialled: nothing of theirs is drained.
func (s *Server) probeChanged(old, t *runtime) map[string]error {
	timeouts := map[string]time.Duration{}
	for _, r := range t.routes {
		or := old.byName[r.name]
		if or == nil || or == r || r.query != nil || sameAddrs(or.set.Load(), r.set.Load()) {
			continue
		}
		for _, b := range r.set.Load().Backends() {
			timeouts[b.Addr] = min(r.cfg.DialTimeout, reloadProbeTimeout)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string]error, len(timeouts))
	for addr, d := range timeouts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := (&net.Dialer{Timeout: d}).DialContext(s.ctx, "tcp", addr)
			if err == nil {
				c.Close()
			}
			mu.Lock()
			out[addr] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func sameAddrs(a, b *balancer.Set) bool {
	in := map[string]bool{}
	for _, x := range a.Backends() {
		in[x.Addr] = true
	}
	bs := b.Backends()
	if len(bs) != len(in) {
		return false
	}
	for _, x := range bs {
		if !in[x.Addr] {
			return false
		}
	}
	return true
}

// sessionsWhere returns the live sessions whose connection matches keep.
func (s *Server) sessionsWhere(keep func(*wsConn) bool) []*relay.Session {
	return s.sessions.list(func(ss *relay.Session) bool { return keep(ss.Tag.(*wsConn)) })
}

// sameRoute reports whether two route configs compile to the same route, so
// a reload can keep the running one (its connections, counters and
// backends) as it is. Positions in the file do not count.
func sameRoute(a, b *config.Route, ga, gb *config.Global) bool {
	if !reflect.DeepEqual(ga.TrustedProxies, gb.TrustedProxies) || ga.ClientIPHeader != gb.ClientIPHeader {
		return false // hash keys depend on them
	}
	return reflect.DeepEqual(withoutPos(a), withoutPos(b))
}

func withoutPos(r *config.Route) config.Route {
	c := *r
	c.Pos, c.HealthCheckPos, c.ConsulPos = config.Pos{}, config.Pos{}, config.Pos{}
	c.Upstreams = slices.Clone(r.Upstreams)
	for i := range c.Upstreams {
		c.Upstreams[i].Pos = config.Pos{}
	}
	return c
}

// ReloadReport says what a reload changed.
//
// Its JSON (the admin API's answer to POST /reload, which wsproxy reload
// prints) uses snake_case names, as Status does.
type ReloadReport struct {
	Version       uint64   `json:"version"`
	Added         []string `json:"added"`
	Removed       []string `json:"removed"`
	Changed       []string `json:"changed"`
	Unchanged     int      `json:"unchanged"`
	DrainedRoutes int      `json:"drained_routes"`
	DrainedConns  int      `json:"drained_connections"`
	// Unreachable lists the static backends of changed routes that a TCP
	// dial did not reach when the reload was applied, as
	// "ROUTE: ADDR: ERROR".
	Unreachable []string `json:"unreachable"`
	// KeptConns counts the live connections on backends that left a
	// changed route and were not drained, because none of the route's new
	// backends was reachable.
	KeptConns int `json:"kept_connections"`
}

// reloadProbeTimeout bounds the reachability check of a reload's new
// backends (or the route's dial_timeout if shorter).
const reloadProbeTimeout = time.Second

// diffAndDrain compares the retired runtime with the new one and drains what
// the new one no longer has: connections of removed routes (1001), and of
// a changed route's static backends that left it (1012).
//
// The rule for the latter: a changed route's new static backends are
// dialled first (TCP, in parallel, within a second), and connections to
// the backends that left it are drained only if at least one of its new
// backends answered. Otherwise (a mistyped address, a backend not started
// yet) they keep serving their live sessions until they end or a later
// reload drains them, and the report and the log list the unreachable
// backends. New connections follow the new config either way.
//
// Sessions are matched to routes by name, so those kept by one reload are
// drained by a later one that makes the route's backends reachable.
func (s *Server) diffAndDrain(old, t *runtime) ReloadReport {
	var rep ReloadReport
	window := t.cfg.Global.ReloadDrain
	reach := s.probeChanged(old, t)
	for _, r := range t.routes {
		or := old.byName[r.name]
		switch {
		case or == nil:
			rep.Added = append(rep.Added, r.name)
		case or == r:
			rep.Unchanged++
		default:
			rep.Changed = append(rep.Changed, r.name)
			if r.query != nil {
				continue // Consul routes drain on instance removal, by their own setting
			}
			stay := map[string]bool{}
			anyUp := false
			for _, b := range r.set.Load().Backends() {
				stay[b.Addr] = true
				if err, probed := reach[b.Addr]; !probed || err == nil {
					anyUp = true
				} else {
					rep.Unreachable = append(rep.Unreachable, r.name+": "+b.Addr+": "+err.Error())
				}
			}
			gone := s.sessionsWhere(func(c *wsConn) bool { return c.route.name == r.name && !stay[c.backend.Addr] })
			if !anyUp {
				rep.KeptConns += len(gone)
				continue
			}
			if len(gone) > 0 {
				rep.DrainedConns += len(gone)
				closeSpread(gone, window, relay.CloseServiceRestart, relay.CloseGoingAway, "backend removed from the route")
			}
		}
	}
	for _, or := range old.routes {
		if t.byName[or.name] != nil {
			continue
		}
		rep.Removed = append(rep.Removed, or.name)
		victims := s.sessionsWhere(func(c *wsConn) bool { return c.route.name == or.name })
		if len(victims) > 0 {
			rep.DrainedRoutes++
			rep.DrainedConns += len(victims)
			closeSpread(victims, window, relay.CloseGoingAway, relay.CloseGoingAway, "route removed")
		}
	}
	return rep
}
