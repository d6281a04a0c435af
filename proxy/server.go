// Package proxy is wsproxy's data plane: the fasthttp listeners, routing on
// host, path and query, plain HTTP reverse proxying, and the WebSocket path
// (handshake checks, backend handshake, then the frame relay).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/discovery"
	"github.com/wsproxy/wsproxy/health"
	"github.com/wsproxy/wsproxy/keepalive"
	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/upgrade"
)

// Options are the parts of a Server that do not come from the config file.
type Options struct {
	// Logger receives the proxy's logs. If nil, slog.Default() is used.
	Logger *slog.Logger
	// Listeners are listeners opened by the caller, keyed by the port the
	// config gives them (tests open 127.0.0.1:0 and write its port in the
	// config). Ports without one are listened on by Start.
	Listeners map[int]net.Listener
	// ListenersWithoutKeepAlive says the Listeners were opened with
	// net.ListenConfig{KeepAlive: -1}, as Start opens its own: Go then
	// leaves accepted sockets with what was set on the listener, so the
	// routes' keepalive settings can be set there once (tcpopts.go).
	ListenersWithoutKeepAlive bool
	// BufferSize is the relay's read buffer size; relay.DefaultBufferSize
	// if 0.
	BufferSize int
}

// Server runs one configuration. Its methods are safe for concurrent use.
type Server struct {
	log     *slog.Logger
	opts    Options
	pool    *relay.Pool
	loops   *relay.Loops // nil where unavailable: a goroutine per direction
	wheel   *keepalive.Wheel
	mem     *memReleaser
	metrics *metrics
	health  *health.Checker
	// ctx bounds backend dials; Shutdown cancels it. (fasthttp's
	// RequestCtx is not used as a context: net.Dialer would watch it with
	// a goroutine per dial, and its Done races with fasthttp's Shutdown.)
	ctx      context.Context
	cancel   context.CancelFunc
	live     atomic.Int64      // WebSockets admitted and not yet ended
	backends balancer.Registry // live per-backend state, kept across reloads
	table    atomicTable
	tls      tlsState // certificates of TLS sites; see tls.go

	reloadMu    sync.Mutex // one reload at a time
	retired     *table     // the table the last reload replaced; under reloadMu
	releaseOnce sync.Once
	mu          sync.Mutex
	listeners   map[int]*listener
	inherited   sync.Map // port → keepalive.TCP its listener was given (tcpopts.go)
	sessions    registry
	clients     map[string]*fasthttp.HostClient
	closed      bool
	started     time.Time

	consul        *discovery.Consul // shared by tables with the same consul block
	consulCfg     discovery.ConsulConfig
	retiredConsul []*discovery.Consul
	deregister    func(context.Context) error
	accessFiles   []io.Closer

	self selfState // readiness and Consul self-registration; see register.go

	// validating is set by Validate: compile checks what it would open
	// (access log, certificate cache, Consul storage) without opening it.
	validating bool
}

type listener struct {
	port int
	ln   net.Listener
	srv  *fasthttp.Server
	done chan struct{}
}

// New compiles cfg into a Server. Nothing listens until Start.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		log:       opts.Logger,
		opts:      opts,
		pool:      relay.NewPool(opts.BufferSize),
		listeners: map[int]*listener{},
		clients:   map[string]*fasthttp.HostClient{},
		started:   time.Now(),
	}
	s.sessions.init()
	s.wheel = keepalive.NewWheel(0, 0)
	s.mem = newMemReleaser(s.wheel)
	s.metrics = newMetrics(s)
	s.health = health.NewChecker(s.log)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if ls, err := relay.NewLoops(0, opts.BufferSize); err == nil {
		s.loops = ls
	} else {
		s.log.Warn("no event loops: every connection keeps a goroutine per direction", "err", err)
	}
	t, err := s.compile(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.initTLS(t); err != nil {
		return nil, err
	}
	s.table.Store(t)
	return s, nil
}

// Validate reports the errors New would report for cfg, with the file:line
// of the directive where one is known, but builds nothing that runs or
// needs closing: no event loop (epoll set), timing wheel, health checker,
// certificate cache, Consul client or goroutine, and no access log file is
// opened or created. It reads TLS certificate files and CA roots, as New
// does, and closes them.
func Validate(cfg *config.Config) error {
	_, err := validate(cfg)
	return err
}

