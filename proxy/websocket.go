package proxy

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/keepalive"
	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/upgrade"
)

// wsConn is what the proxy keeps about one relayed WebSocket.
type wsConn struct {
	route   *route
	backend *balancer.Backend
	client  string
	key     string
	start   time.Time
	ticket  *ticket // its admission, released when it ends

	subprotocol string
}

// serveWebSocket checks the client's handshake, completes the backend's, and
// only then answers 101 and hands both connections to the relay. A dead
// backend is therefore a retry or a 502/503, never a 101 followed by a drop.
func (s *Server) serveWebSocket(ctx *fasthttp.RequestCtx, t *runtime, r *route) {
	defer func() { s.metrics.handshakes.WithLabelValues(r.name, strconv.Itoa(ctx.Response.StatusCode())).Inc() }()
	s.mem.handshake()
	info, rej := upgrade.Check(&ctx.Request.Header, r.origins)
	if rej != nil {
		rej.WriteResponse(ctx)
		return
	}
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	ip := t.clientIP.ClientIP(&ctx.Request.Header, peer.Unmap())
	if !t.rate.Allow(ip, time.Now()) {
		ctx.Error("too many handshakes from your address; slow down\n", fasthttp.StatusTooManyRequests)
		ctx.SetConnectionClose()
		return
	}
	if ok, wait := r.hsRate.Take(time.Now()); !ok {
		r.stats.handshakesLimited.Inc()
		r.stats.hsLimitedTot.Add(1)
		ctx.Error("too many new connections on this route; retry after the time in Retry-After\n", fasthttp.StatusServiceUnavailable)
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(int(wait/time.Second)))
		ctx.SetConnectionClose()
		return
	}
	tk, why := admit(&s.live, t, r, ip)
	switch why {
	case overPerIP:
		ctx.Error("too many connections from your address\n", fasthttp.StatusTooManyRequests)
		ctx.SetConnectionClose()
		return
	case overCapacity:
		ctx.Error("too many connections\n", fasthttp.StatusServiceUnavailable)
		ctx.SetConnectionClose()
		return
	}
	defer func() { tk.Release() }() // tk is nil once the connection owns it
	clientIP, _ := netip.AddrFromSlice(ctx.RemoteIP())
	req := upgrade.UpstreamRequest{Header: &ctx.Request.Header, ClientIP: clientIP.Unmap(), TLS: ctx.IsTLS()}

	var keyBuf [maxKeyLen]byte
	key, ok := r.requireKey(ctx, keyBuf[:0])
	if !ok {
		ctx.SetConnectionClose()
		return
	}
	att := r.attempts(s.health, key, true, true)
	for b := att.Next(); b != nil; b = att.Next() {
		up, err := upgrade.Dial(s.ctx, b.Addr, r.cfg.DialTimeout, &req, r.cfg.UpstreamHandshakeTimeout)
		att.Report(b, err) // then Next is nil unless another attempt may follow
		if err == nil {
			s.switchProtocols(ctx, r, b, up, info.Key, key, tk)
			tk = nil
			return
		}
		var httpErr *upgrade.HTTPResponseError
		if errors.As(err, &httpErr) {
			// The backend's own answer (e.g. 401): the client gets it as is.
			httpErr.WriteResponse(ctx)
			ctx.SetConnectionClose()
			return
		}
		s.log.Warn("backend handshake failed", "route", r.name, "backend", b.Addr, "attempt", att.Tries(), "err", err)
	}
	lastErr := att.Err()
	if lastErr == nil {
		ctx.Error("no backend available\n", fasthttp.StatusServiceUnavailable)
	} else {
		ctx.Error("backend failed the WebSocket handshake\n", fasthttp.StatusBadGateway)
	}
	ctx.SetConnectionClose() // after Error, whose Response.Reset would drop it
}

// switchProtocols answers 101 with what the backend chose, hijacks the client
// connection and runs the relay on it.
func (s *Server) switchProtocols(ctx *fasthttp.RequestCtx, r *route, b *balancer.Backend, up *upgrade.Upstream, wsKey, hashKey []byte, tk *ticket) {
	resp := upgrade.AppendSwitchingProtocols(make([]byte, 0, 256), wsKey, &up.Handshake)
	ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols) // for the handshake metric; the 101 itself is written below
	s.metrics.wsTotal.WithLabelValues(r.name, b.Addr).Inc()
	c := &wsConn{route: r, backend: b, client: ctx.RemoteAddr().String(), key: string(hashKey), start: time.Now(), ticket: tk, subprotocol: up.Handshake.Protocol}
	cfg := r.relayConfig(up.Handshake.RSV)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(hc net.Conn) {
		conn, pre := unwrapHijacked(hc)
		s.tuneClient(r, conn)
		s.tuneTCP(r, up.Conn)
		ss := relay.NewSession(cfg)
		ss.Tag = c
		ss.Keys = r.keyLimits.Acquire(c.key)
		// The relay sends the 101 itself, after the session is registered:
		// a client that has its 101 is a connection reloads and shutdown
		// can see, and a client gone by now ends like any other.
		ss.First = resp
		// Return from the hijack handler at once: fasthttp's frame holds its
		// header reader (max_header_bytes) and the request context, which
		// must not live as long as the connection.
		ss.Start(conn, pre, up.Conn, up.Buffered)
	})
}

// unwrapHijacked takes the raw connection under fasthttp's hijacked one,
// with any bytes its reader had already buffered past the request (a client
// that sent frames without waiting for the 101). The raw connection lets the
// relay wait for data without holding fasthttp's read buffer, which fasthttp
// recycles when the hijack handler returns.
func unwrapHijacked(hc net.Conn) (net.Conn, []byte) {
	u, ok := hc.(interface{ UnsafeConn() net.Conn })
	if !ok {
		return hc, nil
	}
	hj, ok := asHijackable(u.UnsafeConn())
	if !ok {
		return hc, nil
	}
	// With a deadline in the past, reads return only what is buffered.
	hj.Conn.SetReadDeadline(time.Unix(1, 0))
	var pre []byte
	var buf [512]byte
	for {
		n, err := hc.Read(buf[:])
		pre = append(pre, buf[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	hj.Conn.SetReadDeadline(time.Time{})
	return hj.take(), pre
}

// tuneTCP applies the route's TCP keepalive and user timeout to a socket.
func (s *Server) tuneTCP(r *route, c net.Conn) {
	sc, ok := netConn(c).(syscall.Conn)
	if !ok {
		return
	}
	if err := keepalive.Apply(sc, r.tcp); err != nil {
		s.log.Debug("TCP keepalive not applied", "route", r.name, "err", err)
	}
}
