package echoserver

import (
	"bytes"
	"errors"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// forwardedHeaders are the request headers echoed back on plain HTTP
// responses as X-Echo-<Name>.
func forwardedHeaders() [5]string {
	return [...]string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-IP"}
}

// handle is the fasthttp handler: WebSocket upgrades on any path, plain
// HTTP otherwise.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	if websocket.FastHTTPIsWebSocketUpgrade(ctx) {
		s.upgrade(ctx)
		return
	}
	s.serveHTTP(ctx)
}

// serveHTTP answers a plain HTTP request:
//
//	GET /       Page as text/html, or 404 if there is none
//	GET /id     the server ID
//	POST /echo  the request body, with the request's Content-Type
//	otherwise   200 "ID METHOD REQUEST-URI" as text/plain
//
// Every response carries X-Backend-Id and, for each of X-Forwarded-For,
// X-Forwarded-Proto, X-Forwarded-Host, Forwarded and X-Real-IP the request
// had, X-Echo-<Name> with its values joined by ", ".
func (s *Server) serveHTTP(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("X-Backend-Id", s.id)
	for _, name := range forwardedHeaders() {
		if vs := ctx.Request.Header.PeekAll(name); len(vs) > 0 {
			h.SetBytesV("X-Echo-"+name, bytes.Join(vs, []byte(", ")))
		}
	}

	path := string(ctx.Path())
	get := ctx.IsGet() || ctx.IsHead()
	switch {
	case path == "/" && get:
		if s.page == nil {
			httpError(ctx, "404 page not found\n", fasthttp.StatusNotFound)
			return
		}
		h.SetContentType("text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		ctx.SetBody(s.page)
	case path == "/id" && get:
		h.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString(s.id)
	case path == "/echo" && ctx.IsPost():
		if ct := ctx.Request.Header.ContentType(); len(ct) > 0 {
			h.SetContentTypeBytes(ct)
		}
		ctx.SetBody(ctx.PostBody())
	default:
		h.SetContentType("text/plain; charset=utf-8")
		b := make([]byte, 0, len(s.id)+len(ctx.Method())+len(ctx.Request.Header.RequestURI())+2)
		b = append(b, s.id...)
		b = append(b, ' ')
		b = append(b, ctx.Method()...)
		b = append(b, ' ')
		b = append(b, ctx.Request.Header.RequestURI()...)
		ctx.SetBody(b)
	}
}

// httpError is ctx.Error without its Response.Reset, which would drop the
// server's NoDefaultDate setting.
func httpError(ctx *fasthttp.RequestCtx, msg string, status int) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(msg)
}

// requestError is the fasthttp ErrorHandler for requests it cannot parse.
func requestError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	if errors.As(err, &small) {
		httpError(ctx, "request header too large", fasthttp.StatusRequestHeaderFieldsTooLarge)
		return
	}
	httpError(ctx, "bad request", fasthttp.StatusBadRequest)
}
