package proxy

import (
	"bytes"
	"fmt"
	"path"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/discovery"
	"github.com/wsproxy/wsproxy/health"
	"github.com/wsproxy/wsproxy/keepalive"
	"github.com/wsproxy/wsproxy/limit"
	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/upgrade"
)

// hostTable picks the site for a request's Host on one listening port.
type hostTable struct {
	exact map[string]*site
	wild  []wildSite // longest suffix first
	any   *site
}

type wildSite struct {
	suffix string // ".example.com" for "*.example.com"
	site   *site
}

type site struct {
	routes []*route
}

// route is one compiled route block.
type route struct {
	cfg     *config.Route
	name    string
	origins *upgrade.OriginPolicy
	set     atomic.Pointer[balancer.Set]
	// relay configs by the extensions a connection negotiated: none,
	// permessage-deflate only, anything else.
	relay [3]relay.Config
	// live counts the route's WebSockets (max_connections); shared by
	// every runtime's route of the same name, so a changed route counts
	// the connections it had before the reload.
	live *atomic.Int64

	tcp     keepalive.TCP    // applied to both legs' sockets
	query   *discovery.Query // the Consul service the backends come from, if any
	check   *health.Check    // the active check of static backends, if any
	passive health.Passive   // MaxFails 0: off
	policy  balancer.Policy
	// keys is the hash key spec; nil for non-hash policies.
	keys          *balancer.KeySpec
	rejectMissing bool

	stats     *routeStats      // live traffic figures, by name across reloads
	keyLimits *relay.KeyLimits // max_message_rate_per_key; nil if none
	hsRate    *limit.Bucket    // handshake_rate; nil if none
}

// compilePolicy builds the route's selection policy from balancer's
// table. A keyed (hashing) policy falls back to LBKeyMissing's policy for
// connections without a key, unless that is "reject".
func (r *route) compilePolicy(rc *config.Route, g *config.Global) error {
	kind := balancer.Policies[rc.LBPolicy]
	args := rc.LBArgs
	if kind.Keyed {
		r.keys = &balancer.KeySpec{Sources: args.Keys, TrustedProxies: g.TrustedProxies, ClientIPHeader: g.ClientIPHeader}
		if err := r.keys.Validate(); err != nil {
			return err
		}
		if rc.LBKeyMissing == "reject" {
			r.rejectMissing = true
		} else {
			var err error
			if args.Fallback, err = balancer.New(rc.LBKeyMissing, 0); err != nil {
				return err
			}
		}
	}
	if kind.New == nil {
		return fmt.Errorf("unknown balancing policy %q", rc.LBPolicy)
	}
	p, err := kind.New(args)
	r.policy = p
	return err
}

// requireKey is key, answering 400 when the route requires a key and the
// request has none.
func (r *route) requireKey(ctx *fasthttp.RequestCtx, dst []byte) ([]byte, bool) {
	k, ok := r.key(ctx, dst)
	if !ok {
		ctx.Error("missing routing key: this route needs one of "+r.keyNames()+"\n", fasthttp.StatusBadRequest)
	}
	return k, ok
}

// maxKeyLen bounds the key a client can make the proxy hash.
const maxKeyLen = 512

// hashKey returns the part of a routing key that is hashed: its first
// maxKeyLen bytes. Routing and Lookup both cut keys here, so that they
// agree on keys longer than that.
func hashKey(k []byte) []byte {
	if len(k) > maxKeyLen {
		return k[:maxKeyLen]
	}
	return k
}

// key returns the connection's hash key, and false if the route requires
// one and the request has none (answered 400).
func (r *route) key(ctx *fasthttp.RequestCtx, dst []byte) ([]byte, bool) {
	if r.keys == nil {
		return nil, true
	}
	k, ok := r.keys.Key(ctx, dst)
	return hashKey(k), ok || !r.rejectMissing
}

