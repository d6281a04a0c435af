package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/discovery"
	"github.com/wsproxy/wsproxy/health"
	"github.com/wsproxy/wsproxy/keepalive"
	"github.com/wsproxy/wsproxy/limit"
	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/tls/consulstore"
)

// runtime is everything one config compiles to: routes, certificates,
// limits, the access log, HTTP clients and the Consul client. build makes
// it; a Server serves the one behind its pointer, a reload swaps that
// pointer once and retires the runtime it replaced, releasing what that
// runtime alone owned. Requests that loaded the old one finish with it.
//
// Nothing in it changes after build except the HTTP client cache (made on
// first use per backend, under its own lock) and the subscriptions start
// adds.
type runtime struct {
	cfg     *config.Config
	log     *slog.Logger
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

	access  *accessLog
	tls     *tlsRuntime
	clients *httpClients

	// consul is the client of the global consul block (nil without one,
	// or when nothing uses it), shared with the next runtime while the
	// block stays the same; store is the certificate storage over it
	// (storage consul), shared likewise.
	consul    *discovery.Consul
	consulCfg discovery.ConsulConfig
	store     *consulstore.Store

	// stops ends the subscriptions start made (health probes, Consul
	// watches).
	stops []func()
}

// env is what runtimes are built on and what outlives them: the event
// loops and buffers of the relay, the timing wheel, health state, live
// per-backend state and the metrics registry. build reads it and adds
// nothing to it but lookups by name (a backend's live state, a route's
// counters), which are kept across reloads on purpose.
type env struct {
	log      *slog.Logger
	pool     *relay.Pool
	loops    *relay.Loops // nil where unavailable: a goroutine per direction
	wheel    *keepalive.Wheel
	mem      *memReleaser
	metrics  *metrics
	health   *health.Checker
	backends *balancer.Registry

	// keys is the KeyLogWriter of every TLS config the listeners serve:
	// how the loops get a TLS 1.3 connection's traffic secrets to take its
	// records over after the upgrade (relay.KeyLog keeps them only until
	// then, and writes nothing anywhere). One for the process, as a
	// per-connection config (a Clone) would break session resumption.
	keys *relay.KeyLog

	// hooks of every relayed session.
	onStart func(*relay.Session)
	onDone  func(*relay.Session)
	onFlush func(*relay.Session, relay.Counts, relay.Counts)
	// onTune gives a route's relayed sockets their TCP settings, once the
	// connection has lasted a while (tcpopts.go).
	onTune func(*route, *relay.Session)

	// validating makes build check what it would open (access log,
	// certificate cache, Consul clients) without opening it.
	validating bool

	closeOnce sync.Once
}

// close stops the loops and the wheel; once only (the loops' descriptors
// must not be closed twice). Only when no session is left on them.
func (e *env) close() {
	e.closeOnce.Do(func() {
		if e.loops != nil {
			e.loops.Close()
		}
		if e.wheel != nil {
			e.wheel.Close()
		}
	})
}

// build compiles cfg into a runtime. State that must outlive a reload is
// taken from prev (nil for the first config) explicitly: per-IP counts,
// unchanged routes with their live connections and backends, the access
// log, handshake rate buckets, HTTP clients, the Consul client and the
// certificate storage when their settings did not change. It does no
// network I/O and changes nothing prev or the Server use; what it makes
// (a file opened, a certificate cache) is released by release if the
// runtime is never installed.
func build(cfg *config.Config, prev *runtime, e *env) (_ *runtime, err error) {
	rt := &runtime{cfg: cfg, log: e.log, ports: map[int]*hostTable{}, byName: map[string]*route{}, loaded: time.Now()}
	defer func() {
		if err != nil {
			rt.release(prev)
		}
	}()
	g := &cfg.Global
	rt.clientIP = balancer.KeySpec{TrustedProxies: g.TrustedProxies, ClientIPHeader: g.ClientIPHeader}
	if prev != nil {
		rt.version = prev.version + 1
		// The live per-IP counts carry over whatever the new cap: a fresh
		// limiter would start each client at zero. WithMax leaves prev's
		// limiter untouched.
		rt.perIP = prev.perIP.WithMax(g.MaxConnectionsPerIP)
	} else {
		rt.perIP = limit.NewPerIP(g.MaxConnectionsPerIP)
	}
	if prev != nil && prev.cfg.Global.HandshakeRatePerIP == g.HandshakeRatePerIP && prev.cfg.Global.HandshakeBurstPerIP == g.HandshakeBurstPerIP {
		rt.rate = prev.rate
	} else {
		rt.rate = limit.NewRate(g.HandshakeRatePerIP, g.HandshakeBurstPerIP)
	}
	if err := rt.buildAccessLog(prev, e); err != nil {
		return nil, err
	}
	if err := rt.buildRoutes(prev, e); err != nil {
		return nil, err
	}
	if err := rt.buildConsul(prev, e); err != nil {
		return nil, err
	}
	rt.clients = newHTTPClients(rt, prev)
	if rt.tls, err = buildTLS(rt, prev, e); err != nil {
		return nil, err
	}
	return rt, nil
}

