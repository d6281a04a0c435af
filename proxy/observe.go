package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wsproxy/wsproxy/internal/logsink"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

// metrics are the proxy's Prometheus metrics, on a registry of the
// Server's own (no process-wide default registry). Figures that are cheap
// to read when scraped (live connections, backend health, Consul watches)
// are collected then; the rest are counted as things happen, never per
// frame: a connection's frames, messages and bytes are added by its loop at
// most once a second while it has traffic, and the rest when it ends.
type metrics struct {
	reg *prometheus.Registry

	handshakes   *prometheus.CounterVec // route, status
	wsTotal      *prometheus.CounterVec // route, backend
	httpRequests *prometheus.CounterVec // route, status
	frames       *prometheus.CounterVec // route, direction
	messages     *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	closes       *prometheus.CounterVec                    // side, code
	closeCache   [4][16]atomic.Pointer[prometheus.Counter] // see closed
	slow         *prometheus.CounterVec                    // route, side
	duration     *prometheus.HistogramVec
	pingRTT      *prometheus.HistogramVec // side
	reloads      *prometheus.CounterVec   // result

	acceptErrors  *prometheus.CounterVec // port, error
	acceptRefused *prometheus.CounterVec // port

	limited     *prometheus.CounterVec // route, direction
	limitCloses *prometheus.CounterVec // route, direction
	hsLimited   *prometheus.CounterVec // route
	routes      routeStatsSet          // see live.go
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "wsproxy", Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	m.handshakes = counter("websocket_handshakes_total", "WebSocket handshakes by route and the status answered (101 is success; 499: the client left before it was answered).", "route", "status")
	m.wsTotal = counter("websocket_connections_total", "WebSocket connections relayed, by route and backend.", "route", "backend")
	m.httpRequests = counter("http_requests_total", "Plain HTTP requests proxied, by route and status.", "route", "status")
	m.frames = counter("websocket_frames_total", "Frames relayed, by route and direction (up: client to backend); open connections add theirs at most once a second.", "route", "direction")
	m.messages = counter("websocket_messages_total", "Data messages relayed, by route and direction; open connections add theirs at most once a second.", "route", "direction")
	m.bytes = counter("websocket_bytes_total", "Bytes relayed, by route and direction; open connections add theirs at most once a second.", "route", "direction")
	m.limited = counter("websocket_messages_limited_total", "Messages that found no token under max_message_rate(_per_key): each one that waited (pause) or that closed its connection (close), by route and direction.", "route", "direction")
	m.limitCloses = counter("websocket_rate_limit_closes_total", "Connections closed with 1008 because the client (up) or the backend (down) went over its message rate, by route and direction.", "route", "direction")
	m.hsLimited = counter("websocket_handshakes_rate_limited_total", "WebSocket handshakes refused with 503 and Retry-After by the route's handshake_rate.", "route")
	m.closes = counter("websocket_closes_total", "Ended connections by the side that closed first and the close code.", "side", "code")
	m.slow = counter("websocket_slow_consumers_total", "Connections ended because one side stopped reading for longer than write_timeout, by route and that side.", "route", "side")
	m.reloads = counter("config_reloads_total", "Config reloads by result.", "result")
	m.acceptErrors = counter("accept_errors_total", "Failed accepts for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), by listening port and error; the listener keeps accepting.", "port", "error")
	m.acceptRefused = counter("accept_refused_total", "Clients accepted and closed at once while accepts were failing for want of a resource, by listening port.", "port")
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "wsproxy", Name: "websocket_connection_duration_seconds",
		Help: "Lifetime of ended WebSocket connections.", Buckets: prometheus.ExponentialBuckets(0.1, 4, 12)}, []string{"route"})
	m.pingRTT = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "wsproxy", Name: "ping_rtt_seconds",
		Help: "Round-trip time of the proxy's pings, by side.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"side"})
	m.reg.MustRegister(m.duration, m.pingRTT, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&liveCollector{s: s})
	return m
}

// Registry is the Prometheus registry the admin API serves at /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// liveCollector reads, when scraped, what is already counted elsewhere.
type liveCollector struct{ s *Server }

var (
	descLive    = prometheus.NewDesc("wsproxy_websocket_connections", "Live WebSocket connections by route.", []string{"route"}, nil)
	descBackend = prometheus.NewDesc("wsproxy_backend_connections", "Live WebSocket connections by backend.", []string{"backend"}, nil)
	descHealthy = prometheus.NewDesc("wsproxy_backend_healthy", "1 if the backend takes new connections.", []string{"route", "backend"}, nil)
	descVersion = prometheus.NewDesc("wsproxy_config_version", "Reloads applied since start.", nil, nil)
	descLoaded  = prometheus.NewDesc("wsproxy_config_loaded_timestamp_seconds", "When the running config was loaded.", nil, nil)
	descConsul  = prometheus.NewDesc("wsproxy_consul_watch_healthy", "1 if the Consul watch's last query succeeded (0: routing on the last known instances).", []string{"service"}, nil)
	descInst    = prometheus.NewDesc("wsproxy_consul_watch_instances", "Instances the Consul watch delivered last.", []string{"service"}, nil)
	descCert    = prometheus.NewDesc("wsproxy_certificate_expiry_timestamp_seconds", "When each managed certificate expires.", []string{"name"}, nil)
)

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLive, descBackend, descHealthy, descVersion, descLoaded, descConsul, descInst, descCert} {
		ch <- d
	}
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.s.rt.Load()
	seen := map[string]bool{}
	for _, r := range t.routes {
		ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(r.live.Load()), r.name)
		for _, b := range r.set.Load().Backends() {
			h := 0.0
			if b.Healthy() {
				h = 1
			}
			ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, h, r.name, b.Addr)
			if !seen[b.Addr] {
				seen[b.Addr] = true
				ch <- prometheus.MustNewConstMetric(descBackend, prometheus.GaugeValue, float64(b.Conns()), b.Addr)
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descVersion, prometheus.GaugeValue, float64(t.version))
	ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(t.loaded.Unix()))
	if t.consul != nil {
		for _, w := range t.consul.State() {
			h := 0.0
			if w.Healthy {
				h = 1
			}
			ch <- prometheus.MustNewConstMetric(descConsul, prometheus.GaugeValue, h, w.Service)
			ch <- prometheus.MustNewConstMetric(descInst, prometheus.GaugeValue, float64(w.Instances), w.Service)
		}
	}
	for name, exp := range t.tls.expiry() {
		ch <- prometheus.MustNewConstMetric(descCert, prometheus.GaugeValue, float64(exp.Unix()), name)
	}
}

