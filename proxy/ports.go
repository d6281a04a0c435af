package proxy

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
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

	"github.com/wsproxy/wsproxy/config"
)

// ports are the proxy's listening sockets, which outlive runtimes: a
// reload keeps the ports both configs have, opens those it adds and
// closes those it drops. Their lock is their own.
type ports struct {
	log  *slog.Logger
	opts *Options
	// serve is the entry point of every request fasthttp reads on a
	// port; headerReceived, fasthttp's hook (see httpproxy.go); tlsFor,
	// the TLS config a port's new connection is served with (see
	// tls.go); episode, a port's accept-failure accounting (listener.go);
	// loopsListen, the event loops taking a socket over (front.go), which
	// returns what fasthttp is to accept from.
	serve          func(*fasthttp.RequestCtx, int)
	headerReceived func(*fasthttp.RequestHeader) fasthttp.RequestConfig
	tlsFor         func(port int) func() *cryptotls.Config
	episode        func(port int) *acceptEpisode
	loopsListen    func(port int, ln net.Listener, ep *acceptEpisode) net.Listener

	inherited sync.Map // port → keepalive.TCP its socket was given (tcpopts.go)

	// stopping is closed by close: retired servers stop waiting for their
	// connections then.
	stopping chan struct{}

	mu     sync.Mutex
	m      map[int]*listener
	closed bool
}

// listener is one listening port. It accepts on one goroutine and serves
// with a fasthttp.Server made for the config's handshake_timeout and
// max_header_bytes; a reload that changes them gives the port a new
// server for new connections, while the old one finishes those it has
// (fasthttp reads its settings without synchronisation, so a running
// server is never changed).
type listener struct {
	port   int
	bind   string       // the address it listens on; "" if it was given
	ln     net.Listener // the socket, or the event loops' Listener once they took it over
	ep     *acceptEpisode
	accept *resilientListener // what fasthttp accepts from: the loops' Listener or ln, kept accepting through fd exhaustion

	mu  sync.Mutex
	cur *portServer   // serves new connections
	all []*portServer // not yet done, cur included
}

// serverSettings are what a port's fasthttp.Server takes from the config.
type serverSettings struct {
	handshakeTimeout time.Duration
	maxHeaderBytes   int
	writeTimeout     time.Duration // the global write_timeout; negative: off
}

func settingsOf(cfg *config.Config) serverSettings {
	return serverSettings{handshakeTimeout: cfg.Global.HandshakeTimeout, maxHeaderBytes: cfg.Global.MaxHeaderBytes, writeTimeout: cfg.Global.WriteTimeout}
}

// open listens on rt's ports that are not open yet. Nothing serves them
// until commit; abort closes them if the config is not installed.
func (p *ports) open(rt *runtime) ([]*listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("server is shutting down")
	}
	nums := make([]int, 0, len(rt.ports))
	for port := range rt.ports {
		l := p.m[port]
		if l == nil {
			nums = append(nums, port)
			continue
		}
		// A listening socket cannot move to another interface while it
		// serves, and closing it first would refuse clients meanwhile:
		// say so rather than keep serving where the config no longer says.
		if want := bindAddr(rt.cfg, port); l.bind != "" && want != l.bind {
			return nil, fmt.Errorf("port %d listens on %s, and its sites now need %s: a reload cannot move a listening socket; restart to apply it", port, l.bind, want)
		}
	}
	sort.Ints(nums)
	var opened []*listener
	for _, port := range nums {
		ln := p.opts.Listeners[port]
		given := ln != nil
		bind := ""
		if !given {
			var err error
			bind = bindAddr(rt.cfg, port)
			ln, err = listenTCP(bind)
			if err != nil {
				p.abort(opened)
				return nil, fmt.Errorf("listen on port %d: %w", port, err)
			}
		}
		if !given || p.opts.ListenersWithoutKeepAlive {
			p.inheritTCP(rt, port, ln)
		}
		opened = append(opened, &listener{port: port, bind: bind, ln: ln})
	}
	return opened, nil
}

