package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/upgrade"
)

// hopHeaders are meaningful for one connection only (RFC 9110 §7.6.1) and
// never forwarded. fasthttp writes Connection and Transfer-Encoding itself.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Upgrade",
}

// serveHTTP reverse-proxies a plain HTTP request: the request is rewritten
// in place and passed to a pooled client for the chosen backend, and the
// response body streams back without being buffered whole.
func (s *Server) serveHTTP(ctx *fasthttp.RequestCtx, t *runtime, r *route) {
	closeAfter := ctx.Request.Header.ConnectionClose()
	body := s.watchBody(ctx)
	if body != nil {
		defer body.unwatch()
	}
	if !prepareRequest(ctx, t.clientIP.Trusted(remoteAddr(ctx))) {
		ctx.Response.Reset()
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetBodyString("too many Connection options\n")
		ctx.SetConnectionClose()
		closeIfBodyUnread(ctx)
		return
	}
	var keyBuf [maxKeyLen]byte
	key, ok := r.requireKey(ctx, keyBuf[:0])
	if !ok {
		closeIfBodyUnread(ctx)
		return
	}
	// Only a request that never reached the backend is safe to repeat,
	// and a streamed body cannot be sent twice.
	att := r.attempts(s.health, key, !ctx.Request.IsBodyStream(), false)
	for b := att.Next(); b != nil; b = att.Next() {
		err := t.clients.hostClient(b.Addr, r).Do(&ctx.Request, &ctx.Response)
		att.Report(b, err) // then Next is nil unless another attempt may follow
		if err == nil {
			for _, h := range hopHeaders {
				ctx.Response.Header.Del(h)
			}
			if closeAfter {
				ctx.SetConnectionClose()
			}
			s.logHTTP(ctx, r, b.Addr)
			return
		}
		s.log.Warn("backend request failed", "route", r.name, "backend", b.Addr, "attempt", att.Tries(), "err", err)
	}
	lastErr := att.Err()
	switch {
	case body != nil && body.bodyErr != nil:
		if isTimeout(body.bodyErr) {
			ctx.Error("request body timed out\n", fasthttp.StatusRequestTimeout)
		} else {
			ctx.Error("request body could not be read\n", fasthttp.StatusBadRequest)
		}
	case lastErr == nil:
		ctx.Error("no backend available\n", fasthttp.StatusServiceUnavailable)
	case errors.Is(lastErr, fasthttp.ErrNoFreeConns):
		ctx.Error("backend busy: no connection to it freed up in time\n", fasthttp.StatusServiceUnavailable)
	case !backendFailed(lastErr) && isTimeout(lastErr):
		ctx.Error("backend did not answer in time\n", fasthttp.StatusGatewayTimeout)
	default:
		ctx.Error("backend request failed\n", fasthttp.StatusBadGateway)
	}
	closeIfBodyUnread(ctx)
	s.logHTTP(ctx, r, "")
}

// headerReceived moves a request with a body from handshake_timeout to
// request_body_timeout once its header is in: fasthttp reads up to 8 KiB
// of the body before the handler runs, under this deadline, and watchBody
// takes over from there.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if h.ContentLength() == 0 {
		return fasthttp.RequestConfig{}
	}
	d := s.rt.Load().cfg.Global.RequestBodyTimeout
	if d <= 0 {
		d = noBodyTimeout
	}
	return fasthttp.RequestConfig{ReadTimeout: d}
}

// noBodyTimeout stands for "request_body_timeout off" where fasthttp only
// takes a positive duration.
const noBodyTimeout = 100 * 365 * 24 * time.Hour

