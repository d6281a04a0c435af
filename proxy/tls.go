package proxy

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/tls"
	"github.com/wsproxy/wsproxy/tls/consulstore"
)

// tlsStartTimeout bounds obtaining certificates at Start or Reload (a CA
// that does not answer). Shutdown ends the wait sooner.
const tlsStartTimeout = 3 * time.Minute

// tlsRuntime is the TLS part of one compiled config. It never changes
// after it is built.
type tlsRuntime struct {
	mgr  *tls.Manager      // nil without TLS sites
	conf *cryptotls.Config // mgr.TLSConfig(): TLS 1.2+, ALPN http/1.1
	// ports are the ports that serve TLS.
	ports map[int]bool
	// httpPort answers ACME HTTP-01 challenges and redirects what no plain
	// site there routes to https. Set (to http_port) when a site uses ACME
	// or serves TLS on https_port; 0 otherwise.
	httpPort int
	// sites are the config sites of mgr's sites, by tls.Site index.
	sites []*config.Site
}

// buildTLS builds the tls.Manager of t's TLS sites, as part of build; it
// does no network I/O but reads certificate files and CA roots (a new
// Manager over the same storage: certificates, ACME accounts and locks
// carry over, and files are read again). When the config needs the HTTP
// port (challenges, redirects) and no plain site listens there, it adds
// the port to t with no sites, so that the port is listened on like the
// others. Errors about one site are a config.ErrorList naming the site's
// tls directive (or the site, for automatic ACME).
func buildTLS(t, prev *runtime, e *env) (*tlsRuntime, error) {
	g := t.cfg.Global.TLS
	rt := &tlsRuntime{ports: map[int]bool{}}
	var sites []tls.Site
	redirect := false
	for _, sc := range t.cfg.Sites {
		if sc.TLS == nil {
			continue
		}
		var names []string
		anyHost := false
		for _, a := range sc.Addresses {
			if a.Scheme != "https" {
				continue
			}
			rt.ports[a.Port] = true
			redirect = redirect || a.Port == g.HTTPSPort
			if a.Host == "" {
				anyHost = true
			} else {
				names = append(names, a.Host)
			}
		}
		if anyHost {
			names = nil // the site serves every name; so do its certificates
		}
		pol := sc.TLS.Policy
		if pol.Mode == tls.ModeACME || pol.Mode == tls.ModeOnDemand {
			redirect = true
		}
		sites = append(sites, tls.Site{Names: names, Policy: pol})
		rt.sites = append(rt.sites, sc)
	}
	if len(sites) == 0 {
		return rt, nil
	}
	var storage certmagic.Storage
	if !e.validating { // a Consul store is a client; Validate needs none
		st, err := t.certStorage(prev)
		if err != nil {
			return nil, err
		}
		if st != nil {
			storage = st
		}
	}
	tg := tls.Global{
		StorageDir: g.StorageDir,
		Email:      g.Email,
		CA:         g.CA,
		CARoot:     g.CARoot,
		HTTPPort:   g.HTTPPort,
		HTTPSPort:  g.HTTPSPort,
		Logger:     e.log,

		Storage:       storage,
		RenewInterval: g.RenewInterval,
	}
	if e.validating {
		// tls.New would start a certificate cache's goroutine.
		return rt, rt.siteError(tls.Validate(tg, sites))
	}
	mgr, err := tls.New(tg, sites)
	if err != nil {
		return nil, rt.siteError(err)
	}
	rt.mgr, rt.conf = mgr, mgr.TLSConfig()
	if e.keys != nil {
		rt.conf.KeyLogWriter = e.keys
	}
	if redirect {
		rt.httpPort = g.HTTPPort
		if t.ports[rt.httpPort] == nil {
			t.ports[rt.httpPort] = &hostTable{exact: map[string]*site{}}
		}
	}
	return rt, nil
}

// certStorage returns the Consul store of `storage consul` over t's
// Consul client (nil for the file storage the tls package makes): prev's
// while the client and prefix are the same (its locks and sessions live
// on), a new one otherwise, which t then owns.
func (t *runtime) certStorage(prev *runtime) (*consulstore.Store, error) {
	g := t.cfg.Global.TLS
	if !g.StorageConsul || t.consul == nil {
		return nil, nil
	}
	if prev != nil && prev.store != nil && prev.consul == t.consul && prev.store.Prefix() == g.StoragePrefix {
		t.store = prev.store
		return t.store, nil
	}
	st, err := consulstore.New(consulstore.Config{Client: t.consul.API(), Prefix: g.StoragePrefix, Logger: t.log})
	if err != nil {
		return nil, err
	}
	t.store = st
	return st, nil
}

