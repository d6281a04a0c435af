// Package config turns a Caddyfile into wsproxy's typed configuration.
//
// Parse reads the file with Caddy's own caddyfile lexer (so env placeholders,
// imports and snippets work as Caddy users expect), then builds the structs
// below, fills every default and validates the result. Every error names the
// file and line it came from. A *Config is never modified after Parse returns:
// the proxy compiles it into its own runtime form, which is what makes a reload
// a pointer swap.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/discovery"
	"github.com/wsproxy/wsproxy/health"
	"github.com/wsproxy/wsproxy/keepalive"
)

// Pos is where a directive appeared in the config.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Config is one complete, validated configuration.
type Config struct {
	// File is the path the config was read from (or a name for embedded ones).
	File   string
	Global Global
	Sites  []*Site
}

// Global holds the options of the global block `{ ... }` at the top of the file.
type Global struct {
	// MaxHeaderBytes limits the size of a request's header block; a larger
	// one is answered 431. Directive: max_header_bytes SIZE. Default 16 KiB.
	MaxHeaderBytes int
	// HandshakeTimeout bounds the time a client may take to send its whole
	// request header (slowloris). Directive: handshake_timeout DURATION.
	// Default 10s.
	HandshakeTimeout time.Duration
	// RequestBodyTimeout is how long a plain HTTP request's body may go
	// without a byte arriving while it streams to the backend (idle, not
	// total: a large upload may take as long as it keeps moving); 0 is no
	// limit. When it fires the client gets 408 and the connection is
	// closed. Directive: request_body_timeout DURATION | off. Default 60s.
	RequestBodyTimeout time.Duration
	// LogLevel is one of debug, info, warn, error. Directive: log_level. Default info.
	LogLevel string
	// TrustedProxies are the peers whose client-address header (see
	// ClientIPHeader) is believed when finding a client's real IP, for the
	// "ip" hash key. Directive: trusted_proxies CIDR|private_ranges...
	// Default none: the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// ClientIPHeader is the header trusted proxies report the client in:
	// X-Forwarded-For or Forwarded. Directive: client_ip_header. Default
	// X-Forwarded-For.
	ClientIPHeader string
	// Admin is the admin API's listen address, "" when off. Directive:
	// admin ADDR [allow_remote] [{ token TOKEN }] | off. Default off. A
	// non-loopback address needs allow_remote, and allow_remote needs a
	// token.
	Admin            string
	AdminAllowRemote bool
	// AdminToken, if set, is required of every admin request as
	// "Authorization: Bearer TOKEN"; write it as {$WSPROXY_ADMIN_TOKEN}
	// to keep it out of the file.
	AdminToken string

	// TLS holds the automatic TLS options (email, acme_ca, acme_ca_root,
	// storage, http_port, https_port); see TLSOptions.
	TLS TLSOptions

	// MaxConnections caps live WebSockets in the whole proxy (503 past it).
	// Directive: max_connections N. Default 0, no cap.
	MaxConnections int
	// MaxConnectionsPerIP caps live WebSockets per client IP, IPv6 by /64
	// (429 past it). Directive: max_connections_per_ip N. Default 0, no cap.
	MaxConnectionsPerIP int
	// HandshakeRatePerIP limits WebSocket handshakes per client IP per
	// second, with HandshakeBurstPerIP in a burst (429 past it). Directive:
	// handshake_rate_per_ip PER_SECOND [BURST]. Default 0, no limit.
	HandshakeRatePerIP  float64
	HandshakeBurstPerIP int

	// AccessLog is where one JSON line per WebSocket connection (when it
	// ends) and per plain HTTP request goes: "stdout", "stderr", a file
	// path (appended to), or "" for none. AccessLogSample is the share of
	// them written, 0 to 1. Directive: access_log stdout|stderr|FILE|off
	// [SAMPLE]. Default stdout, 1.
	AccessLog       string
	AccessLogSample float64

	// GracePeriod is how long SIGTERM gives live WebSockets: their 1001
	// closes are spread over it, and what is left after it is cut.
	// Directive: grace_period DURATION. Default 30s.
	GracePeriod time.Duration
	// ReloadDrain is the window over which a reload closes the connections
	// of removed routes (1001) and of backends that left a route (1012),
	// at random times so clients do not all reconnect at once. Directive:
	// reload_drain DURATION. Default 10s.
	ReloadDrain time.Duration
	// WriteTimeout is the default of every route's write_timeout, and
	// how long one write of a plain HTTP answer may wait for a client
	// that does not read. Directive: write_timeout DURATION | off.
	// Default 30s.
	WriteTimeout time.Duration

	// Consul is the global consul block; nil if the file has none (routes
	// that name a Consul service then use Consul's environment defaults).
	Consul *Consul
}