// listenTCP opens a port's listening socket. Accepted sockets get the
// route's TCP settings once the route is known, not Go's defaults first
// (KeepAlive -1). Plain TCP, not the Multipath TCP Go listens with by
// default since 1.24: an MPTCP listening socket costs every SYN and accept
// its subflow handling, for clients that speak MPTCP rarely, and refuses
// the TCP options the event loops set on it (relay.Loops.Listen). Delayed
// ACKs from the start, on TLS ports too, whose sockets Go accepts: the
// client speaks first (a request, a ClientHello), and the ACK of what it
// sent leaves with the answer instead of alone.
func listenTCP(bind string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", bind)
	if err != nil {
		return nil, err
	}
	delayACKs(ln)
	return ln, nil
}

// abort closes listeners open returned, for a config not installed.
func (p *ports) abort(opened []*listener) {
	for _, l := range opened {
		l.ln.Close()
	}
}

// commit makes the ports match rt, now installed: it serves those open
// returned, gives kept ports whose server settings changed a new server
// for new connections, and closes the ports rt does not have (their
// WebSocket connections live on).
func (p *ports) commit(rt *runtime, opened []*listener) {
	want := settingsOf(rt.cfg)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[int]*listener{}
	}
	for port, l := range p.m {
		if rt.ports[port] == nil {
			l.ln.Close()
			delete(p.m, port)
		} else {
			l.apply(p, want)
		}
	}
	for _, l := range opened {
		// The loops start accepting now that rt is installed.
		l.ep = p.episode(l.port)
		l.ln = p.loopsListen(l.port, l.ln, l.ep)
		l.accept = resilient(l.ln, l.ep)
		p.m[l.port] = l
		p.log.Info("listening", "addr", l.ln.Addr().String())
		l.apply(p, want)
	}
}

// apply starts a server with settings st for the port's new connections,
// unless the current one has them; the current one is retired: it hands
// the next accepted connection to the new one and stops, finishing the
// connections it serves.
func (l *listener) apply(p *ports, st serverSettings) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil && l.cur.settings == st {
		return
	}
	ps := &portServer{l: l, settings: st, handoff: make(chan accepted, 1), done: make(chan struct{})}
	ps.srv = p.newHTTPServer(l.port, st)
	hijack := hijackableListener{Listener: l.accept, tlsConfig: p.tlsFor(l.port), writeIdle: st.writeTimeout}
	ps.accept = hijack.Accept
	if old := l.cur; old != nil {
		old.next = ps
		old.retired.Store(true) // after next: Accept reads next once it sees retired
	} else {
		ps.direct = true // the first server accepts on its own
	}
	l.cur = ps
	l.all = append(l.all, ps)
	go func() {
		defer close(ps.done)
		if err := ps.srv.Serve(ps); err != nil && !errors.Is(err, net.ErrClosed) {
			p.log.Error("listener stopped", "port", l.port, "err", err)
		}
		if ps.retired.Load() {
			// Close its idle keep-alive connections; requests in flight
			// finish under the settings they began with.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			go func() {
				select {
				case <-p.stopping:
					cancel()
				case <-ctx.Done():
				}
			}()
			ps.srv.ShutdownWithContext(ctx)
			cancel()
		}
		l.serverDone(ps)
	}()
}

// serverDone forgets a server whose Serve has returned. The port's
// current server returns only once the socket is closed: the accept
// chain's reserve fd goes then.
func (l *listener) serverDone(ps *portServer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.all {
		if x == ps {
			l.all = append(l.all[:i], l.all[i+1:]...)
			break
		}
	}
	if !ps.retired.Load() {
		l.accept.release()
	}
}