// siteError gives a *tls.SiteError the place of its site in the config.
func (rt *tlsRuntime) siteError(err error) error {
	var se *tls.SiteError
	if errors.As(err, &se) && se.Index >= 0 && se.Index < len(rt.sites) {
		return config.ErrorList{{Pos: rt.sites[se.Index].TLS.Pos, Msg: err.Error()}}
	}
	return err
}

// start obtains or loads the certificates (tls.Manager.Start), waiting at
// most tlsStartTimeout, or until ctx (the Server's) is done.
func (rt *tlsRuntime) start(ctx context.Context, log *slog.Logger) error {
	if rt.mgr == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, tlsStartTimeout)
	defer cancel()
	began := time.Now()
	if err := rt.mgr.Start(ctx); err != nil {
		return rt.siteError(err)
	}
	log.Info("certificates ready", "sites", len(rt.sites), "took", time.Since(began).Round(time.Millisecond))
	if root := rt.mgr.LocalRoot(); root != "" {
		log.Info("tls internal: trust this root certificate to trust the proxy's certificates", "root", root)
	}
	return nil
}

func (rt *tlsRuntime) stop() {
	if rt != nil && rt.mgr != nil {
		rt.mgr.Stop()
	}
}

// listenerTLS returns the function a port's listener asks, for each new
// connection, for the TLS config to serve it with (nil: plain). Asking per
// connection lets a reload turn a port's TLS on or off, or change its
// certificates, without reopening it.
func (s *Server) listenerTLS(port int) func() *cryptotls.Config {
	return func() *cryptotls.Config {
		if rt := s.rt.Load(); rt != nil && rt.tls.ports[port] {
			return rt.tls.conf
		}
		return nil
	}
}

// serveHTTPPort answers on the HTTP port of TLS sites: ACME HTTP-01
// challenges first, then requests that a plain site there routes are left
// to it (it reports false), and the rest are redirected to https (308).
func serveHTTPPort(ctx *fasthttp.RequestCtx, t *runtime, port int, path []byte) bool {
	rt := t.tls
	if rt.httpPort != port || rt.mgr == nil {
		return false
	}
	if rt.mgr.HandleHTTPChallenge(ctx) {
		return true
	}
	if t.lookup(port, ctx.Host(), path, ctx.QueryArgs()) != nil {
		return false
	}
	rt.mgr.HTTPRedirect(ctx)
	return true
}

// hijackableTLSConn is a hijackableConn whose Conn is a *tls.Conn. fasthttp
// sees it rather than the *tls.Conn, so that its Close after a hijack does
// not close (or send close_notify on) the connection the relay now owns;
// its Handshake and ConnectionState make fasthttp's RequestCtx.IsTLS true
// (X-Forwarded-Proto: https).
type hijackableTLSConn struct{ hijackableConn }

func (c *hijackableTLSConn) Handshake() error { return c.Conn.(*cryptotls.Conn).Handshake() }

func (c *hijackableTLSConn) ConnectionState() cryptotls.ConnectionState {
	return c.Conn.(*cryptotls.Conn).ConnectionState()
}

// asHijackable returns the hijackableConn under a connection fasthttp
// served: plain, or TLS (whose take returns the *tls.Conn: the relay then
// reads through TLS with a goroutine per direction, having no raw socket).
func asHijackable(c net.Conn) (*hijackableConn, bool) {
	switch c := c.(type) {
	case *hijackableConn:
		return c, true
	case *hijackableTLSConn:
		return &c.hijackableConn, true
	}
	return nil, false
}

// netConn returns the TCP connection under a TLS one, for socket options.
func netConn(c net.Conn) net.Conn {
	if tc, ok := c.(*cryptotls.Conn); ok {
		return tc.NetConn()
	}
	return c
}

// TLSRecordLegs is how many wss:// client connections have moved from
// crypto/tls to the event loops' own TLS 1.3 record layer since the
// Server started (see relay.Loops.RecordLegs); 0 without loops.
func (s *Server) TLSRecordLegs() uint64 {
	if s.loops == nil {
		return 0
	}
	return s.loops.RecordLegs()
}
