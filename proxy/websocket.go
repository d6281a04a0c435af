package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/keepalive"
	"github.com/wsproxy/wsproxy/upgrade"
)

// wsConn is what the proxy keeps about one relayed WebSocket.
type wsConn struct {
	route   *route
	backend *balancer.Backend
	client  peerAddr
	key     string
	start   time.Time
	ticket  *ticket // its admission, released when it ends

	subprotocol string
	port        int // the listening port if a loop accepted the client, else 0
}

// serveWebSocket admits a handshake fasthttp read and hands the connection
// to its backend handshake: on an event loop when there are loops, else
// from the hijacked connection's goroutine. Either way the client is
// answered only after the backend: a dead backend is a retry or a
// 502/503, never a 101 followed by a drop.
func (s *Server) serveWebSocket(ctx *fasthttp.RequestCtx, t *runtime, r *route) {
	h := s.admitWebSocket(ctx, t, r)
	if h == nil {
		return
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(hc net.Conn) {
		conn, pre := unwrapHijacked(hc)
		s.tuneClient(r, conn)
		// Return from the hijack handler at once: fasthttp's frame holds
		// its header reader (max_header_bytes) and the request context,
		// which must not live as long as the connection.
		if s.loops != nil && s.loops.Dial(conn, pre, h) {
			return
		}
		h.run(conn, pre)
	})
}

// admitWebSocket checks the client's handshake and its limits and admits
// it. It returns the backend handshake that owns the admission from here
// on, or nil when ctx holds the answer (a 4xx or 503).
func (s *Server) admitWebSocket(ctx *fasthttp.RequestCtx, t *runtime, r *route) (h *backendHandshake) {
	defer func() {
		if h == nil { // the backend handshake counts its own
			s.metrics.handshakes.WithLabelValues(r.name, strconv.Itoa(ctx.Response.StatusCode())).Inc()
		}
	}()
	s.mem.handshake()
	info, rej := upgrade.Check(&ctx.Request.Header, r.origins)
	if rej != nil {
		rej.WriteResponse(ctx)
		return nil
	}
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	ip := t.clientIP.ClientIP(&ctx.Request.Header, peer.Unmap())
	now := time.Now()
	if !t.rate.Allow(ip, now) {
		ctx.Error("too many handshakes from your address; slow down\n", fasthttp.StatusTooManyRequests)
		ctx.SetConnectionClose()
		return nil
	}
	if ok, wait := r.hsRate.Take(now); !ok {
		r.stats.handshakesLimited.Inc()
		r.stats.hsLimitedTot.Add(1)
		ctx.Error("too many new connections on this route; retry after the time in Retry-After\n", fasthttp.StatusServiceUnavailable)
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(int(wait/time.Second)))
		ctx.SetConnectionClose()
		return nil
	}
	var keyBuf [maxKeyLen]byte
	key, ok := r.requireKey(ctx, keyBuf[:0])
	if !ok {
		ctx.SetConnectionClose()
		return nil
	}
	tk, why := admit(&s.live, t, r, ip)
	switch why {
	case overPerIP:
		ctx.Error("too many connections from your address\n", fasthttp.StatusTooManyRequests)
		ctx.SetConnectionClose()
		return nil
	case overCapacity:
		ctx.Error("too many connections\n", fasthttp.StatusServiceUnavailable)
		ctx.SetConnectionClose()
		return nil
	}
	return s.newBackendHandshake(ctx, r, info.Key, key, tk)
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
