package proxy

import (
	"net"
	"syscall"

	"github.com/wsproxy/wsproxy/keepalive"
)

// Accepted sockets inherit keepalive and user-timeout settings from their
// listening socket (Linux copies them at accept). When every route on a
// port has the same settings they are set once on the listener, and the
// client leg of a WebSocket needs none of its five setsockopt calls.
// inherited holds, per port, what the listener was given.

// inheritTCP sets on ln the TCP settings all of t's routes on port share,
// if they do, and records them.
func (s *Server) inheritTCP(t *table, port int, ln net.Listener) {
	tcp, ok := t.portTCP(port)
	if !ok {
		return
	}
	sc, isSC := ln.(syscall.Conn)
	if !isSC || keepalive.Apply(sc, tcp) != nil {
		return
	}
	s.inherited.Store(port, tcp)
}

// clientHasTCP reports whether a connection accepted on local address
// addr already has tcp, from its listener.
func (s *Server) clientHasTCP(addr net.Addr, tcp keepalive.TCP) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	v, ok := s.inherited.Load(ta.Port)
	return ok && v.(keepalive.TCP) == tcp
}

// portTCP returns the TCP settings every route served on port has, and
// false if they differ or there are none.
func (t *table) portTCP(port int) (keepalive.TCP, bool) {
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
