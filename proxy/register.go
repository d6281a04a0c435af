package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/discovery"
)

// selfState is the proxy's readiness and its registration in Consul.
type selfState struct {
	// started is set once Start has opened the listeners and loaded the
	// certificates: before, the proxy is not ready.
	started atomic.Bool

	mu        sync.Mutex
	registrar *discovery.Registrar
	consul    *discovery.Consul // the registrar's client
	// deregister is the Close of the last registrar: Shutdown waits for
	// it.
	deregister func(context.Context) error
}

// Ready reports whether the proxy serves: started, not shutting down, with
// a config loaded and its listeners open, or, for port > 0, a listener on
// that config port. The error says why not. It backs the admin API's
// /health/ready, which Consul's check of a registered proxy asks.
func (s *Server) Ready(port int) error {
	if !s.self.started.Load() {
		return errors.New("starting")
	}
	if s.rt.Load() == nil {
		return errors.New("no config loaded")
	}
	return s.ports.ready(port)
}

// registerSelf makes the Consul registrations match t's config: one
// service instance per site port, each with an HTTP check of the proxy's
// readiness, kept by a discovery.Registrar (retries, re-registration after
// an agent restart) until Shutdown. A config without `register` removes
// them. Consul being unreachable delays registration, never serving.
func (s *Server) registerSelf(t *runtime) {
	c := t.cfg.Global.Consul
	s.self.mu.Lock()
	defer s.self.mu.Unlock()
	if c == nil || c.Register == "" || t.consul == nil {
		if s.self.registrar != nil {
			// Deregister now, over the client the retiring runtime
			// still holds.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.self.registrar.Close(ctx)
			cancel()
			s.self.registrar, s.self.consul = nil, nil
		}
		return
	}
	cl := t.consul
	if s.self.registrar != nil && s.self.consul != cl {
		// New agent settings: leave the old agent, register with the new.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.self.registrar.Close(ctx)
		cancel()
		s.self.registrar = nil
	}
	if s.self.registrar == nil {
		s.self.registrar = cl.NewRegistrar(discovery.RegistrarOptions{})
		s.self.consul = cl
		s.self.deregister = s.self.registrar.Close
	}
	regs := selfRegistrations(t.cfg)
	if err := s.self.registrar.Set(regs); err != nil {
		s.log.Error("Consul self-registration", "err", err)
	}
	ports := make([]int, len(regs))
	for i, r := range regs {
		ports[i] = r.Port
	}
	s.log.Info("registering in Consul", "service", c.Register, "ports", ports)
}

// leave starts deregistering the proxy at the start of a shutdown,
// so that clients looking for a proxy stop finding this one while it
// drains. It does not wait: an unreachable Consul must not delay the
// drain. close (the Registrar's Close again) waits for it.
func (st *selfState) leave(log *slog.Logger) {
	st.mu.Lock()
	r := st.registrar
	st.mu.Unlock()
	if r == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			log.Warn("Consul deregistration", "err", err)
		}
	}()
}

// close waits (up to 5 seconds) for the deregistration leave started.
func (st *selfState) close() {
	st.mu.Lock()
	dereg := st.deregister
	st.mu.Unlock()
	if dereg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dereg(ctx)
		cancel()
	}
}

// selfRegistrations are the Consul registrations of cfg: one per site
// port, in port order, with the default ID <name>-<hostname>-<port>, meta
// wsproxy_port and scheme (http or https), and the check of cfg's
// register block (the admin API's /health/ready?port=PORT by default).
func selfRegistrations(cfg *config.Config) []discovery.Registration {
	c := cfg.Global.Consul
	schemes := map[int]string{}
	for _, st := range cfg.Sites {
		for _, a := range st.Addresses {
			schemes[a.Port] = a.Scheme
		}
	}
	ports := make([]int, 0, len(schemes))
	for p := range schemes {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	regs := make([]discovery.Registration, 0, len(ports))
	for _, p := range ports {
		check := c.CheckURL
		if check == "" {
			check = adminCheckURL(cfg.Global.Admin, p)
		}
		regs = append(regs, discovery.Registration{
			Name:                    c.Register,
			Address:                 c.RegisterAddress,
			Port:                    p,
			Tags:                    c.RegisterTags,
			Meta:                    map[string]string{"wsproxy_port": strconv.Itoa(p), "scheme": schemes[p]},
			CheckHTTP:               check,
			CheckInterval:           c.CheckInterval,
			CheckTimeout:            c.CheckTimeout,
			DeregisterCriticalAfter: c.DeregisterAfter,
		})
	}
	return regs
}

// adminCheckURL is the readiness URL of one port on the admin listener at
// addr, as the local Consul agent reaches it (an unspecified host is
// reached on loopback). "" without an admin listener.
func adminCheckURL(addr string, port int) string {
	if addr == "" {
		return ""
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, p), Path: "/health/ready", RawQuery: "port=" + strconv.Itoa(port)}
	return u.String()
}
