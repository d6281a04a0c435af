package proxy

import (
	"net"
	"syscall"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

// Accepted sockets inherit their keepalive settings from the listening
// socket (Linux copies them at accept; Go leaves them alone when the
// listener was opened with KeepAlive -1). When every route on a port has
// the same settings they are set once on the listener, and the client leg
// of a WebSocket needs one setsockopt (the user timeout, which a listening
// socket cannot hold) instead of five. inherited holds, per port, what the
// listener was given.

// inheritTCP sets on ln, a listener opened with KeepAlive -1, the
// keepalive settings all of t's routes on port share, if they do, and
// records them.
func (p *ports) inheritTCP(t *runtime, port int, ln net.Listener) {
	tcp, ok := t.portTCP(port)
	if !ok {
		return
	}
	sc, isSC := ln.(syscall.Conn)
	if !isSC || keepalive.Apply(sc, tcp.Keepalive()) != nil {
		return
	}
	p.inherited.Store(port, tcp.Keepalive())
}

// tuneClient gives a client connection the route's TCP settings.
func (s *Server) tuneClient(r *route, c net.Conn) {
	port := 0
	if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
		port = ta.Port
	}
	if sc, ok := netConn(c).(syscall.Conn); ok {
		s.tuneClientSocket(r, port, sc)
	}
}

// tuneClientSocket gives a client socket accepted on port the route's TCP
// settings, setting only what its listener did not.
func (s *Server) tuneClientSocket(r *route, port int, sc syscall.Conn) {
	if v, ok := s.ports.inherited.Load(port); ok && v.(keepalive.TCP) == r.tcp.Keepalive() {
		keepalive.ApplyUserTimeout(sc, r.tcp)
		return
	}
	if err := keepalive.Apply(sc, r.tcp); err != nil {
		s.log.Debug("TCP keepalive not applied", "route", r.name, "err", err)
	}
}

// portTCP returns the TCP settings every route served on port has, and
// false if they differ or there are none.
func (t *runtime) portTCP(port int) (keepalive.TCP, bool) {
	ht := t.ports[port]
	if ht == nil {
		return keepalive.TCP{}, false
	}
	var sites []*site
	for _, st := range ht.exact {
		sites = append(sites, st)
	}
	for _, w := range ht.wild {
		sites = append(sites, w.site)
	}
	if ht.any != nil {
		sites = append(sites, ht.any)
	}
	var first *keepalive.TCP
	for _, st := range sites {
		for _, r := range st.routes {
			if first == nil {
				first = &r.tcp
			} else if *first != r.tcp {
				return keepalive.TCP{}, false
			}
		}
	}
	if first == nil {
		return keepalive.TCP{}, false
	}
	return *first, true
}

// tuneSockets is the relay's Tune for a route's sessions (env.onTune):
// the backend socket gets the route's TCP settings, and so does the
// client's when the event loops accepted it (a client fasthttp accepted
// was tuned when it was hijacked).
func (s *Server) tuneSockets(r *route, ss *relay.Session) {
	c := ss.Tag.(*wsConn)
	client, backend := ss.Sockets()
	if c.port != 0 && client != nil {
		s.tuneClientSocket(r, c.port, client)
	}
	if backend != nil {
		if err := keepalive.Apply(backend, r.tcp); err != nil {
			s.log.Debug("TCP keepalive not applied", "route", r.name, "err", err)
		}
	}
}

// maxTuneAfter bounds how long a relayed connection goes without its TCP
// settings: handshake storms of short connections skip six system calls
// each, and anything that lives longer than this has its settings well
// before the kernel could act on them.
const maxTuneAfter = time.Second

// tuneAfter is when a connection gets o: at most maxTuneAfter, and at
// most half of the keepalive idle time or user timeout. The kernel times
// both from the connection's history, not from the setsockopt, so nothing
// is detected later than if they had been set at the handshake.
func tuneAfter(o keepalive.TCP) time.Duration {
	d := maxTuneAfter
	if o.Idle > 0 {
		d = min(d, o.Idle/2)
	}
	if o.UserTimeout > 0 {
		d = min(d, o.UserTimeout/2)
	}
	return d
}
