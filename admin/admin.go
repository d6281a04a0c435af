// Package admin serves wsproxy's admin API: status, routes with their
// backends, the key lookup for directed push, and pprof. It listens on
// loopback unless the config explicitly allows otherwise (the config
// package enforces that), because it exposes internals.
//
// It uses net/http rather than fasthttp: it serves a few requests a
// minute, and net/http/pprof comes with it.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsproxy/wsproxy/proxy"
)

// Proxy is what the admin API reads from the running proxy.
type Proxy interface {
	Registry() *prometheus.Registry
	Status() proxy.Status
	Routes() []proxy.RouteInfo
	Lookup(route, key string) (proxy.Lookup, error)
	// Connections lists live WebSockets, oldest first, a page at a time.
	Connections(route, key string, offset, limit int) (proxy.ConnectionsPage, error)
	// Ready is nil while the proxy serves (port 0: all its listeners),
	// else why not.
	Ready(port int) error
}

// Options are what the admin API serves.
type Options struct {
	// Version is reported by /status.
	Version string
	// Proxy is the running proxy. Required.
	Proxy Proxy
	// Reload, if set, serves POST /reload: it re-reads the config file and
	// applies it as SIGHUP does.
	Reload func() (proxy.ReloadReport, error)
	// Logger; slog.Default() if nil.
	Logger *slog.Logger

	// Token, if set, is required of every request as "Authorization:
	// Bearer TOKEN" (401 otherwise), compared in constant time. The config
	// requires one with AllowRemote.
	Token string
	// AllowRemote accepts, besides the addresses below, a Host naming any
	// IP address with the API's port, for clients on other machines.
	// Default false.
	AllowRemote bool
	// ListenAddr is the address as configured (e.g. "localhost:2019"),
	// accepted as a Host besides the bound address and the loopback names
	// (127.0.0.1, localhost, [::1]) with its port. Start sets it.
	ListenAddr string
}

// Server is a running admin API.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	done   chan struct{}
	access *atomic.Pointer[access]
}

// access is what guard checks a request against; a reload replaces it.
type access struct {
	token       string
	want        [sha256.Size]byte // of "Bearer " + token
	allowRemote bool
}

func newAccess(token string, allowRemote bool) *access {
	return &access{token: token, want: sha256.Sum256([]byte("Bearer " + token)), allowRemote: allowRemote}
}

// SetAccess replaces the token and AllowRemote for the requests that
// follow, as a reload of the config does: a token rotated because it
// leaked stops working at once.
func (s *Server) SetAccess(token string, allowRemote bool) {
	s.access.Store(newAccess(token, allowRemote))
}

// Start listens on addr and serves the API.
func Start(addr string, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	o.ListenAddr = addr
	return Serve(ln, o), nil
}

// adminWriteTimeout bounds writing one response, the longest a profile
// may run included.
const adminWriteTimeout = 90 * time.Second

// Serve serves the API on ln, which it owns from then on, behind the
// checks of guard.
func Serve(ln net.Listener, o Options) *Server {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{ln: ln, done: make(chan struct{}), access: new(atomic.Pointer[access])}
	s.SetAccess(o.Token, o.AllowRemote)
	// Every read and write is bounded, so a client that connects and
	// stalls holds a goroutine and a descriptor for a while, not for ever.
	// The write bound leaves room for a 60 s CPU profile.
	s.srv = &http.Server{
		Handler:           guard(o, ln.Addr(), s.access, Handler(o)),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       60 * time.Second,
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "err", err)
		}
	}()
	log.Info("admin API listening", "addr", ln.Addr().String())
	return s
}

// Addr is the address the API listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the API, waiting briefly for requests in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

