package proxy

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

// routeStats are one route's live traffic figures: the Prometheus
// counters (resolved once, so a flush is a few atomic adds, not label
// lookups) and totals for /routes. They are kept by route name across
// reloads, as the Prometheus counters are.
type routeStats struct {
	bytes, frames, messages, limited [2]prometheus.Counter // 0: up, 1: down
	limitCloses                      [2]prometheus.Counter
	handshakesLimited                prometheus.Counter
	// Looked up once, not per connection: a vector's WithLabelValues
	// hashes its labels and takes a lock every time.
	switched prometheus.Counter  // handshakes answered 101
	duration prometheus.Observer // connection lifetimes
	backends sync.Map            // backend address → its connections counter

	tot          [2]trafficTotals
	closes       [2]atomic.Uint64
	hsLimitedTot atomic.Uint64
}

type trafficTotals struct {
	bytes, frames, messages, limited atomic.Uint64
}

// routeStatsSet holds every route name's stats.
type routeStatsSet struct {
	mu sync.Mutex
	m  map[string]*routeStats
}

// route returns the stats of the named route, made on first use.
func (m *metrics) route(name string) *routeStats {
	set := &m.routes
	set.mu.Lock()
	defer set.mu.Unlock()
	if st := set.m[name]; st != nil {
		return st
	}
	if set.m == nil {
		set.m = map[string]*routeStats{}
	}
	st := &routeStats{handshakesLimited: m.hsLimited.WithLabelValues(name),
		switched: m.handshakes.WithLabelValues(name, "101"), duration: m.duration.WithLabelValues(name)}
	for i, dir := range [2]string{"up", "down"} {
		st.bytes[i] = m.bytes.WithLabelValues(name, dir)
		st.frames[i] = m.frames.WithLabelValues(name, dir)
		st.messages[i] = m.messages.WithLabelValues(name, dir)
		st.limited[i] = m.limited.WithLabelValues(name, dir)
		st.limitCloses[i] = m.limitCloses.WithLabelValues(name, dir)
	}
	set.m[name] = st
	return st
}

// backend returns the route's connections counter for the backend at addr.
func (st *routeStats) backend(m *metrics, name, addr string) prometheus.Counter {
	if c, ok := st.backends.Load(addr); ok {
		return c.(prometheus.Counter)
	}
	c, _ := st.backends.LoadOrStore(addr, m.wsTotal.WithLabelValues(name, addr))
	return c.(prometheus.Counter)
}

// add counts what a session relayed since its last flush.
func (st *routeStats) add(up, down relay.Counts) {
	for i, c := range [2]relay.Counts{up, down} {
		if c == (relay.Counts{}) {
			continue
		}
		st.bytes[i].Add(float64(c.Bytes))
		st.frames[i].Add(float64(c.Frames))
		st.messages[i].Add(float64(c.Messages))
		t := &st.tot[i]
		t.bytes.Add(c.Bytes)
		t.frames.Add(c.Frames)
		t.messages.Add(c.Messages)
		if c.Limited > 0 {
			st.limited[i].Add(float64(c.Limited))
			t.limited.Add(c.Limited)
		}
	}
}

// limitClose counts a session closed because side was over its rate.
func (st *routeStats) limitClose(side relay.Side) {
	i := 0
	if side == relay.SideBackend {
		i = 1
	}
	st.limitCloses[i].Inc()
	st.closes[i].Add(1)
}

// sessionFlush is relay.Config.OnFlush: it runs on the session's loop,
// at most once a second per connection with traffic.
func (s *Server) sessionFlush(ss *relay.Session, up, down relay.Counts) {
	ss.Tag.(*wsConn).route.stats.add(up, down)
}

// DirTraffic is what a route or a connection relayed in one direction.
type DirTraffic struct {
	Bytes    uint64 `json:"bytes"`
	Frames   uint64 `json:"frames"`
	Messages uint64 `json:"messages"`
	// Limited counts messages that found no token (max_message_rate).
	Limited uint64 `json:"messages_limited"`
}

// RouteTraffic is a route's traffic since start (or since the route was
// first loaded), live connections included as of their last flush (at
// most a second old).
type RouteTraffic struct {
	Up   DirTraffic `json:"up"`
	Down DirTraffic `json:"down"`
	// RateLimitCloses counts connections closed with 1008 for their
	// client's (Up) or backend's (Down) message rate.
	RateLimitClosesUp   uint64 `json:"rate_limit_closes_up"`
	RateLimitClosesDown uint64 `json:"rate_limit_closes_down"`
	// HandshakesLimited counts handshakes refused by handshake_rate.
	HandshakesLimited uint64 `json:"handshakes_rate_limited"`
}

