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
	// BufferSize is the relay's read buffer size; relay.DefaultBufferSize
	// if 0.
	BufferSize int
}

// Server runs one configuration. Its methods are safe for concurrent use.
type Server struct {
	log     *slog.Logger
	opts    Options
	pool    *relay.Pool
	poller  *relay.Poller // nil where unavailable: a goroutine per direction
	wheel   *keepalive.Wheel
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
	sessions    map[*relay.Session]struct{}
	idle        *sync.Cond // signalled when sessions empties
	clients     map[string]*fasthttp.HostClient
	closed      bool
	started     time.Time

	consul        *discovery.Consul // shared by tables with the same consul block
	consulCfg     discovery.ConsulConfig
	retiredConsul []*discovery.Consul
	deregister    func(context.Context) error
	accessFiles   []io.Closer

	self selfState // readiness and Consul self-registration; see register.go
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
		sessions:  map[*relay.Session]struct{}{},
		clients:   map[string]*fasthttp.HostClient{},
		started:   time.Now(),
	}
	s.idle = sync.NewCond(&s.mu)
	s.wheel = keepalive.NewWheel(0, 0)
	s.metrics = newMetrics(s)
	s.health = health.NewChecker(s.log)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if p, err := relay.NewPoller(); err == nil {
		s.poller = p
	} else {
		s.log.Warn("idle connections will keep their goroutines", "err", err)
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
			ln, err = net.Listen("tcp", bindAddr(t.cfg, port))
			if err != nil {
				s.closeListeners()
				return fmt.Errorf("listen on port %d: %w", port, err)
			}
		}
		l := &listener{port: port, ln: ln, srv: s.newHTTPServer(t.cfg, port), done: make(chan struct{})}
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
	if err := l.srv.Serve(hijackableListener{Listener: l.ln, tlsConfig: s.listenerTLS(l.port)}); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Error("listener stopped", "port", l.port, "err", err)
	}
}

// bindAddr chooses the interface for a port: loopback when every site on
// it names a loopback host, all interfaces otherwise. TLS sites count on
// the HTTP port too (ACME challenges, redirects).
func bindAddr(cfg *config.Config, port int) string {
	loop := true
	for _, st := range cfg.Sites {
		for _, a := range st.Addresses {
			if a.Port != port && !(a.Scheme == "https" && port == cfg.Global.TLS.HTTPPort) {
				continue
			}
			ip, err := netip.ParseAddr(a.Host)
			if !(a.Host == "localhost" || err == nil && ip.IsLoopback()) {
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
		Handler:                      func(ctx *fasthttp.RequestCtx) { s.serve(ctx, port) },
		Name:                         "wsproxy",
		ReadBufferSize:               g.MaxHeaderBytes,
		ReadTimeout:                  g.HandshakeTimeout,
		IdleTimeout:                  90 * time.Second,
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
	t := s.table.Load()
	if s.serveHTTPPort(ctx, t, port) { // ACME challenges, redirects to https
		return
	}
	r := t.lookup(port, ctx.Host(), ctx.Path(), ctx.QueryArgs())
	attempt := upgrade.IsAttempt(&ctx.Request.Header)
	if r == nil {
		ctx.Error("no route for this request\n", fasthttp.StatusNotFound)
		if attempt {
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
	sessions := make([]*relay.Session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()

	for _, l := range ls {
		l.ln.Close()
	}
	// Spread, so that clients do not all reconnect to the next proxy at once.
	closeSpread(sessions, s.table.Load().cfg.Global.GracePeriod/2, relay.CloseGoingAway, relay.CloseGoingAway, "proxy shutting down")
	waited := make(chan struct{})
	go func() {
		s.mu.Lock()
		for len(s.sessions) > 0 {
			s.idle.Wait()
		}
		s.mu.Unlock()
		close(waited)
	}()
	var err error
	select {
	case <-waited:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for ss := range s.sessions {
			ss.Close(relay.CloseGoingAway, relay.CloseGoingAway, "proxy shutting down")
		}
		s.mu.Unlock()
	}
	for _, l := range ls {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.srv.ShutdownWithContext(sctx)
		cancel()
		<-l.done
	}
	if err == nil {
		s.releaseOnce.Do(func() {
			// Once only: closing the poller twice could close a reused fd.
			if s.poller != nil {
				s.poller.Close()
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
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func (s *Server) sessionStarted(ss *relay.Session) {
	s.mu.Lock()
	s.sessions[ss] = struct{}{}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		ss.Close(relay.CloseGoingAway, relay.CloseGoingAway, "proxy shutting down")
	}
}

func (s *Server) sessionDone(ss *relay.Session) {
	c := ss.Tag.(*wsConn)
	c.backend.Release()
	s.release(c.route)
	c.perIP.Release(c.ip)
	s.metrics.recordEnd(c, ss)
	s.table.Load().access.websocket(c, ss)
	s.mu.Lock()
	delete(s.sessions, ss)
	if len(s.sessions) == 0 {
		s.idle.Broadcast()
	}
	s.mu.Unlock()
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