// validate compiles cfg into a table of a Server that runs nothing (see
// Validate), and returns that Server with the table installed.
func validate(cfg *config.Config) (*Server, error) {
	s := &Server{log: slog.New(slog.DiscardHandler), validating: true}
	// Routes register their metrics on compile; a private registry is only
	// memory.
	s.metrics = newMetrics(s)
	t, err := s.compile(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := s.compileTLS(t); err != nil {
		return nil, err
	}
	s.table.Store(t)
	return s, nil
}

// Start opens every listener of the config and serves on it. It returns
// once all are listening, or the first error (after closing what it opened).
// With TLS sites it then obtains or loads their certificates (ACME, the
// local CA of tls internal, files) before it returns; a site that gets none
// is an error naming it with its file:line.
func (s *Server) Start() error {
	t := s.table.Load()
	if err := s.startWatches(t); err != nil {
		return err
	}
	ports := make([]int, 0, len(t.ports))
	for p := range t.ports {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	for _, port := range ports {
		ln := s.opts.Listeners[port]
		if ln == nil {
			var err error
			// Accepted sockets get the route's TCP settings once the
			// route is known, not Go's defaults first.
			lc := net.ListenConfig{KeepAlive: -1}
			ln, err = lc.Listen(context.Background(), "tcp", bindAddr(t.cfg, port))
			if err != nil {
				s.closeListeners()
				return fmt.Errorf("listen on port %d: %w", port, err)
			}
		}
		l := &listener{port: port, ln: ln, srv: s.newHTTPServer(t.cfg, port), done: make(chan struct{})}
		if s.opts.Listeners[port] == nil || s.opts.ListenersWithoutKeepAlive {
			s.inheritTCP(t, port, ln)
		}
		s.mu.Lock()
		s.listeners[port] = l
		s.mu.Unlock()
		go s.serveListener(l)
	}
	if err := s.startTLS(); err != nil { // listening, so ACME challenges reach us
		s.closeListeners()
		return err
	}
	s.self.started.Store(true)
	s.registerSelf(t)
	return nil
}

func (s *Server) serveListener(l *listener) {
	defer close(l.done)
	s.log.Info("listening", "addr", l.ln.Addr().String())
	rl := s.resilient(l)
	defer rl.release()
	if err := l.srv.Serve(hijackableListener{Listener: rl, tlsConfig: s.listenerTLS(l.port)}); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Error("listener stopped", "port", l.port, "err", err)
	}
}

// bindAddr chooses the interface for a port: loopback when every site on
// it names a loopback host, all interfaces otherwise. A loopback host is a
// loopback IP, localhost or a name under .localhost, which resolvers and
// browsers answer with loopback (RFC 6761), so no one elsewhere can reach
// it by name. TLS sites count on the HTTP port too (ACME challenges,
// redirects).
func bindAddr(cfg *config.Config, port int) string {
	loop := true
	for _, st := range cfg.Sites {
		for _, a := range st.Addresses {
			if a.Port != port && !(a.Scheme == "https" && port == cfg.Global.TLS.HTTPPort) {
				continue
			}
			ip, err := netip.ParseAddr(a.Host)
			if !(a.Host == "localhost" || strings.HasSuffix(a.Host, ".localhost") || err == nil && ip.IsLoopback()) {
				loop = false
			}
		}
	}
	if loop {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	return ":" + strconv.Itoa(port)
}

// Addr returns the address the listener for a config port is bound to.
func (s *Server) Addr(port int) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[port]; l != nil {
		return l.ln.Addr()
	}
	return nil
}

func (s *Server) newHTTPServer(cfg *config.Config, port int) *fasthttp.Server {
	g := cfg.Global
	return &fasthttp.Server{
		Handler:        func(ctx *fasthttp.RequestCtx) { s.serve(ctx, port) },
		Name:           "wsproxy",
		ReadBufferSize: g.MaxHeaderBytes,
		ReadTimeout:    g.HandshakeTimeout,
		HeaderReceived: s.headerReceived,
		IdleTimeout:    90 * time.Second,
		// Workers that served a burst of handshakes go soon: each is a
		// goroutine and a stack that relayed connections do not need.
		MaxIdleWorkerDuration:        2 * time.Second,
		MaxRequestBodySize:           64 << 20,
		StreamRequestBody:            true,
		KeepHijackedConns:            false, // see hijackableListener
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{s.log},
	}
}

// serve is the entry point of every request.
func (s *Server) serve(ctx *fasthttp.RequestCtx, port int) {
	if why := framingError(&ctx.Request.Header); why != "" {
		ctx.Error("bad request: "+why+"\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose() // where this request ends is in doubt
		return
	}
	var buf [256]byte
	tg, why := parseTarget(ctx, buf[:0])
	if why != "" {
		ctx.Error("bad request: "+why+"\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return
	}
	t := s.table.Load()
	if s.serveHTTPPort(ctx, t, port, tg.path) { // ACME challenges, redirects to https
		return
	}
	r := t.lookup(port, ctx.Host(), tg.path, ctx.QueryArgs())
	attempt := upgrade.IsAttempt(&ctx.Request.Header)
	if r != nil && tg.encodedSlash && !r.cfg.AllowEncodedSlash {
		ctx.Error("bad request: encoded slash or backslash in the path\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return
	}
	tg.forward(ctx)
	if r == nil {
		ctx.Error("no route for this request\n", fasthttp.StatusNotFound)
		if attempt || bodyMayRemain(ctx) {
			ctx.SetConnectionClose()
		}
		return
	}
	if attempt {
		s.serveWebSocket(ctx, t, r)
		return
	}
	s.serveHTTP(ctx, r)
}

// Shutdown stops accepting, sends every live WebSocket a 1001 close (spread
// over up to half the grace period, at most 1,000 a second) and waits until
// they end or ctx is done, when it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true // not Ready from here on
	s.mu.Unlock()
	s.leaveConsul()
	s.mu.Lock()
	ls := make([]*listener, 0, len(s.listeners))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	sessions := s.sessions.closeAll()

	for _, l := range ls {
		l.ln.Close()
	}
	// Spread, so that clients do not all reconnect to the next proxy at once.
	closeSpread(sessions, s.table.Load().cfg.Global.GracePeriod/2, relay.CloseGoingAway, relay.CloseGoingAway, "proxy shutting down")
	var err error
	if !s.sessions.wait(ctx) {
		// Out of grace: drop what is left. Abort only posts to the loops,
		// so a session stuck behind a peer that does not read cannot hold
		// this up; wait a little for the loops to report them done.
		err = ctx.Err()
		for _, ss := range s.sessions.list(nil) {
			ss.Abort()
		}
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.sessions.wait(wctx)
		cancel()
	}
	for _, l := range ls {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.srv.ShutdownWithContext(sctx)
		cancel()
		<-l.done
	}
	if s.sessions.len() == 0 {
		s.releaseOnce.Do(func() {
			// Once only: the loops' descriptors must not be closed twice.
			if s.loops != nil {
				s.loops.Close()
			}
			s.wheel.Close()
		})
	}
	s.cancel()
	s.table.Load().stop()
	s.health.Close()
	s.shutdownTLS()
	s.closeAccessLogs()
	s.mu.Lock()
	dereg, consul, retired := s.deregister, s.consul, s.retiredConsul
	s.mu.Unlock()
	if dereg != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dereg(dctx)
		cancel()
	}
	if consul != nil {
		consul.Close()
	}
	for _, c := range retired {
		c.Close()
	}
	return err
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, l := range s.listeners {
		l.ln.Close()
		delete(s.listeners, p)
	}
}

// Sessions returns the number of live WebSocket connections.
func (s *Server) Sessions() int { return s.sessions.len() }

func (s *Server) sessionStarted(ss *relay.Session) {
	if !s.sessions.add(ss) {
		ss.Close(relay.CloseGoingAway, relay.CloseGoingAway, "proxy shutting down")
	}
}

// sessionDone runs on the session's loop when it has ended: nothing here
// may block.
func (s *Server) sessionDone(ss *relay.Session) {
	c := ss.Tag.(*wsConn)
	c.backend.Release()
	c.ticket.Release()
	c.route.keyLimits.Release(ss.Keys)
	s.metrics.recordEnd(c, ss)
	s.table.Load().access.websocket(c, ss)
	s.sessions.remove(ss)
	if ss.Stalled != relay.SideNone {
		s.log.Warn("slow consumer dropped", "route", c.route.name, "side", ss.Stalled.String(), "client", c.client, "backend", c.backend.Addr)
	}
	s.log.Debug("websocket closed",
		"route", c.route.name, "backend", c.backend.Addr, "client", c.client, "key", c.key,
		"duration", time.Since(c.start).Round(time.Millisecond),
		"close_code", ss.CloseCode, "closed_by", ss.ClosedBy.String(), "reason", ss.Reason,
		"bytes_up", ss.ClientToBackend.Bytes, "bytes_down", ss.BackendToClient.Bytes,
		"messages_up", ss.ClientToBackend.Messages, "messages_down", ss.BackendToClient.Messages)
}

// fasthttpLogger sends fasthttp's own messages to slog at debug level: they
// are about single connections (bad requests, timeouts).
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "source", "fasthttp")
}