// guard refuses, before next sees them, requests that a browser could have
// been made to send or that lack the token:
//
//   - a Host that is not this API's address (403): a page on another
//     site that rebinds its own name to 127.0.0.1 reaches the loopback
//     port, but its requests carry that name as their Host;
//   - an Origin header that is present and not this API's (403): a page
//     on another site posting to http://127.0.0.1:2019/reload;
//   - without "Authorization: Bearer TOKEN" when a token is set (401).
//
// GET /health/... passes: it is for probes.
//
// Clients that are not browsers (curl, wsproxy reload, Prometheus) send
// the address they dialled as Host and no Origin.
func guard(o Options, bound net.Addr, acc *atomic.Pointer[access], next http.Handler) http.Handler {
	_, port, _ := net.SplitHostPort(bound.String())
	hosts := map[string]bool{
		strings.ToLower(bound.String()): true,
		"localhost:" + port:             true,
		"127.0.0.1:" + port:             true,
		"[::1]:" + port:                 true,
	}
	if o.ListenAddr != "" {
		hosts[strings.ToLower(o.ListenAddr)] = true
	}
	ours := func(host string, allowRemote bool) bool {
		host = strings.ToLower(host)
		if port == "80" && !strings.Contains(host, ":") {
			host += ":80"
		}
		if hosts[host] {
			return true
		}
		h, p, err := net.SplitHostPort(host)
		if err != nil || p != port || !allowRemote {
			return false
		}
		_, err = netip.ParseAddr(h)
		return err == nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := acc.Load()
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/health/") {
			// Health probes (Consul's check, a load balancer's) change
			// nothing and say little, and their senders cannot be given a
			// token or made to use this API's name.
			next.ServeHTTP(w, r)
			return
		}
		if !ours(r.Host, a.allowRemote) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "Host " + strconv.Quote(r.Host) + " is not this admin API's address"})
			return
		}
		if origin, ok := r.Header["Origin"]; ok && (len(origin) != 1 || !strings.HasPrefix(origin[0], "http://") || !ours(origin[0][len("http://"):], a.allowRemote)) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-origin requests are refused"})
			return
		}
		if a.token != "" {
			// Hashed first, so that the comparison takes the same time
			// whatever the length of what was sent.
			got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
			if subtle.ConstantTimeCompare(got[:], a.want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="wsproxy admin"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid Authorization: Bearer token is required"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Handler returns the API's routes, without the checks Serve puts in
// front of them (see guard):
//
//	GET /status               version, config file and load time, uptime, live connections
//	GET /routes               every route with its policy and backends (health, live connections)
//	GET /lookup?route=R&key=K the backend a connection with key K gets on route R
//	GET /connections[?route=R][&key=K][&offset=N][&limit=M]
//	                          live connections, oldest first: key, backend, age,
//	                          traffic each way, last activity, last ping RTT
//	POST /reload              re-read the config file and apply it (as SIGHUP)
//	GET /health/ready[?port=N] 200 while the proxy serves (on port N), else 503 and why
//	GET /health/live          200 while the process answers
//	GET /metrics              Prometheus metrics
//	/debug/pprof/...          Go's profiler
func Handler(o Options) http.Handler {
	p, version := o.Proxy, o.Version
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if o.Reload == nil {
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "this proxy has no config file to reload"})
			return
		}
		rep, err := o.Reload()
		if err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, r *http.Request) {
		port := 0
		if v := r.URL.Query().Get("port"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				http.Error(w, "port: want a number from 1 to 65535\n", http.StatusBadRequest)
				return
			}
			port = n
		}
		w.Header().Set("Cache-Control", "no-store")
		if err := p.Ready(port); err != nil {
			http.Error(w, "not ready: "+err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "live\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st := p.Status()
		writeJSON(w, http.StatusOK, map[string]any{
			"version":          version,
			"config_file":      st.ConfigFile,
			"config_version":   st.ConfigVersion,
			"config_loaded_at": st.ConfigLoadedAt,
			"uptime_seconds":   int64(time.Since(st.Started).Seconds()),
			"live_connections": st.Live,
		})
	})
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, p.Routes())
	})
	mux.HandleFunc("GET /lookup", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		route, key := q.Get("route"), q.Get("key")
		if route == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "route is required: /lookup?route=NAME&key=KEY"})
			return
		}
		l, err := p.Lookup(route, key)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, l)
	})
	mux.HandleFunc("GET /connections", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var page [2]int // offset, limit
		for i, name := range [2]string{"offset", "limit"} {
			if v := q.Get(name); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					writeJSON(w, http.StatusBadRequest, map[string]string{"error": name + ": want a whole number"})
					return
				}
				page[i] = n
			}
		}
		out, err := p.Connections(q.Get("route"), q.Get("key"), page[0], page[1])
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.Registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
