// Package proxy is wsproxy's data plane: the fasthttp listeners, routing on
// host, path and query, plain HTTP reverse proxying, and the WebSocket path
// (handshake checks, backend handshake, then the frame relay).
package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
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
	// Loops is the number of event loops; GOMAXPROCS if 0.
	Loops int
}

// Server serves one configuration at a time. It keeps what outlives a
// config: the listening ports, the registry of live WebSocket sessions,
// the live-connection count, the self-registration in Consul, and the env
// runtimes are built on (event loops, timing wheel, health, metrics). The
// config itself is compiled into a runtime (runtime.go) behind one
// pointer, which a reload swaps. Its methods are safe for concurrent use.
type Server struct {
	*env
	rt       atomic.Pointer[runtime]
	reloadMu sync.Mutex // one reload at a time
	ports    ports
	sessions registry
	live     atomic.Int64 // WebSockets admitted and not yet ended
	self     selfState    // readiness and Consul self-registration; see register.go
	// ctx bounds backend dials and waits for certificates; Shutdown
	// cancels it. (fasthttp's RequestCtx is not used as a context:
	// net.Dialer would watch it with a goroutine per dial, and its Done
	// races with fasthttp's Shutdown.)
	ctx     context.Context
	cancel  context.CancelFunc
	started time.Time
}

