package proxy

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/balancer"
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
func (s *Server) serveHTTP(ctx *fasthttp.RequestCtx, r *route) {
	closeAfter := ctx.Request.Header.ConnectionClose()
	prepareRequest(ctx)
	var keyBuf [maxKeyLen]byte
	key, ok := r.requireKey(ctx, keyBuf[:0])
	if !ok {
		return
	}
	set := r.set.Load()
	var tried balancer.Tried
	var lastErr error
	for attempt := 0; attempt <= r.cfg.LBRetries; attempt++ {
		b := r.policy.Pick(set, key, tried)
		if b == nil {
			break
		}
		// Plain requests are not long-lived: the backend's live count is
		// for WebSocket connections.
		b.Release()
		err := s.hostClient(b.Addr, r).Do(&ctx.Request, &ctx.Response)
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
		lastErr = err
		if isDialError(err) && r.passive.MaxFails > 0 {
			s.health.ReportFailure(b, set.Backends(), r.passive)
		}
		s.log.Warn("backend request failed", "route", r.name, "backend", b.Addr, "attempt", attempt+1, "err", err)
		// Only a request that never reached the backend is safe to repeat.
		if !isDialError(err) || ctx.Request.IsBodyStream() || !tried.Add(b) {
			break
		}
	}
	ctx.Response.Reset()
	if lastErr == nil {
		ctx.Error("no backend available\n", fasthttp.StatusServiceUnavailable)
	} else {
		ctx.Error("backend request failed\n", fasthttp.StatusBadGateway)
	}
	s.logHTTP(ctx, r, "")
}

// logHTTP counts and logs a plain request. Bytes are the response's
// Content-Length (-1 for a streamed body).
func (s *Server) logHTTP(ctx *fasthttp.RequestCtx, r *route, backend string) {
	status := ctx.Response.StatusCode()
	s.metrics.httpRequests.WithLabelValues(r.name, strconv.Itoa(status)).Inc()
	t := s.table.Load()
	if t.access.on() {
		t.access.http(ctx.RemoteAddr().String(), r.name, backend, string(ctx.Method()), string(ctx.RequestURI()),
			status, ctx.Response.Header.ContentLength(), time.Since(ctx.Time()))
	}
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, fasthttp.ErrDialTimeout)
}

// prepareRequest strips hop-by-hop headers, including those the Connection
// header names, and sets X-Forwarded-For/-Proto/-Host.
func prepareRequest(ctx *fasthttp.RequestCtx) {
	// The backend leg is plain HTTP whatever the client's was; the client's
	// scheme travels in X-Forwarded-Proto. (fasthttp's client refuses a
	// request URI of another scheme.)
	ctx.Request.URI().SetScheme("http")
	h := &ctx.Request.Header
	for _, name := range bytes.Split(h.Peek("Connection"), []byte{','}) {
		if name = bytes.TrimSpace(name); len(name) > 0 {
			h.DelBytes(name)
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
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
}

// hostClient returns the pooled client for a backend address, made on first
// use and kept across reloads so its idle connections survive them.
func (s *Server) hostClient(addr string, r *route) *fasthttp.HostClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := s.clients[addr]
	if hc == nil {
		dialTimeout := r.cfg.DialTimeout
		hc = &fasthttp.HostClient{
			Addr:                          addr,
			Dial:                          func(addr string) (net.Conn, error) { return dialTCP(addr, dialTimeout) },
			StreamResponseBody:            true,
			MaxIdleConnDuration:           60 * time.Second,
			MaxIdemponentCallAttempts:     1,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			NoDefaultUserAgentHeader:      true,
			MaxResponseBodySize:           0,
		}
		s.clients[addr] = hc
	}
	return hc
}

func dialTCP(addr string, timeout time.Duration) (net.Conn, error) {
	return (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
}