func (st *routeStats) traffic() RouteTraffic {
	var out RouteTraffic
	for i, d := range [2]*DirTraffic{&out.Up, &out.Down} {
		t := &st.tot[i]
		*d = DirTraffic{Bytes: t.bytes.Load(), Frames: t.frames.Load(), Messages: t.messages.Load(), Limited: t.limited.Load()}
	}
	out.RateLimitClosesUp, out.RateLimitClosesDown = st.closes[0].Load(), st.closes[1].Load()
	out.HandshakesLimited = st.hsLimitedTot.Load()
	return out
}

// ConnectionInfo is one live WebSocket connection as the admin API shows
// it. Traffic figures are as of the connection's last flush (at most a
// second old while it has traffic).
type ConnectionInfo struct {
	Route        string     `json:"route"`
	Key          string     `json:"key"`
	Backend      string     `json:"backend"`
	Client       string     `json:"client"`
	Started      time.Time  `json:"started"`
	AgeSeconds   float64    `json:"age_seconds"`
	Up           DirTraffic `json:"up"`
	Down         DirTraffic `json:"down"`
	LastActivity time.Time  `json:"last_activity"`
	// ClientPingRTTMs and BackendPingRTTMs are the last answered proxy
	// pings' round trips in milliseconds; 0 if none yet.
	ClientPingRTTMs  float64 `json:"client_ping_rtt_ms"`
	BackendPingRTTMs float64 `json:"backend_ping_rtt_ms"`
}

// ConnectionsPage is one page of the live connections, oldest first.
type ConnectionsPage struct {
	Total       int              `json:"total"`
	Offset      int              `json:"offset"`
	Limit       int              `json:"limit"`
	Connections []ConnectionInfo `json:"connections"`
}

// MaxConnectionsPage bounds a page of Connections.
const MaxConnectionsPage = 1000

// Connections lists the live WebSocket connections of route (all routes
// if ""), with hash key key (any if ""), oldest first: limit of them
// (100 if 0, at most MaxConnectionsPage) from offset.
func (s *Server) Connections(route, key string, offset, limit int) (ConnectionsPage, error) {
	if t := s.rt.Load(); route != "" && t.byName[route] == nil {
		return ConnectionsPage{}, fmt.Errorf("no route named %q; routes: %s", route, t.routeNames())
	}
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxConnectionsPage)
	offset = max(offset, 0)
	sessions := s.sessions.list(func(ss *relay.Session) bool {
		c := ss.Tag.(*wsConn)
		return (route == "" || c.route.name == route) && (key == "" || c.key == key)
	})
	slices.SortFunc(sessions, func(a, b *relay.Session) int {
		ca, cb := a.Tag.(*wsConn), b.Tag.(*wsConn)
		return cmp.Or(ca.start.Compare(cb.start), ca.client.compare(cb.client))
	})
	page := ConnectionsPage{Total: len(sessions), Offset: offset, Limit: limit, Connections: []ConnectionInfo{}}
	now := time.Now()
	for _, ss := range sessions[min(offset, len(sessions)):min(offset+limit, len(sessions))] {
		c := ss.Tag.(*wsConn)
		lv := ss.Live()
		page.Connections = append(page.Connections, ConnectionInfo{
			Route: c.route.name, Key: c.key, Backend: c.backend.Addr, Client: c.client.String(),
			Started: c.start, AgeSeconds: now.Sub(c.start).Seconds(),
			Up:               dirTraffic(lv.ClientToBackend),
			Down:             dirTraffic(lv.BackendToClient),
			LastActivity:     lv.LastActivity,
			ClientPingRTTMs:  float64(lv.ClientPingRTT) / 1e6,
			BackendPingRTTMs: float64(lv.BackendPingRTT) / 1e6,
		})
	}
	return page, nil
}

func dirTraffic(c relay.Counts) DirTraffic {
	return DirTraffic{Bytes: c.Bytes, Frames: c.Frames, Messages: c.Messages, Limited: c.Limited}
}

// relayRate converts a config rate to the relay's.
func relayRate(r config.MessageRate) relay.MessageRate {
	return relay.MessageRate{Interval: r.Interval(), Burst: r.Burst}
}
