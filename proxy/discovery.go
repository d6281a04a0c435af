package proxy

import (
	"slices"
	"time"

	"github.com/wsproxy/wsproxy/discovery"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

// firstUpdateWait bounds how long Start and Reload wait for each Consul
// route's first answer, so the proxy does not open for traffic with empty
// routes when Consul answers promptly, nor hang when it does not.
const firstUpdateWait = 3 * time.Second

// startWatches starts what follows t's routes: active health checks of
// static backends, and Consul watches. Each runtime subscribes anew (the
// probes and watches are shared per backend and per query, so a reload
// does not restart them) and its subscriptions end with t.release.
func (s *Server) startWatches(t *runtime) error {
	for _, r := range t.routes {
		if r.check == nil {
			continue
		}
		for _, b := range r.set.Load().Backends() {
			t.stops = append(t.stops, s.health.Watch(b, *r.check))
		}
	}
	return s.startDiscovery(t)
}

// startDiscovery subscribes t's Consul routes to their services and waits
// (briefly) for their first answers.
func (s *Server) startDiscovery(t *runtime) error {
	var routes []*route
	for _, r := range t.routes {
		if r.query != nil {
			routes = append(routes, r)
		}
	}
	if len(routes) == 0 {
		return nil
	}
	c := t.consul
	deadline := time.After(firstUpdateWait)
	for _, r := range routes {
		first := make(chan struct{})
		t.stops = append(t.stops, c.Watch(*r.query, s.onUpdate(r, first)))
		select {
		case <-first:
		case <-deadline:
			s.log.Warn("no answer from Consul yet; the route answers 503 until one comes", "route", r.name, "service", r.query.Service)
		}
	}
	return nil
}

// onUpdate returns the watch callback of a route: it swaps in the new
// backend set at once (new connections stop going to a departed instance
// immediately) and drains that instance's connections if asked to.
func (s *Server) onUpdate(r *route, first chan struct{}) func(discovery.Update) {
	var prev []discovery.Instance // calls for one subscriber never overlap
	started := false
	return func(u discovery.Update) {
		if known := len(r.set.Load().Backends()); u.Err != nil && !u.Stale && !started && known > 0 {
			// A new watch (a reload that changed the consul block) that
			// cannot reach Consul knows no instances, but the route,
			// carried over from the running config, does: keep routing
			// to them until Consul answers.
			s.log.Warn("Consul unreachable: routing to the instances known before the reload", "route", r.name, "service", r.query.Service, "instances", known, "err", u.Err)
			started = true
			close(first)
			return
		}
		r.set.Store(discovery.NewSet(s.backends, u.Instances))
		switch {
		case u.Stale:
			s.log.Warn("Consul unreachable or empty: routing to the last known instances", "route", r.name, "service", r.query.Service, "instances", len(u.Instances), "err", u.Err)
		case u.Err != nil:
			s.log.Warn("Consul query failed", "route", r.name, "service", r.query.Service, "err", u.Err)
		default:
			s.log.Info("backends updated from Consul", "route", r.name, "service", r.query.Service, "instances", len(u.Instances))
		}
		if gone := discovery.Gone(prev, u.Instances); len(gone) > 0 {
			if t := s.rt.Load(); t != nil {
				t.clients.prune(t)
			}
			if r.cfg.DrainWindow > 0 && !u.Stale {
				s.drain(r, gone, r.cfg.DrainWindow)
			}
		}
		prev = u.Instances
		if !started {
			started = true
			close(first)
		}
	}
}

// drain closes, at random times within window, the connections of routes
// following the same service whose backend is one of addrs: 1012 (service
// restart) to the client, 1001 to the backend. Spreading them avoids a
// thundering herd of reconnections.
func (s *Server) drain(r *route, addrs []string, window time.Duration) {
	key := r.query.Key()
	victims := s.sessionsWhere(func(c *wsConn) bool {
		return c.route.query != nil && c.route.query.Key() == key && slices.Contains(addrs, c.backend.Addr)
	})
	if len(victims) == 0 {
		return
	}
	s.log.Info("draining connections of departed instances", "route", r.name, "instances", addrs, "connections", len(victims), "window", window)
	closeSpread(victims, window, relay.CloseServiceRestart, relay.CloseGoingAway, "backend left the service")
}
