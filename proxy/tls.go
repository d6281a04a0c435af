package proxy

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/discovery"
	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/tls"
	"github.com/wsproxy/wsproxy/tls/consulstore"
)

// tlsStartTimeout bounds obtaining certificates at Start or Reload (a CA
// that does not answer). Shutdown ends the wait sooner.
const tlsStartTimeout = 3 * time.Minute

// tlsState is the Server's certificate management: the runtime of the
// config in force, which a reload replaces.
//
// A reload builds a new tls.Manager over the same storage directory (so
// certificates, ACME accounts and locks carry over and certificate files
// are read again), starts it, and only then installs it for new handshakes
// and stops the old one. A reload whose certificates cannot be had (a CA
// that refuses, a bad key file) fails and leaves the running config, old
// certificates included, in place.
type tlsState struct {
	cur atomic.Pointer[tlsRuntime]
	// ctx is cancelled by Shutdown, ending a Start or Reload that waits
	// for certificates.
	ctx    context.Context
	cancel context.CancelFunc

	// store is the Consul storage (storage consul) shared by every
	// Manager while the consul block and prefix stay the same; stores
	// holds every one made, closed (their locks released) by Shutdown.
	storeMu     sync.Mutex
	store       *consulstore.Store
	storeClient *discovery.Consul
	stores      []*consulstore.Store

	// keys is the KeyLogWriter of every config the listeners serve: how
	// the relay gets a TLS 1.3 connection's traffic secrets to take its
	// records over after the upgrade (relay.KeyLog keeps them only until
	// then, and writes nothing anywhere).
	keys *relay.KeyLog
}

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

// initTLS builds the certificate management of New's table.
func (s *Server) initTLS(t *table) error {
	s.tls.ctx, s.tls.cancel = context.WithCancel(context.Background())
	s.tls.keys = relay.NewKeyLog()
	rt, err := s.compileTLS(t)
	if err != nil {
		return err
	}
	s.tls.cur.Store(rt)
	return nil
}

// compileTLS builds the tls.Manager of t's TLS sites; it does no network
// I/O but reads certificate files and CA roots. When the config needs the
// HTTP port (challenges, redirects) and no plain site listens there, it
// adds the port to t with no sites, so that the port is listened on like
// the others. Errors about one site are a config.ErrorList naming the
// site's tls directive (or the site, for automatic ACME).
func (s *Server) compileTLS(t *table) (*tlsRuntime, error) {
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
		p := sc.TLS
		pol := tls.Policy{CertFile: p.CertFile, KeyFile: p.KeyFile, Email: p.Email, CA: p.CA, CARoot: p.CARoot,
			Ask: p.Ask, RateLimit: tls.RateLimit{Burst: p.RateBurst, Interval: p.RateInterval}}
		switch p.Mode {
		case config.TLSACME:
			pol.Mode = tls.ModeACME
			redirect = true
		case config.TLSOnDemand:
			pol.Mode = tls.ModeOnDemand
			redirect = true
		case config.TLSInternal:
			pol.Mode = tls.ModeInternal
		case config.TLSFiles:
			pol.Mode = tls.ModeFiles
		}
		sites = append(sites, tls.Site{Names: names, Policy: pol})
		rt.sites = append(rt.sites, sc)
	}
	if len(sites) == 0 {
		return rt, nil
	}
	var storage certmagic.Storage
	if !s.validating { // a Consul store is a client; Validate needs none
		st, err := s.certStorage(t.cfg)
		if err != nil {
			return nil, err
		}
		storage = st
	}
	tg := tls.Global{
		StorageDir: g.StorageDir,
		Email:      g.Email,
		CA:         g.CA,
		CARoot:     g.CARoot,
		HTTPPort:   g.HTTPPort,
		HTTPSPort:  g.HTTPSPort,
		Logger:     s.log,

		Storage:       storage,
		RenewInterval: g.RenewInterval,
	}
	if s.validating {
		// tls.New would start a certificate cache's goroutine.
		return rt, rt.siteError(tls.Validate(tg, sites))
	}
	mgr, err := tls.New(tg, sites)
	if err != nil {
		return nil, rt.siteError(err)
	}
	rt.mgr, rt.conf = mgr, mgr.TLSConfig()
	if s.tls.keys != nil {
		rt.conf.KeyLogWriter = s.tls.keys
	}
	if redirect {
		rt.httpPort = g.HTTPPort
		if t.ports[rt.httpPort] == nil {
			t.ports[rt.httpPort] = &hostTable{exact: map[string]*site{}}
		}
	}
	return rt, nil
}

