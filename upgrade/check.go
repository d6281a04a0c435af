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
	rejectHostSyntax = &Rejection{fasthttp.StatusBadRequest, "malformed Host header"}
	rejectBody       = &Rejection{fasthttp.StatusBadRequest, "a WebSocket handshake carries no body"}
	rejectConnList   = &Rejection{fasthttp.StatusBadRequest, "too many Connection options"}
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
//  3. a Host header is present and is a host with an optional port
//     (RFC 3986 §3.2.2), else 400;
//  4. an Upgrade field lists the token "websocket", else 400;
//  5. a Connection field lists the token "upgrade" (as in
//     "keep-alive, Upgrade"), else 400, and the Connection fields list at
//     most MaxConnectionOptions names, else 400: each names a field to
//     drop, and a proxy checks every field against them;
//  6. no body is announced (Transfer-Encoding, or a Content-Length other
//     than 0), else 400: the bytes after the head belong to the
//     WebSocket, and a body there would be read as frames;
//  7. there is exactly one Sec-WebSocket-Version and it is 13, else 426;
//  8. there is exactly one Sec-WebSocket-Key and it is the base64 (standard
//     alphabet, padded) of exactly 16 bytes, else 400;
//  9. origins allows the Origin (a nil policy allows all), else 403. Two or
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
	if !ValidHost(h.Host()) {
		return Info{}, rejectHostSyntax
	}
	var (
		info                   Info
		upgrade, connection    bool
		body                   bool
		version                []byte
		versions, keys, origns int
		options                int
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
			if equalFold(name, "Connection") {
				connection = connection || hasToken(value, "upgrade")
				options += countElems(value)
			}
		case len("Content-Length"):
			if equalFold(name, "Content-Length") && !(len(value) == 1 && value[0] == '0') {
				body = true
			}
		case len("Sec-WebSocket-Key"): // and Transfer-Encoding
			if equalFold(name, "Sec-WebSocket-Key") {
				keys++
				info.Key = value
			} else if equalFold(name, "Transfer-Encoding") {
				body = true
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
	case options > MaxConnectionOptions:
		return Info{}, rejectConnList
	case body:
		return Info{}, rejectBody
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

// MaxConnectionOptions is how many names a handshake's Connection fields
// may list in all. Browsers send one ("Upgrade") or two.
const MaxConnectionOptions = 32

// countElems counts the non-empty elements of a comma-separated list.
func countElems(v []byte) int {
	n := 0
	for len(v) > 0 {
		var e []byte
		e, v = nextElem(v)
		if len(e) > 0 {
			n++
		}
	}
	return n
}

// ValidHost reports whether a Host value is uri-host [ ":" port ] (RFC
// 9112 §3.2, RFC 3986 §3.2.2): a registered name of unreserved,
// percent-encoded and sub-delimiter characters, or an IP literal in
// brackets, then optionally a colon and digits. Anything else (spaces,
// "@", "/", a second colon outside brackets) could make a backend or a
// log see another host than routing did.
func ValidHost(h []byte) bool {
	i := 0
	if len(h) > 0 && h[0] == '[' {
		end := -1
		for j := 1; j < len(h); j++ {
			c := h[j]
			if c == ']' {
				end = j
				break
			}
			if !(isHexDigit(c) || c == ':' || c == '.') {
				return false
			}
		}
		if end < 2 {
			return false
		}
		i = end + 1
	} else {
		for ; i < len(h) && h[i] != ':'; i++ {
			if !regNameByte(h[i]) {
				return false
			}
		}
		if i == 0 {
			return false
		}
	}
	if i == len(h) {
		return true
	}
	if h[i] != ':' {
		return false
	}
	for _, c := range h[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(h)-i-1 <= 5
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// regNameByte reports whether c may appear in a reg-name: unreserved,
// "%" of a percent-encoding, or a sub-delimiter.
func regNameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '%', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=':
		return true
	}
	return false
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