// portServer is one fasthttp.Server of a port and the net.Listener it
// serves: one server at a time accepts (the port's current one, or a
// retired one still blocked in Accept, which passes what it accepts on).
type portServer struct {
	l        *listener
	srv      *fasthttp.Server
	settings serverSettings
	accept   func() (net.Conn, error) // the port's accept chain (TLS, fd exhaustion)
	direct   bool                     // accepts itself; else waits for handoff first. Serve's goroutine only.
	handoff  chan accepted            // what the server before it accepted last
	retired  atomic.Bool
	next     *portServer // set before retired
	done     chan struct{}
}

type accepted struct {
	c   net.Conn
	err error
}

// Accept is called by fasthttp's Serve, from one goroutine.
func (ps *portServer) Accept() (net.Conn, error) {
	var a accepted
	if ps.direct {
		a.c, a.err = ps.accept()
	} else {
		a = <-ps.handoff
		ps.direct = true
	}
	if ps.retired.Load() {
		ps.next.handoff <- a // buffered: one predecessor, one handoff
		return nil, net.ErrClosed
	}
	return a.c, a.err
}

// Close does not close the socket: the port's other servers accept on it.
func (ps *portServer) Close() error   { return nil }
func (ps *portServer) Addr() net.Addr { return ps.l.ln.Addr() }

func (p *ports) newHTTPServer(port int, st serverSettings) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:        func(ctx *fasthttp.RequestCtx) { p.serve(ctx, port) },
		Name:           "wsproxy",
		ReadBufferSize: st.maxHeaderBytes,
		ReadTimeout:    st.handshakeTimeout,
		HeaderReceived: p.headerReceived,
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
		Logger:                       fasthttpLogger{p.log},
	}
}

// addr returns the address the listener for a config port is bound to.
func (p *ports) addr(port int) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.m[port]; l != nil {
		return l.ln.Addr()
	}
	return nil
}

// ready says why the ports do not serve (see Server.Ready), or nil.
func (p *ports) ready(port int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return errors.New("shutting down")
	case port > 0 && p.m[port] == nil:
		return fmt.Errorf("port %d is not listening", port)
	case len(p.m) == 0:
		return errors.New("no listener")
	}
	return nil
}

// close stops accepting on every port; from now on the proxy is not
// ready and reloads are refused. It returns the listeners closed, for
// shutdown.
func (p *ports) close() []*listener {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		close(p.stopping)
	}
	p.closed = true
	ls := make([]*listener, 0, len(p.m))
	for port, l := range p.m {
		l.ln.Close()
		ls = append(ls, l)
		delete(p.m, port)
	}
	return ls
}

// shutdown ends the servers of closed listeners: requests in flight get a
// second to finish.
func shutdownServers(ls []*listener) {
	for _, l := range ls {
		l.mu.Lock()
		all := append([]*portServer(nil), l.all...)
		l.mu.Unlock()
		for _, ps := range all {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			ps.srv.ShutdownWithContext(ctx)
			cancel()
			<-ps.done
		}
	}
}

// bindAddr chooses the interface for a port: the loopback address when
// every site on it names the same one, all interfaces otherwise. A name
// that is localhost or under .localhost counts as 127.0.0.1: resolvers and
// browsers answer it with loopback (RFC 6761), so no one elsewhere can
// reach it by name. Sites on two loopback addresses (127.0.0.1 and ::1,
// say) would need two sockets, and a port has one: all interfaces then.
// TLS sites count on the HTTP port too (ACME challenges, redirects).
func bindAddr(cfg *config.Config, port int) string {
	host := ""
	for _, st := range cfg.Sites {
		for _, a := range st.Addresses {
			if a.Port != port && !(a.Scheme == "https" && port == cfg.Global.TLS.HTTPPort) {
				continue
			}
			h := ""
			if a.Host == "localhost" || strings.HasSuffix(a.Host, ".localhost") {
				h = "127.0.0.1"
			} else if ip, err := netip.ParseAddr(a.Host); err == nil && ip.IsLoopback() {
				h = ip.Unmap().String()
			}
			if h == "" || host != "" && h != host {
				return ":" + strconv.Itoa(port)
			}
			host = h
		}
	}
	if host == "" {
		host = "127.0.0.1" // no site names the port
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