// buildRoute compiles one route block over the server's env.
func buildRoute(rc *config.Route, g *config.Global, e *env) (*route, error) {
	origins, err := upgrade.CompileOrigins(rc.Origins, rc.AllowEmptyOrigin)
	if err != nil {
		return nil, err
	}
	r := &route{cfg: rc, name: rc.Name, origins: origins, live: new(atomic.Int64), stats: e.metrics.route(rc.Name)}
	r.keyLimits = relay.NewKeyLimits(relayRate(rc.MessageRatePerKey[0]), relayRate(rc.MessageRatePerKey[1]))
	r.hsRate = limit.NewBucket(rc.HandshakeRate, rc.HandshakeBurst)
	if err := r.compilePolicy(rc, g); err != nil {
		return nil, err
	}
	if rc.HealthCheck != nil && rc.Consul == nil {
		r.check = rc.HealthCheck // checked by the config, at its directives
	}
	r.passive = rc.Passive
	r.query = rc.Consul // checked by the config, at the directive
	backends := make([]*balancer.Backend, 0, len(rc.Upstreams))
	for _, u := range rc.Upstreams {
		backends = append(backends, e.backends.Backend(u.Addr, u.Weight))
	}
	r.set.Store(balancer.NewSet(backends))
	rsv := [3]byte{0, relay.RSV1, relay.RSV1 | relay.RSV2 | relay.RSV3}
	r.tcp = rc.TCP // checked by the config, at the directive
	for i := range r.relay {
		rc := &r.relay[i]
		rc.Pool = e.pool
		rc.Loops = e.loops
		if r.cfg.WriteTimeout > 0 {
			rc.WriteTimeout = r.cfg.WriteTimeout
		}
		rc.Wheel = e.wheel
		rc.ClientPing = relay.Ping(r.cfg.ClientPing)
		rc.BackendPing = relay.Ping(r.cfg.BackendPing)
		rc.IdleTimeout = r.cfg.IdleTimeout
		rc.MaxLifetime = r.cfg.MaxLifetime
		rc.Client = relay.Rules{Masked: true, AllowedRSV: rsv[i], DeflateOnly: i == 1}
		rc.Backend = relay.Rules{Masked: false, AllowedRSV: rsv[i], DeflateOnly: i == 1}
		rc.Client.MaxFrame, rc.Client.MaxMessage = uint64(r.cfg.MaxFrame[0]), uint64(r.cfg.MaxMessage[0])
		rc.Backend.MaxFrame, rc.Backend.MaxMessage = uint64(r.cfg.MaxFrame[1]), uint64(r.cfg.MaxMessage[1])
		rc.ClientRate, rc.BackendRate = relayRate(r.cfg.MessageRate[0]), relayRate(r.cfg.MessageRate[1])
		if r.cfg.MessageRatePause {
			rc.OverLimit = relay.LimitPause
		}
		rc.OnFlush = e.onFlush
		rc.OnPingRTT = e.metrics.observePing
		if e.onTune != nil {
			rc.Tune, rc.TuneAfter = func(ss *relay.Session) { e.onTune(r, ss) }, tuneAfter(r.tcp)
		}
		rc.OnStart = e.onStart
		rc.OnDone = e.onDone
	}
	return r, nil
}

// relayConfig returns the relay rules for the extensions a backend chose.
func (r *route) relayConfig(rsv byte) *relay.Config {
	switch rsv {
	case 0:
		return &r.relay[0]
	case relay.RSV1:
		return &r.relay[1]
	}
	return &r.relay[2]
}

// lookup finds the route for a request on a port, or nil.
func (t *runtime) lookup(port int, host, p []byte, args *fasthttp.Args) *route {
	ht := t.ports[port]
	if ht == nil {
		return nil
	}
	st := ht.site(host)
	if st == nil {
		return nil
	}
	for _, r := range st.routes {
		if r.match(p, args) {
			return r
		}
	}
	return nil
}

func (ht *hostTable) site(host []byte) *site {
	var lower [256]byte
	host = hostOnly(host)
	if len(host) <= len(lower) {
		for i, c := range host {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower[i] = c
		}
		host = lower[:len(host)]
	}
	if st, ok := ht.exact[string(host)]; ok {
		return st
	}
	for _, w := range ht.wild {
		// One label in place of the star: "a.example.com", not "a.b.example.com".
		if len(host) > len(w.suffix) && bytes.HasSuffix(host, []byte(w.suffix)) &&
			bytes.IndexByte(host[:len(host)-len(w.suffix)], '.') < 0 {
			return w.site
		}
	}
	return ht.any
}

// hostOnly strips the port from a Host header value.
func hostOnly(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		if i := bytes.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		return h[:i]
	}
	return h
}

func (r *route) match(p []byte, args *fasthttp.Args) bool {
	if len(r.cfg.Paths) > 0 {
		ok := false
		for i := range r.cfg.Paths {
			if matchPath(&r.cfg.Paths[i], p) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range r.cfg.Query {
		if !matchQuery(&r.cfg.Query[i], args) {
			return false
		}
	}
	return true
}

func matchPath(m *config.PathMatcher, p []byte) bool {
	switch m.Kind {
	case config.PathExact:
		return string(p) == m.Pattern
	case config.PathPrefix:
		return len(p) >= len(m.Pattern) && string(p[:len(m.Pattern)]) == m.Pattern
	default:
		ok, _ := path.Match(m.Pattern, string(p))
		return ok
	}
}

func matchQuery(m *config.QueryMatcher, args *fasthttp.Args) bool {
	for k, v := range args.All() {
		if string(k) != m.Key {
			continue
		}
		switch m.Kind {
		case config.QueryPresent:
			return true
		case config.QueryEquals:
			if string(v) == m.Value {
				return true
			}
		case config.QueryGlob:
			if ok, _ := path.Match(m.Value, string(v)); ok {
				return true
			}
		}
	}
	return false
}
