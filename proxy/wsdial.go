package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/upgrade"
)

// backendHandshake is the backend half of one WebSocket handshake, after
// the client's request passed every check and was admitted: which backend
// to try next, whether a failure may be retried, what the client gets.
// It is a relay.Upstream, so an event loop can perform the exchange with
// its own non-blocking socket; without loops (or for a client connection
// they cannot own) run performs it from a goroutine with upgrade.Dial.
// Either way the client gets its 101 only after the backend's.
//
// It owns the admission ticket until the session does: Failed releases
// it, Switched hands it over. Its backend tries are an attempts value (the
// one retry rule and passive-health report of WebSocket and HTTP alike).
type backendHandshake struct {
	s  *Server
	r  *route
	tk *ticket

	req    []byte // the upstream request, the same for every backend; the 101 is checked against it
	wsKey  []byte
	key    []byte // the hash key
	client peerAddr
	port   int // the listening port, when a loop accepted the client (see route.tuneSockets)

	att attempts
	b   *balancer.Backend // the backend being tried
	hs  upgrade.Handshake
}

var handshakePool = sync.Pool{New: func() any { return new(backendHandshake) }}

// newBackendHandshake copies what the exchange needs out of ctx, which
// fasthttp recycles once the handler returns.
func (s *Server) newBackendHandshake(ctx *fasthttp.RequestCtx, r *route, wsKey, key []byte, tk *ticket) *backendHandshake {
	h := handshakePool.Get().(*backendHandshake)
	h.s, h.r, h.tk = s, r, tk
	clientIP := remoteAddr(ctx)
	up := upgrade.UpstreamRequest{Header: &ctx.Request.Header, ClientIP: clientIP, TLS: ctx.IsTLS(), TrustForwarded: s.rt.Load().clientIP.Trusted(clientIP)}
	h.req = upgrade.AppendRequest(h.req[:0], &up)
	h.wsKey = append(h.wsKey[:0], wsKey...)
	h.key = append(h.key[:0], key...)
	h.client = newPeerAddr(ctx.RemoteAddr())
	h.att = r.attempts(s.health, h.key, true, true)
	return h
}

// peerAddr is a client's address, kept as a value and printed only when
// something shows it (the sampled access log, the admin API, a warning):
// most connections are never printed, and formatting every one cost a
// string per handshake.
type peerAddr struct {
	ap    netip.AddrPort // a TCP peer; IPv4-mapped addresses unmapped, as net.TCPAddr prints them
	other string         // any other kind of address, printed
}

func newPeerAddr(a net.Addr) peerAddr {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return peerAddr{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
	}
	if a == nil {
		return peerAddr{}
	}
	return peerAddr{other: a.String()}
}

// compare orders addresses without printing them (the admin API sorts
// every connection's).
func (p peerAddr) compare(q peerAddr) int {
	if c := p.ap.Compare(q.ap); c != 0 {
		return c
	}
	return strings.Compare(p.other, q.other)
}

// String is what a.String() gives for the address newPeerAddr was made from.
func (p peerAddr) String() string {
	if p.ap.IsValid() {
		return p.ap.String()
	}
	return p.other
}

// free returns h to its pool once neither the loop nor run holds it.
func (h *backendHandshake) free() {
	h.s, h.r, h.tk, h.b = nil, nil, nil, nil
	h.port = 0
	h.att, h.hs = attempts{}, upgrade.Handshake{}
	if cap(h.req) > 8<<10 {
		h.req = nil
	}
	handshakePool.Put(h)
}

// Next implements relay.Upstream: the attempts pick a backend not tried
// yet, up to lb_retries more after the first, while failures are
// retryable (backendFailed); the backend's own HTTP answer (e.g. 401)
// ends the tries.
func (h *backendHandshake) Next(prev error) (relay.Attempt, bool) {
	r := h.r
	if prev != nil {
		err := h.upgradeError(prev)
		b := h.b
		h.b = nil
		retry := h.att.Report(b, err) // releases b
		var httpErr *upgrade.HTTPResponseError
		if !errors.As(err, &httpErr) {
			h.s.log.Warn("backend handshake failed", "route", r.name, "backend", b.Addr, "attempt", h.att.Tries(), "err", err)
		}
		if !retry {
			return relay.Attempt{}, false
		}
	}
	b := h.att.Next()
	if b == nil {
		return relay.Attempt{}, false
	}
	h.b = b
	return relay.Attempt{Addr: b.Addr, Request: h.req, DialTimeout: r.cfg.DialTimeout, Timeout: r.cfg.UpstreamHandshakeTimeout}, true
}