// Ping is a proxy ping schedule on one leg.
type Ping struct {
	// Interval is how long the peer may be silent before it is pinged; 0 is off.
	Interval time.Duration
	// Timeout is how long it then has to send anything before it is closed.
	Timeout time.Duration
}

// MessageRate is N messages per Per, Burst of them at once. The zero
// value is no limit.
type MessageRate struct {
	N     int
	Per   time.Duration
	Burst int
}

// On reports whether the rate limits anything.
func (r MessageRate) On() bool { return r.N > 0 && r.Per > 0 }

// Interval is the time between two tokens; 0 when off.
func (r MessageRate) Interval() time.Duration {
	if !r.On() {
		return 0
	}
	return r.Per / time.Duration(r.N)
}

// Site is one site block: the addresses it listens on and its routes in order.
type Site struct {
	Pos       Pos
	Addresses []Address
	// Routes are tried in file order; the first that matches wins.
	Routes []*Route
	// TLS is how the site's TLS addresses (Scheme "https") get
	// certificates: its `tls` directive, or automatic ACME without one.
	// Nil when the site has no TLS address.
	TLS *SiteTLS
}

// Address is one site address such as `example.com:8080`, `:9000` or
// `http://*.example.com:8080`.
type Address struct {
	// Scheme is "http" (plain ws://) or "https" (TLS, wss://): https://,
	// a name without a port, HTTPS's port, or any port of a site with a
	// tls directive, unless the address says http:// or is on HTTP's port.
	Scheme string
	// Host is the host to match, lower-cased; "" matches any host and
	// "*.example.com" matches exactly one label in place of the star.
	Host string
	// Port is the TCP port to listen on.
	Port int
}

