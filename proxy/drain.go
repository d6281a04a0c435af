package proxy

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"time"

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
	c.Pos = config.Pos{}
	c.Upstreams = slices.Clone(r.Upstreams)
	for i := range c.Upstreams {
		c.Upstreams[i].Pos = config.Pos{}
	}
	if r.Consul != nil {
		cs := *r.Consul
		cs.Pos = config.Pos{}
		c.Consul = &cs
	}
	return c
}

// ReloadReport says what a reload changed.
type ReloadReport struct {
	Version                     uint64
	Added, Removed, Changed     []string
	Unchanged                   int
	DrainedRoutes, DrainedConns int
}

// diffAndDrain compares the retired table with the new one and drains what
// the new one no longer has: connections of removed routes (1001), and of
// a changed route's static backends that left it (1012).
func (s *Server) diffAndDrain(old, t *table) ReloadReport {
	var rep ReloadReport
	window := t.cfg.Global.ReloadDrain
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
			for _, b := range r.set.Load().Backends() {
				stay[b.Addr] = true
			}
			gone := s.sessionsWhere(func(c *wsConn) bool { return c.route == or && !stay[c.backend.Addr] })
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
		victims := s.sessionsWhere(func(c *wsConn) bool { return c.route == or })
		if len(victims) > 0 {
			rep.DrainedRoutes++
			rep.DrainedConns += len(victims)
			closeSpread(victims, window, relay.CloseGoingAway, relay.CloseGoingAway, "route removed")
		}
	}
	return rep
}