// expiry is when each managed certificate expires; none without TLS.
func (rt *tlsRuntime) expiry() map[string]time.Time {
	if rt != nil && rt.mgr != nil {
		return rt.mgr.Expiry()
	}
	return nil
}

// pingRTT records the round trip of an answered proxy ping.
func (m *metrics) observePing(side relay.Side, rtt time.Duration) {
	m.pingRTT.WithLabelValues(side.String()).Observe(rtt.Seconds())
}

// accessLog writes one JSON line per ended WebSocket and per plain HTTP
// request, to the global access_log output, sampled.
type accessLog struct {
	log    *slog.Logger // nil: off
	sample float64
	closer io.Closer
}

func newAccessLog(output string, sample float64) (*accessLog, error) {
	var w io.Writer
	var file io.Closer
	switch output {
	case "":
		return &accessLog{}, nil
	case "stdout":
		w = os.Stdout
	case "stderr":
		w = os.Stderr
	default:
		f, err := os.OpenFile(output, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("access_log: %w", err)
		}
		w, file = f, f
	}
	sink := logsink.New(w, file, time.Second, "access log")
	return &accessLog{log: slog.New(slog.NewJSONHandler(sink, nil)), sample: sample, closer: sink}, nil
}

// checkAccessLog reports what newAccessLog would fail on for a file output
// that is sure to fail (its directory is missing or not a directory),
// without creating the file: Validate must leave nothing behind.
func checkAccessLog(output string) error {
	switch output {
	case "", "stdout", "stderr":
		return nil
	}
	dir := filepath.Dir(output)
	fi, err := os.Stat(dir)
	if err == nil && !fi.IsDir() {
		err = fmt.Errorf("%s is not a directory", dir)
	}
	if err != nil {
		return fmt.Errorf("access_log: %w", err)
	}
	return nil
}

func (a *accessLog) on() bool {
	return a.log != nil && (a.sample >= 1 || rand.Float64() < a.sample)
}

// websocket logs an ended connection.
func (a *accessLog) websocket(c *wsConn, ss *relay.Session) {
	if !a.on() {
		return
	}
	up, down := &ss.ClientToBackend, &ss.BackendToClient
	a.log.LogAttrs(context.Background(), slog.LevelInfo, "websocket",
		slog.String("client", c.client.String()), slog.String("route", c.route.name), slog.String("backend", c.backend.Addr),
		slog.String("key", c.key), slog.String("subprotocol", c.subprotocol),
		slog.Float64("duration_s", time.Since(c.start).Seconds()),
		slog.Uint64("bytes_up", up.Bytes), slog.Uint64("bytes_down", down.Bytes),
		slog.Uint64("messages_up", up.Messages), slog.Uint64("messages_down", down.Messages),
		slog.Int("close_code", int(ss.CloseCode)), slog.String("closed_by", ss.ClosedBy.String()),
		slog.String("reason", ss.Reason))
}

// http logs a plain proxied request; the caller has checked on().
func (a *accessLog) http(client, route, backend, method, uri string, status int, bytes int, took time.Duration) {
	a.log.LogAttrs(context.Background(), slog.LevelInfo, "http",
		slog.String("client", client), slog.String("route", route), slog.String("backend", backend),
		slog.String("method", method), slog.String("uri", uri), slog.Int("status", status),
		slog.Int("bytes", bytes), slog.Float64("duration_s", took.Seconds()))
}

// recordEnd accounts for an ended connection in the metrics.
func (m *metrics) recordEnd(c *wsConn, ss *relay.Session) {
	r := c.route.name
	// Frames, messages and bytes came through OnFlush (live.go).
	if ss.LimitClosed != relay.SideNone {
		c.route.stats.limitClose(ss.LimitClosed)
	}
	m.closed(ss.ClosedBy, ss.CloseCode).Inc()
	if ss.Stalled != relay.SideNone {
		m.slow.WithLabelValues(r, ss.Stalled.String()).Inc()
	}
	c.route.stats.duration.Observe(time.Since(c.start).Seconds())
}

// closed returns the closes counter of a side and code, from closeCache
// for the codes of RFC 6455 (1000-1015) that nearly every connection ends
// with.
func (m *metrics) closed(side relay.Side, code uint16) prometheus.Counter {
	i := int(code) - 1000
	if int(side) >= len(m.closeCache) || i < 0 || i >= len(m.closeCache[0]) {
		return m.closes.WithLabelValues(side.String(), strconv.Itoa(int(code)))
	}
	slot := &m.closeCache[side][i]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.closes.WithLabelValues(side.String(), strconv.Itoa(int(code)))
	slot.Store(&c)
	return c
}
