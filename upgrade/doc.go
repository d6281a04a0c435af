// Package upgrade implements both legs of the RFC 6455 opening handshake
// (§4.1, §4.2) for wsproxy.
//
// Client side: IsAttempt tells a WebSocket handshake from plain HTTP, and
// Check validates it (method, protocol version, Host, Upgrade, Connection,
// Sec-WebSocket-Version and -Key, and the Origin allow-list compiled by
// CompileOrigins), returning a *Rejection that knows its HTTP status.
//
// Backend side: Dial (or Upgrade on a connection the caller made) sends the
// handshake built by AppendRequest, reads the answer with ReadResponse and
// checks it against what the client offered. Typed errors tell the proxy
// what to do: a *DialError or *HandshakeError means try the next backend
// (Retryable), an *HTTPResponseError is the backend's own answer to pass to
// the client. Once a backend has accepted, AppendSwitchingProtocols builds
// the client's 101 and Upstream.Buffered holds the first frame bytes for the
// relay; AllowedRSV says which RSV bits the negotiated extensions permit.
//
// A typical handler:
//
//	if !upgrade.IsAttempt(&ctx.Request.Header) {
//		// plain HTTP
//	}
//	info, rej := upgrade.Check(&ctx.Request.Header, route.origins)
//	if rej != nil {
//		rej.WriteResponse(ctx)
//		return
//	}
//	up, err := upgrade.Dial(ctx, addr, dialTimeout, &upgrade.UpstreamRequest{
//		Header: &ctx.Request.Header, ClientIP: clientIP, TLS: ctx.IsTLS(),
//	}, handshakeTimeout)
//	// on a Retryable error try the next backend; on *HTTPResponseError call
//	// its WriteResponse; on success hijack, write
//	// AppendSwitchingProtocols(nil, info.Key, &up.Handshake) (copy info.Key
//	// first: it dies with the request), then relay up.Buffered and up.Conn.
//
// Check, IsAttempt, OriginPolicy.Allow and the Append functions do not
// allocate for a request fasthttp parsed. Nothing here holds global mutable
// state beyond sync.Pools of buffers.
package upgrade
