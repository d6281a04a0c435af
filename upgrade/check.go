package upgrade

import (
	"encoding/base64"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Rejection is a failed client handshake: the HTTP status to answer with and
// a short reason for the body and the logs. It implements error.
//
// Check returns shared, read-only values: never modify a Rejection you did
// not create.
type Rejection struct {
	// Status is the HTTP status code: 400, 403, 405 or 426 from Check.
	Status int
	// Reason is one line of plain text for the response body.
	Reason string
}

// Error gives the status and the reason.
func (r *Rejection) Error() string {
	return "upgrade: handshake rejected with " + strconv.Itoa(r.Status) + ": " + r.Reason
}

// WriteResponse replaces ctx's response with the rejection: the status, the
// reason as a text/plain body and "Connection: close". A 405 also carries
// "Allow: GET" and a 426 "Sec-WebSocket-Version: 13" (RFC 6455 §4.4), which
// tells the client the version to retry with.
func (r *Rejection) WriteResponse(ctx *fasthttp.RequestCtx) {
	ctx.Response.Reset()
	ctx.SetStatusCode(r.Status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(r.Reason)
	ctx.Response.AppendBodyString("\n")
	ctx.SetConnectionClose()
	switch r.Status {
	case fasthttp.StatusMethodNotAllowed:
		ctx.Response.Header.Set("Allow", "GET")
	case fasthttp.StatusUpgradeRequired:
		ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
	}
}

// The rejections Check returns, one per rule.
var (
	rejectMethod     = &Rejection{fasthttp.StatusMethodNotAllowed, "a WebSocket handshake must use GET"}
	rejectProtocol   = &Rejection{fasthttp.StatusBadRequest, "a WebSocket handshake needs HTTP/1.1 or later"}
	rejectHost       = &Rejection{fasthttp.StatusBadRequest, "missing Host header"}
	rejectUpgrade    = &Rejection{fasthttp.StatusBadRequest, `the Upgrade header must include "websocket"`}
	rejectConnection = &Rejection{fasthttp.StatusBadRequest, `the Connection header must include "Upgrade"`}
	rejectVersion    = &Rejection{fasthttp.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version: this server speaks version 13"}
	rejectKey        = &Rejection{fasthttp.StatusBadRequest, "Sec-WebSocket-Key must be one base64 encoding of 16 bytes"}
	rejectOrigin     = &Rejection{fasthttp.StatusForbidden, "origin not allowed"}
)

// Info is what Check learned from an accepted handshake. The slices alias
// the request header's memory: they are valid only while the request is
// being handled (until the handler returns or the header is reset); copy
// anything kept longer.
type Info struct {
	// Key is the Sec-WebSocket-Key value, 24 base64 characters.
	Key []byte
	// Protocols is the first Sec-WebSocket-Protocol value, the client's
	// comma-separated subprotocol offer; nil if none. AppendRequest forwards
	// every such field, and ReadResponse checks against all of them.
	Protocols []byte
	// Extensions is the first Sec-WebSocket-Extensions value; nil if none.
	// As for Protocols, every field is forwarded and checked.
	Extensions []byte
	// Origin is the Origin value; nil if none.
	Origin []byte
}

// IsAttempt reports whether the request tries a WebSocket handshake: it has
// a Sec-WebSocket-Key or Sec-WebSocket-Version field, or an Upgrade field
// offering "websocket". Such a request must then pass Check; any other is
// plain HTTP. An Upgrade to another protocol alone (curl's "Upgrade: h2c")
// does not count: a server may ignore it and answer over HTTP/1.1.
//
// IsAttempt does not allocate for a parsed request.
func IsAttempt(h *fasthttp.RequestHeader) bool {
	s := fieldScanner{b: rawFields(h)}
	for name, value, ok := s.next(); ok; name, value, ok = s.next() {
		switch len(name) {
		case len("Upgrade"):
			if equalFold(name, "Upgrade") && hasToken(value, "websocket") {
				return true
			}
		case len("Sec-WebSocket-Key"):
			if equalFold(name, "Sec-WebSocket-Key") {
				return true
			}
		case len("Sec-WebSocket-Version"):
			if equalFold(name, "Sec-WebSocket-Version") {
				return true
			}
		}
	}
	return false
}

// Check validates a client's opening handshake (RFC 6455 §4.1, §4.2.1). The
// rules are tried in this order, the first failure deciding the answer:
//
//  1. the method is GET, else 405 (the Rejection adds "Allow: GET");
//  2. the protocol is HTTP/1.1 or later, else 400;
//  3. a Host header is present, else 400;
//  4. an Upgrade field lists the token "websocket", else 400;
//  5. a Connection field lists the token "upgrade" (as in
//     "keep-alive, Upgrade"), else 400;
//  6. there is exactly one Sec-WebSocket-Version and it is 13, else 426;
//  7. there is exactly one Sec-WebSocket-Key and it is the base64 (standard
//     alphabet, padded) of exactly 16 bytes, else 400;
//  8. origins allows the Origin (a nil policy allows all), else 403. Two or
//     more Origin fields are refused unless the policy allows any origin.
//
// Header names and the tokens of rules 4 and 5 are matched ASCII
// case-insensitively. Oversized headers (431) are the fasthttp server's
// ReadBufferSize's job, and unknown paths (404) the router's.
//
// Check reads the fields exactly as the client sent them (RawHeaders), so
// changes made to h after parsing are not seen. It does not allocate on any
// path for a parsed request. It must not run concurrently with other uses
// of h.
func Check(h *fasthttp.RequestHeader, origins *OriginPolicy) (Info, *Rejection) {
	if !h.IsGet() {
		return Info{}, rejectMethod
	}
	if !protoAtLeast11(h.Protocol()) {
		return Info{}, rejectProtocol
	}
	if len(h.Host()) == 0 {
		return Info{}, rejectHost
	}
	var (
		info                   Info
		upgrade, connection    bool
		version                []byte
		versions, keys, origns int
	)
	s := fieldScanner{b: rawFields(h)}
	for name, value, ok := s.next(); ok; name, value, ok = s.next() {
		switch len(name) {
		case len("Origin"):
			if equalFold(name, "Origin") {
				origns++
				info.Origin = value
			}
		case len("Upgrade"):
			if !upgrade && equalFold(name, "Upgrade") {
				upgrade = hasToken(value, "websocket")
			}
		case len("Connection"):
			if !connection && equalFold(name, "Connection") {
				connection = hasToken(value, "upgrade")
			}
		case len("Sec-WebSocket-Key"):
			if equalFold(name, "Sec-WebSocket-Key") {
				keys++
				info.Key = value
			}
		case len("Sec-WebSocket-Version"):
			if equalFold(name, "Sec-WebSocket-Version") {
				versions++
				version = value
			}
		case len("Sec-WebSocket-Protocol"):
			if info.Protocols == nil && equalFold(name, "Sec-WebSocket-Protocol") {
				info.Protocols = value
			}
		case len("Sec-WebSocket-Extensions"):
			if info.Extensions == nil && equalFold(name, "Sec-WebSocket-Extensions") {
				info.Extensions = value
			}
		}
	}
	switch {
	case !upgrade:
		return Info{}, rejectUpgrade
	case !connection:
		return Info{}, rejectConnection
	case versions != 1 || len(version) != 2 || version[0] != '1' || version[1] != '3':
		return Info{}, rejectVersion
	case keys != 1 || !validKey(info.Key):
		return Info{}, rejectKey
	case origns > 1 && !origins.allowsAnyOrigin():
		return Info{}, rejectOrigin
	case !origins.Allow(info.Origin):
		return Info{}, rejectOrigin
	}
	return info, nil
}

// validKey reports whether key is the padded standard base64 of 16 bytes.
func validKey(key []byte) bool {
	if len(key) != 24 {
		return false
	}
	for _, c := range key {
		if c == '\r' || c == '\n' { // the decoder would skip them
			return false
		}
	}
	var buf [18]byte // base64.StdEncoding.DecodedLen(24)
	n, err := base64.StdEncoding.Decode(buf[:], key)
	return err == nil && n == 16
}
