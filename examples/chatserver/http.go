package chatserver

import (
	"errors"

	"github.com/valyala/fasthttp"
)

// handle is the fasthttp handler:
//
//	/chat         the WebSocket endpoint (426 without an upgrade)
//	GET /         the chat page (see Page)
//	GET /healthz  200 "ok", for health checks
//	otherwise     404
//
// Every response carries X-Backend-Id with the server's ID.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("X-Backend-Id", s.id)
	path := string(ctx.Path())
	if path == "/chat" {
		s.join(ctx)
		return
	}
	get := ctx.IsGet() || ctx.IsHead()
	switch {
	case path == "/" && get:
		h := &ctx.Response.Header
		h.SetContentType("text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		// The page loads nothing else and runs only its own script.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		ctx.SetBodyString(chatPage)
	case path == "/healthz" && get:
		ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ok\n")
	default:
		httpError(ctx, "404 page not found\n", fasthttp.StatusNotFound)
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