// String returns scheme://host:port, with an IPv6 host in brackets.
func (a Address) String() string {
	return a.Scheme + "://" + net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

// PathKind says how a path pattern matches.
type PathKind int

const (
	// PathExact matches the path exactly (a pattern without wildcards).
	PathExact PathKind = iota
	// PathPrefix matches any path that starts with Pattern (the config wrote
	// it with a single trailing '*', which is dropped here).
	PathPrefix
	// PathGlob matches with path.Match semantics: '*' does not cross '/'.
	PathGlob
)

// PathMatcher is one path pattern of a route.
type PathMatcher struct {
	Kind    PathKind
	Pattern string
}

// QueryKind says how a query matcher compares the parameter's value.
type QueryKind int

const (
	// QueryPresent matches when the parameter is present, whatever its value.
	QueryPresent QueryKind = iota
	// QueryEquals matches when one of the parameter's values equals Value.
	QueryEquals
	// QueryGlob matches when one of the parameter's values matches Value
	// with path.Match semantics.
	QueryGlob
)

// QueryMatcher is one `query key[=value]` condition of a route.
type QueryMatcher struct {
	Key   string
	Kind  QueryKind
	Value string
}

// Upstream is one static backend.
type Upstream struct {
	Pos Pos
	// Addr is host:port, with the scheme (ws://, http://) removed.
	Addr string
	// Weight is the backend's share relative to the route's others.
	// Directive: weights N... (one per upstream, in order). Default 1.
	Weight int
}

// Route is one `route` block inside a site.
type Route struct {
	Pos Pos
	// Name identifies the route in logs, metrics and the key lookup.
	// Directive: name NAME. Default: the site's first address followed by the
	// first path pattern, e.g. "http://:8080/chat/*".
	Name string
	// Paths match if any one matches; none means every path.
	Paths []PathMatcher
	// Query matchers must all match.
	Query []QueryMatcher
	// Upstreams is the static backend list. Directive: to ADDR... A route
	// has either upstreams or Consul.
	Upstreams []Upstream
	// Consul, if set, takes the backends from the instances of a Consul
	// service that pass its filters, instead. Directive: consul SERVICE
	// { tags TAG...; service_meta KEY=VALUE...; node_meta KEY=VALUE...;
	// datacenter DC; allow_warning; weight_meta KEY; keep_stale_on_empty },
	// at ConsulPos. See discovery.Query.
	Consul    *discovery.Query
	ConsulPos Pos
	// DrainWindow, if set, closes connections to a Consul instance that
	// leaves the set with 1012, at random times within the window, so
	// clients reconnect elsewhere without a thundering herd. By default
	// they stay until they end. Directive: drain_on_removal DURATION.
	DrainWindow time.Duration

	// LBRetries is how many further backends are tried when dialing or the
	// backend handshake fails. Directive: lb_retries N. Default 2.
	LBRetries int
	// DialTimeout bounds connecting to a backend. Directive: dial_timeout. Default 5s.
	DialTimeout time.Duration
	// ResponseTimeout bounds, for plain HTTP, how long a backend may take
	// to begin its response once the request is sent, and any pause while
	// it sends or reads (idle, renewed by every read and write: a response
	// that keeps streaming is never cut). The client gets 504 when it
	// fires before the response began. Directive: response_timeout
	// DURATION | off. Default 60s.
	ResponseTimeout time.Duration
	// MaxConnsPerBackend caps the plain HTTP connections to each backend
	// (shared by routes with the same settings); requests past it wait in
	// a queue for up to MaxConnsWait for one to free up, then get 503.
	// Directive: max_conns_per_backend N [WAIT]. Default 1024, 30s.
	MaxConnsPerBackend int
	MaxConnsWait       time.Duration
	// UpstreamHandshakeTimeout bounds sending the backend handshake and reading
	// its response. Directive: upstream_handshake_timeout. Default 10s.
	UpstreamHandshakeTimeout time.Duration

	// Origins is the Origin allow-list: entries like "https://example.com",
	// "https://*.example.com" (one or more labels), "http://localhost:*" (any
	// port) or "*" (any). Empty means any origin. Directive: origins PATTERN...
	Origins []string
	// LBPolicy chooses the backend of a new connection: hash (sticky on
	// LBArgs.Keys), least_conn (fewest live WebSockets), round_robin or
	// random_two. Directive: lb_policy NAME [ARG...]. Default least_conn.
	LBPolicy string
	// LBArgs are the policy's arguments as its own parser read them from
	// the lb_policy line (balancer.Policies), whole, so that a policy with
	// arguments of a new kind needs nothing here: for hash, Keys are the
	// key sources, first present wins (query:NAME, header:NAME,
	// cookie:NAME, ip, path). LoadFactor comes from lb_load_factor C: it
	// bounds a hashed backend's live connections to this multiple of the
	// average (the overflow goes to the key's next choice); 0, the
	// default, keeps keys strictly sticky. Fallback is the proxy's.
	LBArgs balancer.PolicyArgs
	// LBKeyMissing says what happens to a connection without a hash key:
	// "reject" (400) or the name of a non-hash policy. Directive:
	// lb_key_missing. Default least_conn.
	LBKeyMissing string

	// ClientPing and BackendPing are the proxy's WebSocket pings on each
	// leg. Directives: ping_client / ping_backend INTERVAL [TIMEOUT] | off.
	// Defaults: client 30s 15s, backend off.
	ClientPing, BackendPing Ping
	// TCP is the kernel-side liveness of both legs' sockets. Directives:
	// tcp_keepalive IDLE INTERVAL COUNT | off (default 30s 10s 3; off is
	// Idle -1) and tcp_user_timeout DURATION | off (default 60s; off is
	// -1). See keepalive.DefaultTCP.
	TCP keepalive.TCP
	// IdleTimeout closes a WebSocket with no data either way for this long
	// (1001). Directive: idle_timeout DURATION | off. Default off.
	IdleTimeout time.Duration
	// WriteTimeout is how long bytes the proxy holds for a peer that is
	// not reading may wait: past it the session ends as a slow consumer
	// (the stalled side is dropped, the other side gets 1001 toward the
	// backend or 1011 toward the client). -1 is off. Directive:
	// write_timeout DURATION | off. Default the global write_timeout (30s).
	WriteTimeout time.Duration
	// MaxLifetime closes a WebSocket this long (less up to 10% jitter)
	// after it opened (1001), so that long-lived connections rebalance.
	// Directive: max_lifetime DURATION | off. Default off.
	MaxLifetime time.Duration
	// MaxFrame and MaxMessage limit payload sizes from the client [0] and
	// from the backend [1] (close 1009); 0 is no limit. Directives:
	// max_frame_size / max_message_size FROM_CLIENT [FROM_BACKEND].
	// Defaults: frames unlimited; messages 64 MiB from the client,
	// unlimited from the backend.
	MaxFrame, MaxMessage [2]int64
	// MaxConnections caps this route's live WebSockets (503 past it).
	// Directive: max_connections N. Default 0, no cap.
	MaxConnections int
	// MessageRate limits the data messages (and pings) of one connection
	// from the client [0] and from the backend [1]; MessageRatePerKey limits those
	// of all connections with the same hash key on this proxy together
	// (lb_policy hash only). A side over either limit gets a 1008 close
	// (the default) or, with MessageRatePause, is not read until tokens
	// return. Directives: max_message_rate and max_message_rate_per_key
	// FROM_CLIENT [FROM_BACKEND] [burst N [N]] [close|pause], each rate
	// N/DURATION (100/s, 5/100ms, 600/1m) or off. Default none.
	MessageRate, MessageRatePerKey [2]MessageRate
	MessageRatePause               bool
	// HandshakeRate limits this route's WebSocket handshakes per second,
	// with HandshakeBurst at once; past it the client gets 503 with a
	// jittered Retry-After, so a reconnect storm spreads out. Directive:
	// handshake_rate N/DURATION [BURST]. Default 0, no limit; burst
	// defaults to one second's worth (at least 1).
	HandshakeRate  float64
	HandshakeBurst int

	// HealthCheck, if set, probes the route's static backends (Consul's
	// own checks decide for Consul backends). Passive ejects backends whose
	// dials or handshakes fail, for static and Consul backends alike.
	HealthCheck    *health.Check
	HealthCheckPos Pos // where the check's first directive is
	Passive        health.Passive

	// AllowEmptyOrigin admits requests without an Origin header (non-browser
	// clients) when Origins is set. Directive: allow_empty_origin true|false.
	// Default true: browsers always send Origin, so cross-site attacks carry one.
	AllowEmptyOrigin bool
	// AllowEncodedSlash admits paths with an encoded slash (%2F) or a
	// backslash (raw or %5C), which are otherwise refused with 400 because
	// backends disagree on whether they separate segments. They are kept
	// encoded (a backslash becomes %5C), both for matching and in what the
	// backend is sent. Directive: allow_encoded_slash [true|false].
	// Default false.
	AllowEncodedSlash bool
}
