package proxy

import (
	"fmt"
	"net"

	"github.com/wsproxy/wsproxy/config"
)

// Reload compiles cfg completely and, only if that succeeds, swaps it in for
// new requests; on error the running config is untouched. Listeners for
// ports the new config adds are opened before the swap, those for ports it
// drops are closed after it. Live WebSocket connections are left as they
// are: they keep the route and backend they were given.
func (s *Server) Reload(cfg *config.Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	t, err := s.compile(cfg)
	if err != nil {
		return err
	}
	// Subscriptions start before the swap, so Consul routes have backends
	// the moment they take traffic (a shared watch answers at once).
	if err := s.startDiscovery(t); err != nil {
		t.stop()
		return err
	}
	old := s.table.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		t.stop()
		return fmt.Errorf("reload: server is shutting down")
	}
	var opened []*listener
	for port := range t.ports {
		if s.listeners[port] != nil {
			continue
		}
		ln, err := net.Listen("tcp", bindAddr(cfg, port))
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			t.stop()
			return fmt.Errorf("reload: listen on port %d: %w", port, err)
		}
		opened = append(opened, &listener{port: port, ln: ln, srv: s.newHTTPServer(cfg, port), done: make(chan struct{})})
	}
	s.table.Store(t)
	old.stop()
	for _, l := range opened {
		s.listeners[l.port] = l
		go s.serveListener(l)
	}
	for port, l := range s.listeners {
		if t.ports[port] == nil {
			l.ln.Close()
			delete(s.listeners, port)
		}
	}
	return nil
}