// upgradeError gives a loop's error the upgrade package's type, so that
// one retry rule (upgrade.Retryable) and one health report serve both
// ways of dialing, and names the backend in errors that do not.
func (h *backendHandshake) upgradeError(err error) error {
	var ue *relay.UpstreamError
	if errors.As(err, &ue) {
		if ue.Dial {
			return &upgrade.DialError{Addr: ue.Addr, Err: ue}
		}
		return &upgrade.HandshakeError{Addr: ue.Addr, Reason: ue.Reason, Err: ue.Err}
	}
	var he *upgrade.HandshakeError
	var re *upgrade.HTTPResponseError
	switch {
	case errors.As(err, &he) && he.Addr == "" && h.b != nil:
		he.Addr = h.b.Addr
	case errors.As(err, &re) && re.Addr == "" && h.b != nil:
		re.Addr = h.b.Addr
	}
	return err
}

// Response implements relay.Upstream.
func (h *backendHandshake) Response(b []byte, eof bool) (int, error) {
	head, hs, err := upgrade.ParseResponse(b, eof, h.req)
	if head > 0 {
		h.hs = hs
	}
	return head, err
}

// Switched implements relay.Upstream: the session takes the admission,
// and the client's 101 carries what the backend chose.
func (h *backendHandshake) Switched(ss *relay.Session) *relay.Config {
	s, r, b := h.s, h.r, h.b
	h.att.Report(b, nil) // the session keeps b's count
	r.stats.switched.Inc()
	r.stats.backend(s.metrics, r.name, b.Addr).Inc()
	c := &wsConn{route: r, backend: b, client: h.client, key: string(h.key), start: time.Now(), ticket: h.tk, subprotocol: h.hs.Protocol, port: h.port}
	ss.Tag = c
	ss.Keys = r.keyLimits.Acquire(c.key)
	// The relay sends the 101 itself, after the session is registered:
	// a client that has its 101 is a connection reloads and shutdown can
	// see, and a client gone by now ends like any other.
	ss.First = upgrade.AppendSwitchingProtocols(make([]byte, 0, 256), h.wsKey, &h.hs)
	cfg := r.relayConfig(h.hs.RSV)
	h.free()
	return cfg
}

// Failed implements relay.Upstream: the admission is given back and the
// client gets the backend's own answer, a 502 if backends failed (a
// deadline included), or a 503 if there was none to try or the proxy is
// stopping; nothing if the client has gone.
func (h *backendHandshake) Failed(last error) []byte {
	s, r := h.s, h.r
	prevErr := h.att.Err() // the last completed attempt's, as the loop's own error may not say
	if h.b != nil {        // gave up with an attempt in flight (shutdown)
		h.att.Report(h.b, errGaveUp)
		h.b = nil
	}
	if errors.Is(last, relay.ErrClientGone) {
		// Counted apart (nginx's 499), so that a burst of clients
		// leaving during handshakes does not read as failing backends.
		s.metrics.handshakes.WithLabelValues(r.name, "499").Inc()
		h.tk.Release()
		h.free()
		return nil
	}
	if last != nil && prevErr != nil && !errors.Is(last, relay.ErrStopping) {
		last = prevErr
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var httpErr *upgrade.HTTPResponseError
	switch {
	case errors.As(last, &httpErr):
		httpErr.FillResponse(resp)
	case last == nil:
		textResponse(resp, fasthttp.StatusServiceUnavailable, "no backend available\n")
	case errors.Is(last, relay.ErrStopping):
		textResponse(resp, fasthttp.StatusServiceUnavailable, "proxy shutting down\n")
	default:
		textResponse(resp, fasthttp.StatusBadGateway, "backend failed the WebSocket handshake\n")
	}
	resp.SetConnectionClose()
	s.metrics.handshakes.WithLabelValues(r.name, strconv.Itoa(resp.StatusCode())).Inc()
	h.tk.Release()
	var out bytes.Buffer
	resp.WriteTo(&out)
	h.free()
	return out.Bytes()
}

// errGaveUp ends an attempt that was in flight when the loop gave up on
// the handshake: not a backend failure.
var errGaveUp = errors.New("handshake abandoned")

func textResponse(resp *fasthttp.Response, status int, body string) {
	resp.SetStatusCode(status)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.SetBodyString(body)
}

// run performs the exchange from the calling goroutine, for a client
// connection the loops cannot own or a proxy without loops.
func (h *backendHandshake) run(conn net.Conn, pre []byte) {
	var prev error
	for {
		a, ok := h.Next(prev)
		if !ok {
			resp := h.Failed(prev)
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			conn.Write(resp)
			conn.Close()
			return
		}
		up, err := upgrade.DialRequest(h.s.ctx, a.Addr, a.DialTimeout, h.req, a.Timeout)
		if err != nil {
			prev = err
			continue
		}
		h.hs = up.Handshake
		var tmp relay.Session // Switched sets Tag, Keys and First on it
		cfg := h.Switched(&tmp)
		ss := relay.NewSession(cfg)
		ss.Tag, ss.Keys, ss.First = tmp.Tag, tmp.Keys, tmp.First
		ss.Start(conn, pre, up.Conn, up.Buffered)
		return
	}
}
