package proxy

import (
	"github.com/wsproxy/wsproxy/config"
)

// Reload builds cfg into a new runtime and, only if that and everything
// it needs before taking traffic succeed, installs it for new requests by
// swapping one pointer, then retires the runtime it replaced; on error the
// running config is untouched. The steps:
//
//   - build (runtime.go): compile, carrying state over from the running
//     runtime;
//   - start: health probes and Consul watches subscribe (a shared watch
//     answers at once), and certificates are obtained or loaded by the new
//     runtime's tls.Manager over the same storage (files are read again),
//     so a site that gets none fails the reload;
//   - open the ports the new config adds;
//   - swap, then serve the new ports, give kept ports whose
//     handshake_timeout or max_header_bytes changed a new server for new
//     connections, and close the ports it drops (their connections live
//     on);
//   - retire the old runtime: end its subscriptions and certificate
//     manager, and release what the new one did not take over (a Consul
//     client, certificate storage, an access log file, idle HTTP client
//     connections).
//
// Live WebSocket connections of unchanged routes are not touched: the
// route is carried over as it runs. Connections of removed routes are
// closed with 1001, and those to a static backend that left a changed
// route with 1012, spread over the global reload_drain window, but only if
// one of the route's new backends is reachable (see diffAndDrain). Everything
// else in the new config (timeouts, limits, pings) applies to new
// connections; live ones keep the settings they started with.
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
	old := s.rt.Load()
	rt, err := build(cfg, old, s.env)
	if err != nil {
		return ReloadReport{}, err
	}
	opened, err := s.start(rt)
	if err != nil {
		rt.release(old)
		return ReloadReport{}, err
	}
	s.rt.Store(rt)
	s.ports.commit(rt, opened)
	s.registerSelf(rt)
	old.release(rt)
	rep := s.diffAndDrain(old, rt)
	rep.Version = rt.version
	s.log.Info("config reloaded", "file", cfg.File, "version", rep.Version,
		"added", rep.Added, "removed", rep.Removed, "changed", rep.Changed, "unchanged", rep.Unchanged,
		"draining_connections", rep.DrainedConns, "drain_window", cfg.Global.ReloadDrain)
	if len(rep.Unreachable) > 0 {
		s.log.Warn("reload: new backends unreachable; connections to the backends they replace are kept where no new one answered",
			"unreachable", rep.Unreachable, "kept_connections", rep.KeptConns)
	}
	return rep, nil
}

// start does what a built runtime needs before it takes traffic: its
// subscriptions, its certificates and its new ports (opened, not yet
// served). On error what it started is for rt.release to end.
func (s *Server) start(rt *runtime) ([]*listener, error) {
	if err := s.startWatches(rt); err != nil {
		return nil, err
	}
	if err := rt.tls.start(s.ctx, s.log); err != nil {
		return nil, err
	}
	return s.ports.open(rt)
}