// watchBody puts a request whose body is still to be read under
// request_body_timeout, renewed by every read, instead of fasthttp's
// ReadTimeout (handshake_timeout), which counts from the request's first
// byte. It returns the connection to unwatch when the handler is done, or
// nil for a request without a body.
func (s *Server) watchBody(ctx *fasthttp.RequestCtx) *hijackableConn {
	if ctx.Request.Header.ContentLength() == 0 {
		return nil
	}
	c, ok := asHijackable(ctx.Conn())
	if !ok {
		return nil
	}
	c.bodyIdle = s.rt.Load().cfg.Global.RequestBodyTimeout
	if c.bodyIdle > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.bodyIdle))
	} else {
		c.bodyIdle = -1 // no limit, but bodyErr is still recorded
		c.Conn.SetReadDeadline(time.Time{})
	}
	return c
}

func (c *hijackableConn) unwatch() { c.bodyIdle, c.bodyErr = 0, nil }

// closeIfBodyUnread closes the connection after an answer of the proxy's
// own to a request with a body: the body may not have been read to its
// end, and its unread bytes must never be parsed as a next request
// (request smuggling). A backend's answer needs no such care: the request
// was sent whole before it was read.
func closeIfBodyUnread(ctx *fasthttp.RequestCtx) {
	if bodyMayRemain(ctx) {
		ctx.SetConnectionClose()
	}
}

// bodyMayRemain reports whether the request has a body (a Content-Length
// above 0, or chunked).
func bodyMayRemain(ctx *fasthttp.RequestCtx) bool {
	return ctx.Request.Header.ContentLength() != 0
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// logHTTP counts and logs a plain request. Bytes are the response's
// Content-Length (-1 for a streamed body).
func (s *Server) logHTTP(ctx *fasthttp.RequestCtx, r *route, backend string) {
	status := ctx.Response.StatusCode()
	s.metrics.httpRequests.WithLabelValues(r.name, strconv.Itoa(status)).Inc()
	t := s.rt.Load()
	if t.access.on() {
		t.access.http(ctx.RemoteAddr().String(), r.name, backend, string(ctx.Method()), string(ctx.RequestURI()),
			status, ctx.Response.Header.ContentLength(), time.Since(ctx.Time()))
	}
}

// prepareRequest strips hop-by-hop headers, including those the Connection
// header names, and sets X-Forwarded-For/-Proto/-Host. A client that is not
// a trusted proxy loses its own X-Forwarded-For, Forwarded and X-Real-IP,
// as on the WebSocket path (upgrade.UpstreamRequest.TrustForwarded). It
// reports false, having changed nothing, for a request whose Connection
// fields name more than upgrade.MaxConnectionOptions fields: each name
// costs a pass over the header.
func prepareRequest(ctx *fasthttp.RequestCtx, trusted bool) bool {
	// The backend leg is plain HTTP whatever the client's was; the client's
	// scheme travels in X-Forwarded-Proto. (fasthttp's client refuses a
	// request URI of another scheme.)
	ctx.Request.URI().SetScheme("http")
	h := &ctx.Request.Header
	conn := h.Peek("Connection")
	if bytes.Count(conn, []byte{','}) >= upgrade.MaxConnectionOptions {
		return false
	}
	for _, name := range bytes.Split(conn, []byte{','}) {
		if name = bytes.TrimSpace(name); len(name) > 0 {
			h.DelBytes(name)
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	if !trusted {
		h.Del("X-Forwarded-For")
		h.Del("Forwarded")
		h.Del("X-Real-IP")
	}
	ip := ctx.RemoteIP().String()
	if prior := h.Peek("X-Forwarded-For"); len(prior) > 0 {
		h.Set("X-Forwarded-For", string(prior)+", "+ip)
	} else {
		h.Set("X-Forwarded-For", ip)
	}
	proto := "http"
	if ctx.IsTLS() {
		proto = "https"
	}
	h.Set("X-Forwarded-Proto", proto)
	h.SetBytesV("X-Forwarded-Host", ctx.Host())
	return true
}

// remoteAddr is the client's address, IPv4 unmapped.
func remoteAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}

// idleConn renews a deadline before each read and write to a backend.
// fasthttp clears its own deadlines (none are configured) before it
// writes a request and before it reads a response, so these are the ones
// in force.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}

func dialTCP(addr string, timeout time.Duration) (net.Conn, error) {
	return (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
}
