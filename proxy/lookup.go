package proxy

import (
	"fmt"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/config"
)

// Lookup is the answer to "where does this key go?", for publishers that
// push to the backend holding a user's connection.
type Lookup struct {
	Route string `json:"route"`
	// Key is the key as asked; like a connection's, only its first 512
	// bytes are hashed.
	Key string `json:"key"`
	// Backend is where a new connection with Key would go now: the route's
	// policy decides, with health and (for bounded loads) live counts.
	Backend string `json:"backend"`
	// Preference is the key's full order of backends under hashing, first
	// choice first, regardless of health or load; empty for other policies.
	Preference []string `json:"preference,omitempty"`
	// Sticky is false when the route's policy does not hash, so Backend is
	// only one possible answer.
	Sticky bool `json:"sticky"`
}

// Lookup answers which backend of the named route a connection with key is
// sent to. It has no side effect on the balancer.
func (s *Server) Lookup(routeName, key string) (Lookup, error) {
	return s.rt.Load().lookupKey(routeName, key)
}

func (t *runtime) lookupKey(routeName, key string) (Lookup, error) {
	r := t.byName[routeName]
	if r == nil {
		return Lookup{}, fmt.Errorf("no route named %q; routes: %s", routeName, t.routeNames())
	}
	set := r.set.Load()
	out := Lookup{Route: routeName, Key: key, Sticky: r.keys != nil}
	k := hashKey([]byte(key)) // cut as a connection's key is
	if r.keys != nil {
		for _, b := range set.AppendPreference(nil, k) {
			out.Preference = append(out.Preference, b.Addr)
		}
	}
	// Peek, not Pick and Release: a pick would move a round-robin route's
	// position and briefly count a connection that other picks would see.
	if b := r.policy.Peek(set, k); b != nil {
		out.Backend = b.Addr
	}
	return out, nil
}

// LookupConfig answers Lookup from cfg alone, as a proxy just started with
// it would: every backend healthy and idle. Like Validate it builds nothing
// that runs. A route whose backends come from Consul is an error, since the
// config does not list them: ask the running proxy's Lookup instead.
func LookupConfig(cfg *config.Config, routeName, key string) (Lookup, error) {
	t, err := validate(cfg)
	if err != nil {
		return Lookup{}, err
	}
	if r := t.byName[routeName]; r != nil && r.cfg.Consul != nil {
		return Lookup{}, fmt.Errorf("%s: route %q takes its backends from Consul service %q, which the config does not list; ask the running proxy (wsproxy route -admin ADDR)",
			r.cfg.Pos, routeName, r.cfg.Consul.Service)
	}
	return t.lookupKey(routeName, key)
}

// BackendInfo is one backend of a route as the proxy sees it now.
type BackendInfo struct {
	Addr    string `json:"addr"`
	Weight  int    `json:"weight"`
	Healthy bool   `json:"healthy"`
	Live    int64  `json:"live_connections"`
}

// RouteInfo describes one route of the running config.
type RouteInfo struct {
	Name     string        `json:"name"`
	Policy   string        `json:"policy"`
	Keys     string        `json:"keys,omitempty"`
	Live     int64         `json:"live_connections"`
	Backends []BackendInfo `json:"backends"`
	// Traffic is what the route relayed, live connections included as of
	// their last flush (at most a second old).
	Traffic RouteTraffic `json:"traffic"`
}

// Routes describes every route of the running config, in file order.
func (s *Server) Routes() []RouteInfo {
	t := s.rt.Load()
	out := make([]RouteInfo, 0, len(t.routes))
	for _, r := range t.routes {
		ri := RouteInfo{Name: r.name, Policy: r.cfg.LBPolicy, Keys: r.keyNames(), Live: r.live.Load(), Traffic: r.stats.traffic()}
		for _, b := range r.set.Load().Backends() {
			ri.Backends = append(ri.Backends, BackendInfo{Addr: b.Addr, Weight: b.Weight, Healthy: b.Healthy(), Live: b.Conns()})
		}
		out = append(out, ri)
	}
	return out
}

// Status is the proxy's state at a glance.
type Status struct {
	ConfigFile     string    `json:"config_file"`
	ConfigVersion  uint64    `json:"config_version"`
	ConfigLoadedAt time.Time `json:"config_loaded_at"`
	Started        time.Time `json:"started"`
	Live           int       `json:"live_connections"`
}

// Status reports the running config and live connection count.
func (s *Server) Status() Status {
	t := s.rt.Load()
	return Status{ConfigFile: t.cfg.File, ConfigVersion: t.version, ConfigLoadedAt: t.loaded, Started: s.started, Live: s.Sessions()}
}

// keyNames lists the route's hash key sources, as the config spells them.
func (r *route) keyNames() string {
	if r.keys == nil {
		return ""
	}
	names := make([]string, len(r.keys.Sources))
	for i, k := range r.keys.Sources {
		names[i] = k.String()
	}
	return strings.Join(names, " ")
}

// Config returns the running configuration (do not modify it).
func (s *Server) Config() *config.Config { return s.rt.Load().cfg }
