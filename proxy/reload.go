package proxy

import (
	"context"
	"fmt"
	"net"

	"github.com/wsproxy/wsproxy/config"
)

// Reload compiles cfg completely and, only if that succeeds, swaps it in for
// new requests; on error the running config is untouched. Listeners for
// ports the new config adds are opened before the swap, those for ports it
// drops are closed after it (their connections live on).
//
// Live WebSocket connections of unchanged routes are not touched: the
// route is carried over as it runs. Connections of removed routes are
// closed with 1001, and those to a static backend that left a changed
// route with 1012, spread over the global reload_drain window, but only if
// one of the route's new backends is reachable (see diffAndDrain). Everything
// else in the new config (timeouts, limits, pings) applies to new
// connections; live ones keep the settings they started with.
//
// Certificates come from a new tls.Manager over the same storage (files
// are read again), started before the swap: a site that gets no
// certificate fails the reload. Live TLS connections keep their session.
func (s *Server) Reload(cfg *config.Config) (ReloadReport, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	rep, err := s.reload(cfg)
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.metrics.reloads.WithLabelValues(result).Inc()
	return rep, err
}

func (s *Server) reload(cfg *config.Config) (ReloadReport, error) {
	t, err := s.compile(cfg)
	if err != nil {
		return ReloadReport{}, err
	}
	// Subscriptions start before the swap, so Consul routes have backends
	// the moment they take traffic (a shared watch answers at once).
	if err := s.startWatches(t); err != nil {
		t.stop()
		return ReloadReport{}, err
	}
	// New certificates are obtained before the swap; see tls.go.
	finishTLS, err := s.reloadTLS(t)
	if err != nil {
		t.stop()
		return ReloadReport{}, err
	}
	defer finishTLS()
	if err := s.swap(t); err != nil {
		t.stop()
		return ReloadReport{}, err
	}
	s.registerSelf(t)
	old := s.retired
	old.stop()
	rep := s.diffAndDrain(old, t)
	rep.Version = t.version
	s.log.Info("config reloaded", "file", cfg.File, "version", rep.Version,
		"added", rep.Added, "removed", rep.Removed, "changed", rep.Changed, "unchanged", rep.Unchanged,
		"draining_connections", rep.DrainedConns, "drain_window", cfg.Global.ReloadDrain)
	if len(rep.Unreachable) > 0 {
		s.log.Warn("reload: new backends unreachable; connections to the backends they replace are kept where no new one answered",
			"unreachable", rep.Unreachable, "kept_connections", rep.KeptConns)
	}
	return rep, nil
}

// swap installs t and its listeners; s.retired is left holding the table it
// replaced.
func (s *Server) swap(t *table) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("reload: server is shutting down")
	}
	var opened []*listener
	for port := range t.ports {
		if s.listeners[port] != nil {
			continue
		}
		lc := net.ListenConfig{KeepAlive: -1} // see Start
		ln, err := lc.Listen(context.Background(), "tcp", bindAddr(t.cfg, port))
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			return fmt.Errorf("reload: listen on port %d: %w", port, err)
		}
		opened = append(opened, s.newListener(t, port, ln, true))
	}
	old := s.table.Load()
	t.version = old.version + 1
	s.table.Store(t)
	s.retired = old
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
