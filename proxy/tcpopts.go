package proxy

import (
	"net"
	"syscall"

	"github.com/wsproxy/wsproxy/keepalive"
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

// tuneClient gives a client socket accepted on local address addr the
// route's TCP settings, setting only what its listener did not.
func (s *Server) tuneClient(r *route, c net.Conn) {
	if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
		if v, ok := s.ports.inherited.Load(ta.Port); ok && v.(keepalive.TCP) == r.tcp.Keepalive() {
			if sc, ok := c.(syscall.Conn); ok {
				keepalive.ApplyUserTimeout(sc, r.tcp)
				return
			}
		}
	}
	s.tuneTCP(r, c)
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