// certStorage returns the storage of cfg's certificates: nil for the
// file storage the tls package makes, or the Consul store of `storage
// consul`, over the global consul block's client, kept across reloads
// that do not change them (its locks and sessions live on).
func (s *Server) certStorage(cfg *config.Config) (certmagic.Storage, error) {
	g := cfg.Global.TLS
	if !g.StorageConsul {
		return nil, nil
	}
	cl, err := s.consulClient(cfg.Global.Consul)
	if err != nil {
		return nil, err
	}
	s.tls.storeMu.Lock()
	defer s.tls.storeMu.Unlock()
	if s.tls.store != nil && s.tls.storeClient == cl && s.tls.store.Prefix() == g.StoragePrefix {
		return s.tls.store, nil
	}
	st, err := consulstore.New(consulstore.Config{Client: cl.API(), Prefix: g.StoragePrefix, Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.tls.store, s.tls.storeClient = st, cl
	s.tls.stores = append(s.tls.stores, st)
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
// most tlsStartTimeout.
func (s *Server) startTLSRuntime(rt *tlsRuntime) error {
	if rt.mgr == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.tls.ctx, tlsStartTimeout)
	defer cancel()
	began := time.Now()
	if err := rt.mgr.Start(ctx); err != nil {
		return rt.siteError(err)
	}
	s.log.Info("certificates ready", "sites", len(rt.sites), "took", time.Since(began).Round(time.Millisecond))
	if root := rt.mgr.LocalRoot(); root != "" {
		s.log.Info("tls internal: trust this root certificate to trust the proxy's certificates", "root", root)
	}
	return nil
}

// startTLS obtains the certificates of the config Start serves; its
// listeners are open, so ACME challenges reach them.
func (s *Server) startTLS() error {
	return s.startTLSRuntime(s.tls.cur.Load())
}

// reloadTLS builds and starts the certificates of t, a config being
// reloaded, and installs them for new handshakes. The finish function,
// which Reload defers, keeps them if t was swapped in and otherwise puts
// the previous ones back; either way it stops the Manager left unused.
// Challenges meanwhile reach the running listeners, whose Manager answers
// for any Manager of the process (certmagic keeps them in memory).
func (s *Server) reloadTLS(t *table) (finish func(), err error) {
	rt, err := s.compileTLS(t)
	if err != nil {
		return nil, err
	}
	if err := s.startTLSRuntime(rt); err != nil {
		rt.stop()
		return nil, err
	}
	prev := s.tls.cur.Swap(rt)
	return func() {
		if s.table.Load() == t {
			prev.stop()
			return
		}
		s.tls.cur.CompareAndSwap(rt, prev)
		rt.stop()
	}, nil
}

// shutdownTLS ends certificate management: a Start or Reload waiting for
// certificates, and background renewal.
func (s *Server) shutdownTLS() {
	if s.tls.cancel != nil {
		s.tls.cancel()
	}
	s.tls.cur.Load().stop()
	s.tls.storeMu.Lock()
	stores := s.tls.stores
	s.tls.stores, s.tls.store = nil, nil
	s.tls.storeMu.Unlock()
	for _, st := range stores {
		if err := st.Close(); err != nil {
			s.log.Warn("releasing certificate storage locks", "err", err)
		}
	}
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
		if rt := s.tls.cur.Load(); rt != nil && rt.ports[port] {
			return rt.conf
		}
		return nil
	}
}

// serveHTTPPort answers on the HTTP port of TLS sites: ACME HTTP-01
// challenges first, then requests that a plain site there routes are left
// to it (it reports false), and the rest are redirected to https (308).
func (s *Server) serveHTTPPort(ctx *fasthttp.RequestCtx, t *table, port int, path []byte) bool {
	rt := s.tls.cur.Load()
	if rt == nil || rt.httpPort != port || rt.mgr == nil {
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
