package proxy

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync/atomic"
	"time"

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

// table is the compiled, immutable routing form of one config. A reload
// builds a new table and swaps the Server's pointer; requests that loaded
// the old one finish with it.
type table struct {
	cfg     *config.Config
	ports   map[int]*hostTable
	routes  []*route
	byName  map[string]*route
	loaded  time.Time
	version uint64 // 0 for the first config, +1 per reload

	// clientIP finds a client's real address (trusted_proxies) for the
	// per-IP limits.
	clientIP balancer.KeySpec
	perIP    *limit.PerIP
	rate     *limit.Rate

	access *accessLog

	// Consul subscriptions of this table's routes, ended when it is retired.
	consul *discovery.Consul
	stops  []func()
}

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
	live  atomic.Int64

	tcp     keepalive.TCP    // applied to both legs' sockets
	query   *discovery.Query // the Consul service the backends come from, if any
	check   *health.Check    // the active check of static backends, if any
	passive health.Passive   // MaxFails 0: off
	policy  balancer.Policy
	// keys is the hash key spec; nil for non-hash policies.
	keys          *balancer.KeySpec
	rejectMissing bool
	clientKey     string // see hostClient

	stats     *routeStats      // live traffic figures, by name across reloads
	keyLimits *relay.KeyLimits // max_message_rate_per_key; nil if none
	hsRate    *limit.Bucket    // handshake_rate; nil if none
}