func (rt *runtime) buildAccessLog(prev *runtime, e *env) error {
	g := &rt.cfg.Global
	switch {
	case e.validating:
		rt.access = &accessLog{}
		return checkAccessLog(g.AccessLog)
	case prev != nil && prev.cfg.Global.AccessLog == g.AccessLog && prev.cfg.Global.AccessLogSample == g.AccessLogSample:
		rt.access = prev.access
	default:
		a, err := newAccessLog(g.AccessLog, g.AccessLogSample)
		if err != nil {
			return err
		}
		rt.access = a
	}
	return nil
}

func (rt *runtime) buildRoutes(prev *runtime, e *env) error {
	cfg := rt.cfg
	for _, sc := range cfg.Sites {
		st := &site{}
		for _, rc := range sc.Routes {
			r, err := buildRoute(rc, &cfg.Global, e)
			if err != nil {
				return fmt.Errorf("%s: route %q: %w", rc.Pos, rc.Name, err)
			}
			// An unchanged route is carried over as it runs: its live
			// connections, counters and backends are not touched.
			// A changed one keeps counting its live connections, whatever
			// its max_connections becomes.
			if or := prev.route(rc.Name); or != nil {
				if sameRoute(or.cfg, rc, &prev.cfg.Global, &cfg.Global) {
					r = or
				} else {
					r.live = or.live
				}
			}
			st.routes = append(st.routes, r)
			rt.routes = append(rt.routes, r)
			rt.byName[r.name] = r
		}
		for _, a := range sc.Addresses {
			ht := rt.ports[a.Port]
			if ht == nil {
				ht = &hostTable{exact: map[string]*site{}}
				rt.ports[a.Port] = ht
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
	for _, ht := range rt.ports {
		sort.SliceStable(ht.wild, func(i, j int) bool { return len(ht.wild[i].suffix) > len(ht.wild[j].suffix) })
	}
	return nil
}

// buildConsul gives the runtime the Consul client of the global consul
// block if a route, self-registration or the certificate storage uses
// it: prev's when the block is unchanged, a new one otherwise (NewConsul
// starts nothing until asked).
func (rt *runtime) buildConsul(prev *runtime, e *env) error {
	g := &rt.cfg.Global
	need := g.Consul != nil && (g.Consul.Register != "" || g.TLS.StorageConsul)
	for _, r := range rt.routes {
		need = need || r.query != nil
	}
	if !need {
		return nil
	}
	// Without a global consul block, a route's consul uses the client's
	// defaults (CONSUL_HTTP_ADDR and the like, else 127.0.0.1:8500).
	var cc discovery.ConsulConfig
	where := "consul"
	if g.Consul != nil {
		cc, where = g.Consul.Client, g.Consul.Pos.String()+": consul"
	}
	if e.validating { // what NewConsul would refuse, without a client
		if err := cc.Check(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		return nil
	}
	rt.consulCfg = cc
	if prev != nil && prev.consul != nil && reflect.DeepEqual(prev.consulCfg, rt.consulCfg) {
		rt.consul = prev.consul
		return nil
	}
	c, err := discovery.NewConsul(rt.consulCfg, e.log)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	rt.consul = c
	return nil
}

// release ends what rt owns and keep (the runtime taking over, or nil
// at shutdown) does not share: its subscriptions, its certificate
// manager, and unless kept, its certificate storage (releasing its
// locks), Consul client, access log file and idle HTTP connections. A
// runtime is released once: when it is retired by a reload, when a
// reload that built it fails, or at shutdown.
func (rt *runtime) release(keep *runtime) {
	for _, stop := range rt.stops {
		stop()
	}
	rt.stops = nil
	if rt.tls != nil {
		rt.tls.stop()
	}
	if rt.store != nil && (keep == nil || keep.store != rt.store) {
		if err := rt.store.Close(); err != nil {
			rt.log.Warn("releasing certificate storage locks", "err", err)
		}
	}
	if rt.consul != nil && (keep == nil || keep.consul != rt.consul) {
		rt.consul.Close()
	}
	if rt.access != nil && rt.access.closer != nil && (keep == nil || keep.access != rt.access) {
		rt.access.closer.Close()
	}
	if rt.clients != nil {
		rt.clients.release(keep)
	}
}

// route returns the named route; nil if there is none (or no runtime).
func (rt *runtime) route(name string) *route {
	if rt == nil {
		return nil
	}
	return rt.byName[name]
}

// routeNames lists the runtime's route names, for errors naming one that
// is not there.
func (rt *runtime) routeNames() string {
	names := make([]string, 0, len(rt.routes))
	for _, r := range rt.routes {
		names = append(names, r.name)
	}
	return strings.Join(names, ", ")
}

// httpClients are a runtime's pooled plain-HTTP clients, one per backend
// address and client settings (see clientKey), made on first use. A
// reload's runtime takes over prev's clients whose settings a route of
// its own still has, so their idle connections survive; release closes
// the idle connections of those it did not take.
type httpClients struct {
	mu sync.Mutex
	m  map[clientKey]*fasthttp.HostClient
}

// clientKey is everything that shapes a HostClient.
type clientKey struct {
	addr                string
	dial, idle, maxWait time.Duration
	maxConns            int
}

func (r *route) clientKey(addr string) clientKey {
	return clientKey{addr: addr, dial: r.cfg.DialTimeout, idle: r.cfg.ResponseTimeout, maxWait: r.cfg.MaxConnsWait, maxConns: r.cfg.MaxConnsPerBackend}
}

func newHTTPClients(rt *runtime, prev *runtime) *httpClients {
	c := &httpClients{m: map[clientKey]*fasthttp.HostClient{}}
	if prev == nil {
		return c
	}
	prev.clients.mu.Lock()
	defer prev.clients.mu.Unlock()
	for k, hc := range prev.clients.m {
		if rt.needsClient(k) {
			c.m[k] = hc
		}
	}
	return c
}

// needsClient reports whether a route of t may send to k's address with
// k's settings: a static backend it lists, or an instance its Consul
// service has now (any address while the route has heard of none yet, as
// a route just built has not: its first update prunes).
func (t *runtime) needsClient(k clientKey) bool {
	for _, r := range t.routes {
		if r.query == nil {
			for _, u := range r.cfg.Upstreams {
				if r.clientKey(u.Addr) == k {
					return true
				}
			}
			continue
		}
		if r.clientKey(k.addr) != k {
			continue
		}
		set := r.set.Load()
		if set == nil || set.Len() == 0 {
			return true
		}
		for _, b := range set.Backends() {
			if b.Addr == k.addr {
				return true
			}
		}
	}
	return false
}

// prune drops the clients of addresses no route of t sends to any more
// (Consul instances that left), closing their idle connections; without
// it a service whose instances come and go would leave a client per
// address it ever had.
func (c *httpClients) prune(t *runtime) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, hc := range c.m {
		if !t.needsClient(k) {
			delete(c.m, k)
			hc.CloseIdleConnections()
		}
	}
}

// release closes the idle connections of the clients keep did not take.
func (c *httpClients) release(keep *runtime) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, hc := range c.m {
		if keep == nil || keep.clients.get(k) != hc {
			hc.CloseIdleConnections()
		}
	}
}

// hostClient returns the pooled client for a backend address with a
// route's settings, made on first use. Routes with the same settings
// share it, and so its connection cap.
//
// MaxConns is max_conns_per_backend; requests past it wait for a
// connection in fasthttp's queue for up to the cap's wait (503 after it)
// instead of failing at once, as fasthttp's default (512, no wait) did.
// response_timeout is an idle timeout on the backend connection's reads
// and writes, renewed by each: it bounds the wait for a response to begin
// and any pause within it, so a long-poll answered within it and a
// stream that keeps sending both live. (HostClient's ReadTimeout would
// stay set while a streamed response body is relayed, cutting streams.)
func (c *httpClients) hostClient(addr string, r *route) *fasthttp.HostClient {
	k := r.clientKey(addr)
	c.mu.Lock()
	defer c.mu.Unlock()
	hc := c.m[k]
	if hc == nil {
		dialTimeout, idle := k.dial, k.idle
		hc = &fasthttp.HostClient{
			Addr: addr,
			Dial: func(addr string) (net.Conn, error) {
				c, err := dialTCP(addr, dialTimeout)
				if err != nil || idle <= 0 {
					return c, err
				}
				return &idleConn{Conn: c, idle: idle}, nil
			},
			MaxConns:                      k.maxConns,
			MaxConnWaitTimeout:            k.maxWait,
			StreamResponseBody:            true,
			MaxIdleConnDuration:           60 * time.Second,
			MaxIdemponentCallAttempts:     1,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			NoDefaultUserAgentHeader:      true,
			MaxResponseBodySize:           0,
		}
		c.m[k] = hc
	}
	return hc
}

func (c *httpClients) get(k clientKey) *fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}