// New compiles cfg into a Server. Nothing listens until Start.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{started: time.Now()}
	e := &env{
		log:      opts.Logger,
		pool:     relay.NewPool(opts.BufferSize),
		keys:     relay.NewKeyLog(),
		wheel:    keepalive.NewWheel(0, 0),
		health:   health.NewChecker(opts.Logger),
		backends: &balancer.Registry{},
		onStart:  s.sessionStarted,
		onDone:   s.sessionDone,
		onFlush:  s.sessionFlush,
		onTune:   s.tuneSockets,
	}
	s.env = e
	e.mem = newMemReleaser(e.wheel)
	e.metrics = newMetrics(s)
	if ls, err := relay.NewLoops(opts.Loops, opts.BufferSize); err == nil {
		e.loops = ls
	} else {
		e.log.Warn("no event loops: every connection keeps a goroutine per direction", "err", err)
	}
	s.sessions.init()
	s.ports = ports{log: e.log, opts: &opts, serve: s.serve, headerReceived: s.headerReceived, tlsFor: s.listenerTLS,
		episode: s.acceptEpisode, loopsListen: s.loopsListen, stopping: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	rt, err := build(cfg, nil, e)
	if err != nil {
		s.cancel()
		e.close()
		e.health.Close()
		return nil, err
	}
	s.rt.Store(rt)
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

// validate builds cfg's runtime over an env that runs nothing (see
// Validate).
func validate(cfg *config.Config) (*runtime, error) {
	// Routes look up their metrics on build; a private registry is only
	// memory.
	e := &env{log: slog.New(slog.DiscardHandler), backends: &balancer.Registry{}, validating: true}
	e.metrics = newMetrics(nil)
	return build(cfg, nil, e)
}

// Start opens every listener of the config and serves on it. It returns
// once all are listening, or the first error (after closing what it opened).
// With TLS sites it then obtains or loads their certificates (ACME, the
// local CA of tls internal, files) before it returns; a site that gets none
// is an error naming it with its file:line.
func (s *Server) Start() error {
	rt := s.rt.Load()
	if err := s.startWatches(rt); err != nil {
		return err
	}
	opened, err := s.ports.open(rt)
	if err != nil {
		return err
	}
	s.ports.commit(rt, opened)
	if err := rt.tls.start(s.ctx, s.log); err != nil { // listening, so ACME challenges reach us
		shutdownServers(s.ports.close())
		return err
	}
	s.self.started.Store(true)
	s.registerSelf(rt)
	return nil
}

// Addr returns the address the listener for a config port is bound to.
func (s *Server) Addr(port int) net.Addr { return s.ports.addr(port) }

// loopsListen has the event loops take a plain port's socket over,
// accepting on it and reading WebSocket handshakes themselves (front.go);
// it returns
// the loops' Listener, from which fasthttp accepts what the loops pass
// on, or ln itself when there are no loops or they cannot take it.
func (s *Server) loopsListen(port int, ln net.Listener, ep *acceptEpisode) net.Listener {
	// The loops accept on ports that are plain now; a TLS port is left to
	// Go's accept, which crypto/tls needs anyway (a reload that changes a
	// port's kind is served right either way: Front.Plain is asked per
	// connection).
	f := &front{s: s, port: port, local: ln.Addr(), tls: s.listenerTLS(port), ep: ep}
	if s.loops == nil || !f.Plain() {
		return ln
	}
	fl, err := s.loops.Listen(ln, f)
	if err != nil {
		s.log.Warn("the event loops do not accept on this port; Go does", "port", port, "err", err)
		return ln
	}
	return fl
}

// serve is the entry point of every request fasthttp reads (the event
// loops read WebSocket handshakes on plain ports themselves: front.go).
func (s *Server) serve(ctx *fasthttp.RequestCtx, port int) {
	t, r, ok := s.route(ctx, port)
	if !ok {
		return
	}
	if upgrade.IsAttempt(&ctx.Request.Header) {
		s.serveWebSocket(ctx, t, r)
		return
	}
	s.serveHTTP(ctx, t, r)
}

// route checks the request's framing and target and finds its route in
// the running runtime. When it reports false, ctx holds the answer (a 400
// or 404, an ACME challenge or a redirect to https).
func (s *Server) route(ctx *fasthttp.RequestCtx, port int) (*runtime, *route, bool) {
	if !upgrade.HTTP1(ctx.Request.Header.Protocol()) {
		// HTTP/2 and later are not spoken in this syntax (RFC 9112 §2.3).
		ctx.Error("HTTP version not supported\n", fasthttp.StatusHTTPVersionNotSupported)
		ctx.SetConnectionClose()
		return nil, nil, false
	}
	if h, u := ctx.Request.Header.Host(), ctx.Host(); len(h) > 0 && !upgrade.ValidHost(h) || len(u) > 0 && !upgrade.ValidHost(u) {
		// RFC 9112 §3.2: a Host that is not a host and port is a 400, before
		// it can pick a route or reach a backend or a log. The header as
		// sent: fasthttp's URI parse would drop a "user@" routing never sees.
		ctx.Error("bad request: malformed Host header\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return nil, nil, false
	}
	if why := framingError(&ctx.Request.Header); why != "" {
		ctx.Error("bad request: "+why+"\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose() // where this request ends is in doubt
		return nil, nil, false
	}
	var buf [256]byte
	tg, why := parseTarget(ctx, buf[:0])
	if why != "" {
		ctx.Error("bad request: "+why+"\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return nil, nil, false
	}
	t := s.rt.Load()
	if serveHTTPPort(ctx, t, port, tg.path) { // ACME challenges, redirects to https
		return nil, nil, false
	}
	r := t.lookup(port, ctx.Host(), tg.path, ctx.QueryArgs())
	if r != nil && tg.encodedSlash && !r.cfg.AllowEncodedSlash {
		ctx.Error("bad request: encoded slash or backslash in the path\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return nil, nil, false
	}
	tg.forward(ctx)
	if r == nil {
		ctx.Error("no route for this request\n", fasthttp.StatusNotFound)
		if bodyMayRemain(ctx) || upgrade.IsAttempt(&ctx.Request.Header) {
			ctx.SetConnectionClose()
		}
		return nil, nil, false
	}
	return t, r, true
}

// Shutdown stops accepting, sends every live WebSocket a 1001 close (spread
// over up to half the grace period, at most 1,000 a second) and waits until
// they end or ctx is done, when it closes what is left. Then it releases
// the running config's runtime and what the Server built it on.
func (s *Server) Shutdown(ctx context.Context) error {
	closed := s.ports.close() // not Ready from here on
	s.self.leave(s.log)
	// Spread, so that clients do not all reconnect to the next proxy at once.
	err := s.sessions.shutdown(ctx, s.rt.Load().cfg.Global.GracePeriod/2)
	shutdownServers(closed)
	if s.sessions.len() == 0 {
		s.env.close()
	}
	s.cancel()
	s.self.close()
	s.reloadMu.Lock() // a reload in progress installs or drops its runtime first
	s.rt.Load().release(nil)
	s.reloadMu.Unlock()
	s.health.Close()
	return err
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
	s.rt.Load().access.websocket(c, ss)
	s.sessions.remove(ss)
	if ss.Stalled != relay.SideNone {
		s.log.Warn("slow consumer dropped", "route", c.route.name, "side", ss.Stalled.String(), "client", c.client.String(), "backend", c.backend.Addr)
	}
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return // the arguments below cost allocations even when not logged
	}
	s.log.Debug("websocket closed",
		"route", c.route.name, "backend", c.backend.Addr, "client", c.client.String(), "key", c.key,
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