// compilePolicy builds the route's selection policy. A hash policy falls
// back to LBKeyMissing's policy for connections without a key, unless that
// is "reject".
func (r *route) compilePolicy(rc *config.Route, g *config.Global) error {
	if rc.LBPolicy != balancer.NameHash {
		p, err := balancer.New(rc.LBPolicy, 0)
		r.policy = p
		return err
	}
	r.keys = &balancer.KeySpec{Sources: rc.LBKeys, TrustedProxies: g.TrustedProxies, ClientIPHeader: g.ClientIPHeader}
	if err := r.keys.Validate(); err != nil {
		return err
	}
	var fallback balancer.Policy
	if rc.LBKeyMissing == "reject" {
		r.rejectMissing = true
	} else {
		var err error
		if fallback, err = balancer.New(rc.LBKeyMissing, 0); err != nil {
			return err
		}
	}
	h, err := balancer.NewHash(rc.LBLoadFactor, fallback)
	r.policy = h
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

func (s *Server) compile(cfg *config.Config) (*table, error) {
	t := &table{cfg: cfg, ports: map[int]*hostTable{}, byName: map[string]*route{}, loaded: time.Now()}
	g := &cfg.Global
	t.clientIP = balancer.KeySpec{TrustedProxies: g.TrustedProxies, ClientIPHeader: g.ClientIPHeader}
	// Carry the live per-IP counts across every reload, whatever the new
	// cap: a fresh limiter would start each client at zero and let it open
	// the new cap on top of what it holds. WithMax leaves the running
	// limiter untouched, so a reload that fails later changes nothing.
	if old := s.table.Load(); old != nil {
		t.perIP = old.perIP.WithMax(g.MaxConnectionsPerIP)
	} else {
		t.perIP = limit.NewPerIP(g.MaxConnectionsPerIP)
	}
	if s.validating {
		if err := checkAccessLog(g.AccessLog); err != nil {
			return nil, err
		}
		t.access = &accessLog{}
	} else if old := s.table.Load(); old != nil && old.cfg.Global.AccessLog == g.AccessLog && old.cfg.Global.AccessLogSample == g.AccessLogSample {
		t.access = old.access
	} else {
		a, err := newAccessLog(g.AccessLog, g.AccessLogSample)
		if err != nil {
			return nil, err
		}
		t.access = a
		s.keepAccessLog(a)
	}
	if old := s.table.Load(); old != nil && old.cfg.Global.HandshakeRatePerIP == g.HandshakeRatePerIP && old.cfg.Global.HandshakeBurstPerIP == g.HandshakeBurstPerIP {
		t.rate = old.rate
	} else {
		t.rate = limit.NewRate(g.HandshakeRatePerIP, g.HandshakeBurstPerIP)
	}
	for _, sc := range cfg.Sites {
		st := &site{}
		for _, rc := range sc.Routes {
			r, err := s.compileRoute(rc, &cfg.Global)
			if err != nil {
				return nil, fmt.Errorf("%s: route %q: %w", rc.Pos, rc.Name, err)
			}
			// An unchanged route is carried over as it runs: its live
			// connections, counters and backends are not touched.
			if old := s.table.Load(); old != nil {
				if or := old.byName[rc.Name]; or != nil && sameRoute(or.cfg, rc, &old.cfg.Global, &cfg.Global) {
					r = or
				}
			}
			st.routes = append(st.routes, r)
			t.routes = append(t.routes, r)
			t.byName[r.name] = r
		}
		for _, a := range sc.Addresses {
			ht := t.ports[a.Port]
			if ht == nil {
				ht = &hostTable{exact: map[string]*site{}}
				t.ports[a.Port] = ht
			}
			switch {
			case a.Host == "":
				ht.any = st
			case strings.HasPrefix(a.Host, "*."):
				ht.wild = append(ht.wild, wildSite{suffix: a.Host[1:], site: st})
			default:
				ht.exact[a.Host] = st
			}
		}
	}
	for _, ht := range t.ports {
		sort.SliceStable(ht.wild, func(i, j int) bool { return len(ht.wild[i].suffix) > len(ht.wild[j].suffix) })
	}
	return t, nil
}

func (s *Server) compileRoute(rc *config.Route, g *config.Global) (*route, error) {
	origins, err := upgrade.CompileOrigins(rc.Origins, rc.AllowEmptyOrigin)
	if err != nil {
		return nil, err
	}
	r := &route{cfg: rc, name: rc.Name, origins: origins, clientKey: clientKey(rc), stats: s.metrics.route(rc.Name)}
	r.keyLimits = relay.NewKeyLimits(relayRate(rc.MessageRatePerKey[0]), relayRate(rc.MessageRatePerKey[1]))
	r.hsRate = limit.NewBucket(rc.HandshakeRate, rc.HandshakeBurst)
	if err := r.compilePolicy(rc, g); err != nil {
		return nil, err
	}
	if hc := rc.HealthCheck; hc != nil && rc.Consul == nil {
		kind := health.HTTP
		if hc.WebSocket {
			kind = health.WebSocket
		}
		c := health.Check{Kind: kind, Path: hc.Path, Status: hc.Status, Interval: hc.Interval, Timeout: hc.Timeout, Rise: hc.Passes, Fall: hc.Fails}
		if err := c.Validate(); err != nil {
			return nil, err
		}
		r.check = &c
	}
	r.passive = health.Passive{MaxFails: rc.Passive.MaxFails, FailWindow: rc.Passive.FailWindow, EjectFor: rc.Passive.EjectFor, MaxEjectedPercent: rc.Passive.MaxEjectedPercent}
	if rc.Consul != nil {
		q := consulQuery(rc.Consul)
		if err := q.Validate(); err != nil {
			return nil, err
		}
		r.query = &q
	}
	backends := make([]*balancer.Backend, 0, len(rc.Upstreams))
	for _, u := range rc.Upstreams {
		backends = append(backends, s.backends.Backend(u.Addr, u.Weight))
	}
	r.set.Store(balancer.NewSet(backends))
	rsv := [3]byte{0, relay.RSV1, relay.RSV1 | relay.RSV2 | relay.RSV3}
	r.tcp = keepalive.TCP{Idle: rc.TCPKeepalive.Idle, Interval: rc.TCPKeepalive.Interval, Count: rc.TCPKeepalive.Count, UserTimeout: rc.TCPUserTimeout}
	if err := r.tcp.Validate(); err != nil {
		return nil, err
	}
	for i := range r.relay {
		rc := &r.relay[i]
		rc.Pool = s.pool
		rc.Loops = s.loops
		if r.cfg.WriteTimeout > 0 {
			rc.WriteTimeout = r.cfg.WriteTimeout
		}
		rc.Wheel = s.wheel
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
		rc.OnFlush = s.sessionFlush
		rc.OnPingRTT = s.metrics.observePing
		rc.Tune, rc.TuneAfter = r.tuneSockets(s), tuneAfter(r.tcp)
		rc.OnStart = s.sessionStarted
		rc.OnDone = s.sessionDone
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
func (t *table) lookup(port int, host, p []byte, args *fasthttp.Args) *route {
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
