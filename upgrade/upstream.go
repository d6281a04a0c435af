package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// acceptGUID is the fixed string RFC 6455 §1.3 appends to the key.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AppendAcceptKey appends the Sec-WebSocket-Accept value for a
// Sec-WebSocket-Key, base64(SHA-1(key + GUID)), 28 bytes, to dst and returns
// the extended slice. It does not allocate when dst has room and key is at
// most 28 bytes long (a valid key is 24).
func AppendAcceptKey(dst, key []byte) []byte {
	var sum [sha1.Size]byte
	var buf [64]byte
	if len(key) <= len(buf)-len(acceptGUID) {
		n := copy(buf[:], key)
		n += copy(buf[n:], acceptGUID)
		sum = sha1.Sum(buf[:n])
	} else {
		h := sha1.New()
		h.Write(key)
		io.WriteString(h, acceptGUID)
		h.Sum(sum[:0])
	}
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// AcceptKey returns the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
func AcceptKey(key []byte) string {
	var buf [28]byte
	return string(AppendAcceptKey(buf[:0], key))
}

// UpstreamRequest describes the handshake request the proxy sends to a
// backend on behalf of a client.
type UpstreamRequest struct {
	// Header is the client's request header, which passed Check. Required.
	// Its fields are forwarded as the client sent them (RawHeaders): changes
	// made to it after parsing are not seen.
	Header *fasthttp.RequestHeader
	// ClientIP is the client's address, appended to X-Forwarded-For. From a
	// fasthttp.RequestCtx: netip.AddrFromSlice(ctx.RemoteIP()) then Unmap.
	// If it is the zero Addr, X-Forwarded-For carries only what the client
	// sent, if anything.
	ClientIP netip.Addr
	// TLS reports whether the client connection was TLS; it decides
	// X-Forwarded-Proto (https or http). Default false.
	TLS bool
	// Host, if not empty, replaces the Host the client sent. Default: the
	// client's Host is kept (X-Forwarded-Host always carries it).
	Host string
	// TrustForwarded reports whether the client is a proxy we trust
	// (trusted_proxies): its X-Forwarded-For is kept, with ClientIP
	// appended, and its Forwarded and X-Real-IP pass. Default false: those
	// three are dropped and X-Forwarded-For carries ClientIP alone, or a
	// client could tell the backend any address it liked.
	TrustForwarded bool
}

// AppendRequest appends the backend handshake request for r to dst and
// returns the extended slice:
//
//	GET <the client's request-target> HTTP/1.1
//	Host: <r.Host, or the client's Host>
//	<every client field except the ones below, as sent>
//	Upgrade: websocket
//	Connection: Upgrade
//	X-Forwarded-For: <if r.TrustForwarded, the client's X-Forwarded-For and ", ">
//	                 <r.ClientIP>
//	X-Forwarded-Proto: <https if r.TLS, else http>
//	X-Forwarded-Host: <the client's Host>
//
// Left out are the hop-by-hop fields (Connection, Keep-Alive,
// Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
// Transfer-Encoding, Upgrade), every field the client's Connection header
// names (except Sec-WebSocket-* fields, which the handshake needs), the
// client's Host and X-Forwarded-* (replaced as above), its Forwarded and
// X-Real-IP unless r.TrustForwarded, and Content-Length (no body is
// forwarded). Everything else is kept: Sec-WebSocket-Key,
// -Version, -Protocol and -Extensions, Origin, Cookie, Authorization and
// custom fields. A request-target in absolute form is sent in origin form.
// Folded values are unfolded.
//
// It allocates only when dst is too small (and, for a Header built in code
// rather than parsed, once to serialise it). It must not run concurrently
// with other uses of r.Header.
func AppendRequest(dst []byte, r *UpstreamRequest) []byte {
	h := r.Header
	raw := rawFields(h)

	var conns byteLists
	xff := false
	s := fieldScanner{b: raw}
	for name, value, ok := s.next(); ok; name, value, ok = s.next() {
		if equalFold(name, "Connection") {
			conns.addList(value)
		} else if r.TrustForwarded && equalFold(name, "X-Forwarded-For") && len(value) > 0 {
			xff = true
		}
	}

	dst = append(dst, "GET "...)
	dst = appendOriginForm(dst, h.RequestURI())
	dst = append(dst, " HTTP/1.1\r\n"...)
	if r.Host != "" {
		dst = appendFieldString(dst, "Host", r.Host)
	} else {
		dst = appendField(dst, []byte("Host"), h.Host())
	}

	s = fieldScanner{b: raw}
	for name, value, ok := s.next(); ok; name, value, ok = s.next() {
		if !forwardRequestField(name, &conns, r.TrustForwarded) {
			continue
		}
		dst = appendField(dst, name, value)
	}

	dst = append(dst, "Upgrade: websocket\r\nConnection: Upgrade\r\n"...)
	if xff || r.ClientIP.IsValid() {
		dst = append(dst, "X-Forwarded-For: "...)
		first := true
		s = fieldScanner{b: raw}
		for name, value, ok := s.next(); ok && xff; name, value, ok = s.next() {
			if len(value) == 0 || !equalFold(name, "X-Forwarded-For") {
				continue
			}
			if !first {
				dst = append(dst, ", "...)
			}
			first = false
			dst = appendValue(dst, value)
			dst = dst[:len(dst)-2] // drop the CR LF appendValue ends with
		}
		if r.ClientIP.IsValid() {
			if !first {
				dst = append(dst, ", "...)
			}
			dst = r.ClientIP.WithZone("").AppendTo(dst)
		}
		dst = append(dst, '\r', '\n')
	}
	if r.TLS {
		dst = append(dst, "X-Forwarded-Proto: https\r\n"...)
	} else {
		dst = append(dst, "X-Forwarded-Proto: http\r\n"...)
	}
	if host := h.Host(); len(host) > 0 {
		dst = appendField(dst, []byte("X-Forwarded-Host"), host)
	}
	return append(dst, '\r', '\n')
}

// forwardRequestField reports whether a client field goes to the backend;
// trust is UpstreamRequest.TrustForwarded.
func forwardRequestField(name []byte, conns *byteLists, trust bool) bool {
	if !isToken(name) || isHopByHop(name) {
		return false
	}
	switch len(name) {
	case len("Forwarded"): // and X-Real-IP
		if !trust && (equalFold(name, "Forwarded") || equalFold(name, "X-Real-IP")) {
			return false
		}
	case len("Host"):
		if equalFold(name, "Host") {
			return false
		}
	case len("Content-Length"):
		if equalFold(name, "Content-Length") {
			return false
		}
	case len("X-Forwarded-For"):
		if equalFold(name, "X-Forwarded-For") {
			return false
		}
	case len("X-Forwarded-Proto"):
		if equalFold(name, "X-Forwarded-Proto") {
			return false
		}
	case len("X-Forwarded-Host"):
		if equalFold(name, "X-Forwarded-Host") {
			return false
		}
	}
	return isWebSocketField(name) || !conns.has(name)
}

// appendOriginForm appends the request-target uri in origin form: an
// absolute-form target ("http://host/path?q") loses its scheme and
// authority ("/path?q"); any other is appended unchanged.
func appendOriginForm(dst, uri []byte) []byte {
	if len(uri) == 0 {
		return append(dst, '/')
	}
	if uri[0] == '/' {
		return append(dst, uri...)
	}
	i := bytes.Index(uri, []byte("://"))
	if i < 0 {
		return append(dst, uri...)
	}
	rest := uri[i+3:]
	j := bytes.IndexAny(rest, "/?#")
	switch {
	case j < 0 || rest[j] == '#':
		return append(dst, '/')
	case rest[j] == '?':
		dst = append(dst, '/')
	}
	return append(dst, rest[j:]...)
}

// Handshake is the backend's side of a completed handshake: what the proxy
// needs to answer the client with its own 101. All fields are copies, safe to
// keep.
type Handshake struct {
	// Protocol is the subprotocol the backend chose; empty if none.
	Protocol string
	// Extensions is the backend's Sec-WebSocket-Extensions value, with
	// several fields joined by ", "; empty if none. It is passed to the
	// client unchanged, parameters included.
	Extensions string
	// ExtensionNames are the names of the negotiated extensions, in order,
	// such as "permessage-deflate".
	ExtensionNames []string
	// RSV is AllowedRSV(Extensions): the RSV bits frames may carry.
	RSV byte
	// Header holds the backend's other end-to-end fields of its 101 in
	// order (such as Set-Cookie), without the hop-by-hop ones, the fields
	// its Connection header names, Content-Length, Transfer-Encoding and
	// Sec-WebSocket-Accept, -Protocol and -Extensions.
	Header []Field

	// accept is the Sec-WebSocket-Accept checked for acceptKey (the key
	// the client sent and the backend was asked with): the client's 101
	// carries the same value, and AppendSwitchingProtocols reuses it
	// instead of hashing the key a second time.
	acceptKey [24]byte
	accept    [28]byte
}

// maxInterim bounds the 1xx responses (other than 101) skipped before the
// real one.
const maxInterim = 4

// ReadResponse reads the backend's response to a handshake request and
// checks it. sent is that request's head as it was written to the backend
// (AppendRequest's bytes): the 101 answers what the backend was asked,
// and the proxy forwards every Sec-WebSocket-* field the client sent.
//
// The response head must fit in br's buffer; a longer one fails. A 101 must
// be HTTP/1.1 or later, list "websocket" in Upgrade and "upgrade" in
// Connection, carry exactly one Sec-WebSocket-Accept equal to
// AppendAcceptKey of the client's key, at most one Sec-WebSocket-Protocol
// naming a subprotocol the client offered, and only extensions the client
// offered, each at most once. Interim 1xx responses are skipped. On success
// ReadResponse returns the Handshake and br holds whatever the backend sent
// after the head: WebSocket frames for the relay.
//
// Any other status returns an *HTTPResponseError carrying the response,
// with a body of at most MaxErrorBodySize. Everything else (I/O errors,
// timeouts, malformed or truncated responses, failed checks) returns a
// *HandshakeError.
func ReadResponse(br *bufio.Reader, sent []byte) (Handshake, error) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	rh := &resp.Header
	rh.SetNoDefaultContentType(true)
	for i := 0; ; i++ {
		if err := rh.Read(br); err != nil {
			return Handshake{}, readError(err)
		}
		code := rh.StatusCode()
		if code == fasthttp.StatusSwitchingProtocols || code < 100 || code > 199 {
			break
		}
		if i == maxInterim {
			return Handshake{}, &HandshakeError{Reason: "too many interim 1xx responses"}
		}
	}
	if rh.StatusCode() != fasthttp.StatusSwitchingProtocols {
		return Handshake{}, readHTTPResponse(br, resp)
	}
	var hs Handshake
	if err := checkSwitch(rh, sent, &hs); err != nil {
		return Handshake{}, err
	}
	buildHandshake(rh, &hs)
	return hs, nil
}

// ParseResponse judges a backend's answer from the bytes received so far,
// for a caller that reads without blocking: eof says the backend has
// closed (or b is all that will be looked at). It returns 0 and no error
// while the answer is incomplete; otherwise what ReadResponse would, with
// head, on success, the length of the response head in b (the bytes after
// it are WebSocket frames).
//
// A non-101 answer is judged once its head and its body, by Content-Length
// or chunked framing, are in; one whose body runs to the end of the
// connection is judged at eof.
func ParseResponse(b []byte, eof bool, sent []byte) (head int, hs Handshake, err error) {
	if !eof && len(b) < ReadBufferSize && !hasHeadEnd(b) {
		return 0, Handshake{}, nil
	}
	sw := switchPool.Get().(*switchHead)
	n := sw.parse(b)
	plain := n > 0 && n <= ReadBufferSize
	if plain {
		err = checkSwitch(sw, sent, &hs)
		if err == nil {
			buildHandshake(sw, &hs)
		}
	}
	sw.reset()
	switchPool.Put(sw)
	switch {
	case err != nil:
		return 0, Handshake{}, err
	case plain:
		return n, hs, nil
	}
	p := parsePool.Get().(*parser)
	defer func() {
		p.rd.Reset(nil)
		p.br.Reset(&p.rd)
		parsePool.Put(p)
	}()
	p.rd.Reset(b)
	p.br.Reset(&p.rd)
	hs, err = ReadResponse(p.br, sent)
	if err != nil {
		var he *HandshakeError
		if !eof && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &he) && he.inBody) {
			return 0, Handshake{}, nil // an interim head or a body not all in yet
		}
		var re *HTTPResponseError
		if !eof && errors.As(err, &re) && re.toClose && !re.Truncated {
			return 0, Handshake{}, nil // its body ends when the backend closes
		}
		return 0, Handshake{}, err
	}
	return len(b) - p.br.Buffered() - p.rd.Len(), hs, nil
}

// hasHeadEnd reports whether b holds the blank line that ends a head.
func hasHeadEnd(b []byte) bool {
	return bytes.Contains(b, []byte("\r\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// parser reads what switchHead does not take, with fasthttp.
type parser struct {
	rd bytes.Reader
	br *bufio.Reader
}

// switchPool holds switchHeads: one is too large for the stack once
// checkSwitch reads it through an interface.
var switchPool = sync.Pool{New: func() any { return new(switchHead) }}

var parsePool = sync.Pool{New: func() any {
	p := &parser{}
	p.br = bufio.NewReaderSize(&p.rd, ReadBufferSize)
	return p
}}

func readError(err error) *HandshakeError {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, io.EOF):
		return &HandshakeError{Reason: "connection closed before a response", Err: err}
	case errors.As(err, &small):
		return &HandshakeError{Reason: "response head larger than the read buffer", Err: err}
	case errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded):
		return &HandshakeError{Reason: "no complete response in time", Err: err}
	}
	return &HandshakeError{Reason: "malformed response", Err: err}
}

// readHTTPResponse reads the body of a non-101 response and returns it as an
// *HTTPResponseError, or a *HandshakeError if the body is broken.
func readHTTPResponse(br *bufio.Reader, resp *fasthttp.Response) error {
	rh := &resp.Header
	e := &HTTPResponseError{StatusCode: rh.StatusCode()}
	var conns byteLists
	for _, v := range rh.PeekAll(fasthttp.HeaderConnection) {
		conns.addList(v)
	}
	for name, value := range rh.All() {
		if isHopByHop(name) || conns.has(name) ||
			equalFold(name, fasthttp.HeaderContentLength) {
			continue
		}
		e.Header = append(e.Header, Field{Name: string(name), Value: string(value)})
	}
	if rh.StatusCode() == fasthttp.StatusNoContent || rh.StatusCode() == fasthttp.StatusNotModified {
		return e
	}
	e.toClose = rh.ContentLength() == -2
	err := resp.ReadBody(br, MaxErrorBodySize)
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e.Truncated = true
	case err != nil:
		return &HandshakeError{
			Reason: fmt.Sprintf("reading the body of an HTTP %d response", e.StatusCode),
			Err:    err,
			inBody: true,
		}
	default:
		if b := resp.Body(); len(b) > 0 {
			e.Body = append([]byte(nil), b...)
		}
	}
	return e
}

// checkSwitch checks a 101 against the request head sent, and records the
// accept value it checked in hs.
func checkSwitch(rh respHead, sent []byte, hs *Handshake) error {
	if !protoAtLeast11(rh.Protocol()) {
		return &HandshakeError{Reason: "101 response with a protocol older than HTTP/1.1"}
	}
	if !anyHasToken(rh.PeekAll(fasthttp.HeaderUpgrade), "websocket") {
		return &HandshakeError{Reason: `101 response without "Upgrade: websocket"`}
	}
	if !anyHasToken(rh.PeekAll(fasthttp.HeaderConnection), "upgrade") {
		return &HandshakeError{Reason: `101 response without "Connection: Upgrade"`}
	}

	// What the backend was asked for.
	var key []byte
	var protocols, extensions byteLists
	s := fieldScanner{b: requestFields(sent)}
	for name, value, ok := s.next(); ok; name, value, ok = s.next() {
		switch {
		case equalFold(name, "Sec-WebSocket-Key"):
			key = value
		case equalFold(name, "Sec-WebSocket-Protocol"):
			protocols.add(value)
		case equalFold(name, "Sec-WebSocket-Extensions"):
			extensions.add(value)
		}
	}

	accepts := rh.PeekAll("Sec-WebSocket-Accept")
	var want [28]byte
	if len(accepts) != 1 || !bytes.Equal(accepts[0], AppendAcceptKey(want[:0], key)) {
		return &HandshakeError{Reason: "wrong or missing Sec-WebSocket-Accept"}
	}
	if len(key) == len(hs.acceptKey) {
		copy(hs.acceptKey[:], key)
		copy(hs.accept[:], want[:])
	}

	switch ps := rh.PeekAll("Sec-WebSocket-Protocol"); {
	case len(ps) > 1:
		return &HandshakeError{Reason: "more than one Sec-WebSocket-Protocol in the 101"}
	case len(ps) == 1 && len(ps[0]) > 0:
		p := ps[0]
		offered := false
		for i := 0; i < protocols.len(); i++ {
			if hasExactToken(protocols.at(i), p) {
				offered = true
				break
			}
		}
		if !isToken(p) || !offered {
			return &HandshakeError{Reason: fmt.Sprintf("backend chose subprotocol %q, which the client did not offer", p)}
		}
	}

	var seen byteLists // names accepted so far, to refuse repeats
	for _, v := range rh.PeekAll("Sec-WebSocket-Extensions") {
		for len(v) > 0 {
			var e []byte
			e, v = nextElem(v)
			if len(e) == 0 {
				continue
			}
			name := extensionName(e)
			offered := false
			for i := 0; i < extensions.len(); i++ {
				if hasExtension(extensions.at(i), name) {
					offered = true
					break
				}
			}
			if !isToken(name) || !offered {
				return &HandshakeError{Reason: fmt.Sprintf("backend accepted extension %q, which the client did not offer", name)}
			}
			if seen.has(name) {
				return &HandshakeError{Reason: fmt.Sprintf("backend accepted extension %q twice", name)}
			}
			seen.add(name)
		}
	}
	return nil
}

func anyHasToken(values [][]byte, tok string) bool {
	for _, v := range values {
		if hasToken(v, tok) {
			return true
		}
	}
	return false
}

// buildHandshake copies what the proxy keeps from a checked 101 into hs.
func buildHandshake(rh respHead, hs *Handshake) {
	if ps := rh.PeekAll("Sec-WebSocket-Protocol"); len(ps) == 1 {
		hs.Protocol = string(ps[0])
	}
	var ext []byte
	for _, v := range rh.PeekAll("Sec-WebSocket-Extensions") {
		if len(v) == 0 {
			continue
		}
		if len(ext) > 0 {
			ext = append(ext, ", "...)
		}
		ext = append(ext, v...)
	}
	if len(ext) > 0 {
		hs.Extensions = string(ext)
		for v := hs.Extensions; len(v) > 0; {
			var e string
			e, v = nextElemString(v)
			if n := extensionNameString(e); n != "" {
				hs.ExtensionNames = append(hs.ExtensionNames, n)
			}
		}
	}
	hs.RSV = AllowedRSV(hs.Extensions)

	var conns byteLists
	for _, v := range rh.PeekAll(fasthttp.HeaderConnection) {
		conns.addList(v)
	}
	if sh, ok := rh.(*switchHead); ok {
		hs.Header = appendSwitchEndToEnd(hs.Header, &conns, sh)
		return
	}
	hs.Header = appendAllEndToEnd(hs.Header, conns, rh)
}

// appendSwitchEndToEnd is appendAllEndToEnd for a plain 101, read by
// index (ranging over All, a function the compiler cannot see, would move
// hs and conns to the heap on every handshake). The fields kept share one
// string: two allocations in all, not two per field.
func appendSwitchEndToEnd(dst []Field, conns *byteLists, sh *switchHead) []Field {
	var keep [maxSwitchFields]bool
	n, size := 0, 0
	for i := range sh.n {
		if endToEnd(conns, sh.fields[i][0]) {
			keep[i] = true
			n++
			size += len(sh.fields[i][0]) + len(sh.fields[i][1])
		}
	}
	if n == 0 {
		return dst
	}
	var b strings.Builder
	b.Grow(size)
	for i := range sh.n {
		if keep[i] {
			b.Write(sh.fields[i][0])
			b.Write(sh.fields[i][1])
		}
	}
	all := b.String()
	dst = slices.Grow(dst, n)
	for i := range sh.n {
		if keep[i] {
			name, value := len(sh.fields[i][0]), len(sh.fields[i][1])
			dst = append(dst, Field{Name: all[:name], Value: all[name : name+value]})
			all = all[name+value:]
		}
	}
	return dst
}

// appendAllEndToEnd appends rh's end-to-end fields to dst; conns is a
// copy, which the loop's closure moves to the heap in place of the
// caller's.
func appendAllEndToEnd(dst []Field, conns byteLists, rh respHead) []Field {
	for name, value := range rh.All() {
		if endToEnd(&conns, name) {
			dst = append(dst, Field{Name: string(name), Value: string(value)})
		}
	}
	return dst
}

// endToEnd reports whether a field of a 101 goes on to the client: not
// one the proxy answers with its own (hop-by-hop, named by Connection,
// framing, the WebSocket handshake's).
func endToEnd(conns *byteLists, name []byte) bool {
	return !isHopByHop(name) && !conns.has(name) && !equalFold(name, fasthttp.HeaderContentLength) &&
		!equalFold(name, "Sec-WebSocket-Accept") && !equalFold(name, "Sec-WebSocket-Protocol") &&
		!equalFold(name, "Sec-WebSocket-Extensions")
}

// nextElemString and extensionNameString are the string forms of nextElem
// and extensionName.
func nextElemString(v string) (elem, rest string) {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return trimOWSString(v[:i]), v[i+1:]
		}
	}
	return trimOWSString(v), ""
}

func extensionNameString(elem string) string {
	for i := 0; i < len(elem); i++ {
		if elem[i] == ';' {
			elem = elem[:i]
			break
		}
	}
	return trimOWSString(elem)
}

func trimOWSString(s string) string {
	for len(s) > 0 && isOWS(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isOWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// RSV bits of a frame's first byte.
const (
	RSV1 byte = 0x40
	RSV2 byte = 0x20
	RSV3 byte = 0x10
)

// AllowedRSV returns the RSV bits (RSV1, RSV2, RSV3 as they sit in a frame's
// first byte) that frames may set under the negotiated extensions, given the
// Sec-WebSocket-Extensions value of the 101: RSV1 for permessage-deflate
// (RFC 7692), all three as soon as any other extension is present (the proxy
// cannot know which it uses), 0 with no extension. It does not allocate.
func AllowedRSV(extensions string) byte {
	var rsv byte
	for v := extensions; len(v) > 0; {
		var e string
		e, v = nextElemString(v)
		switch n := extensionNameString(e); {
		case n == "":
		case strings.EqualFold(n, "permessage-deflate"):
			rsv |= RSV1
		default:
			return RSV1 | RSV2 | RSV3
		}
	}
	return rsv
}

// AppendSwitchingProtocols appends the 101 response the proxy sends to the
// client once the backend has accepted: the status line, "Upgrade:
// websocket", "Connection: Upgrade", the Sec-WebSocket-Accept for the
// client's key (Info.Key), the backend's Sec-WebSocket-Protocol and
// Sec-WebSocket-Extensions if any, the backend's other fields
// (hs.Header), and the blank line. It allocates only when dst is too small.
func AppendSwitchingProtocols(dst, key []byte, hs *Handshake) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	if hs.accept[0] != 0 && string(key) == string(hs.acceptKey[:]) {
		dst = append(dst, hs.accept[:]...)
	} else {
		dst = AppendAcceptKey(dst, key)
	}
	dst = append(dst, '\r', '\n')
	if hs.Protocol != "" {
		dst = appendFieldString(dst, "Sec-WebSocket-Protocol", hs.Protocol)
	}
	if hs.Extensions != "" {
		dst = appendFieldString(dst, "Sec-WebSocket-Extensions", hs.Extensions)
	}
	for _, f := range hs.Header {
		dst = appendFieldString(dst, f.Name, f.Value)
	}
	return append(dst, '\r', '\n')
}

// Upstream is a backend connection whose WebSocket handshake succeeded.
type Upstream struct {
	// Conn is the backend connection, with no deadline set. The caller owns
	// it and must close it.
	Conn net.Conn
	// Buffered holds bytes the backend sent after its 101 that were read
	// along with it: the start of its first frames. The relay must send them
	// to the client before anything read from Conn. Nil if none.
	Buffered []byte
	// Handshake is what the backend negotiated.
	Handshake Handshake
}

// Defaults for Dial and Upgrade.
const (
	// DefaultDialTimeout bounds connecting when Dial is given no timeout.
	DefaultDialTimeout = 5 * time.Second
	// DefaultHandshakeTimeout bounds writing the request and reading the
	// response when Dial or Upgrade is given no timeout.
	DefaultHandshakeTimeout = 10 * time.Second
	// ReadBufferSize is the size of the buffer the backend's response is
	// read with, and so the largest response head accepted: 4 KiB.
	ReadBufferSize = 4 << 10
)

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, ReadBufferSize) }}
	writePool  = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
)

// Dial connects to the backend at addr (host:port, TCP) within dialTimeout
// and performs the WebSocket handshake of req on the new connection within
// handshakeTimeout, as Upgrade does. A zero or negative timeout means
// DefaultDialTimeout or DefaultHandshakeTimeout. ctx bounds the whole call.
//
// A connection failure returns a *DialError; for the other errors, see
// Upgrade. If ctx ends first, the error wraps ctx's error and is neither
// (so Retryable reports false).
func Dial(ctx context.Context, addr string, dialTimeout time.Duration, req *UpstreamRequest, handshakeTimeout time.Duration) (*Upstream, error) {
	if req == nil || req.Header == nil {
		return nil, errors.New("upgrade: Dial needs an UpstreamRequest with a Header")
	}
	return withRequest(req, func(head []byte) (*Upstream, error) {
		return DialRequest(ctx, addr, dialTimeout, head, handshakeTimeout)
	})
}

// withRequest runs f with req's head built by AppendRequest into a pooled
// buffer, which is back in its pool when withRequest returns.
func withRequest(req *UpstreamRequest, f func(head []byte) (*Upstream, error)) (*Upstream, error) {
	bp := writePool.Get().(*[]byte)
	*bp = AppendRequest((*bp)[:0], req)
	up, err := f(*bp)
	if cap(*bp) <= 64<<10 {
		writePool.Put(bp)
	}
	return up, err
}

// DialRequest is Dial for a request head AppendRequest has already built:
// a caller that may try several backends builds it once. The head must
// not change until DialRequest returns.
func DialRequest(ctx context.Context, addr string, dialTimeout time.Duration, req []byte, handshakeTimeout time.Duration) (*Upstream, error) {
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	// No keepalive from the dialer: the caller tunes the socket once, with
	// the route's own settings, instead of having them set twice.
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: -1}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upgrade: dial %s: %w", addr, context.Cause(ctx))
		}
		return nil, &DialError{Addr: addr, Err: err}
	}
	return upgrade(ctx, conn, addr, req, handshakeTimeout)
}

// Upgrade performs the backend handshake of req over conn, an established
// connection (plain TCP, or TLS for a wss:// backend): it writes the request
// of AppendRequest in one write and reads and checks the response with
// ReadResponse, all within timeout (DefaultHandshakeTimeout if zero or
// negative) and ctx. On success the deadline is cleared and the caller owns
// the connection; on any failure conn is closed.
//
// Errors: a *HandshakeError (retryable: write failure, timeout, malformed
// response, failed check) or an *HTTPResponseError (the backend's own
// answer, to pass to the client). If ctx ends first, the error wraps ctx's
// error instead.
func Upgrade(ctx context.Context, conn net.Conn, req *UpstreamRequest, timeout time.Duration) (*Upstream, error) {
	if req == nil || req.Header == nil {
		conn.Close()
		return nil, errors.New("upgrade: Upgrade needs an UpstreamRequest with a Header")
	}
	return withRequest(req, func(head []byte) (*Upstream, error) {
		return upgrade(ctx, conn, conn.RemoteAddr().String(), head, timeout)
	})
}

func upgrade(ctx context.Context, conn net.Conn, addr string, req []byte, timeout time.Duration) (up *Upstream, err error) {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, &HandshakeError{Addr: addr, Reason: "setting the deadline", Err: err}
	}
	// Cancelling ctx moves the deadline to the past, which ends any read or
	// write in progress, with no goroutine waiting meanwhile.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })

	up, err = exchange(conn, req)
	if !stop() {
		// ctx ended; whatever happened since, the deadline is in the past.
		return nil, fmt.Errorf("upgrade: handshake with %s: %w", addr, context.Cause(ctx))
	}
	if err != nil {
		var he *HandshakeError
		var re *HTTPResponseError
		if errors.As(err, &he) {
			he.Addr = addr
		} else if errors.As(err, &re) {
			re.Addr = addr
		}
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, &HandshakeError{Addr: addr, Reason: "clearing the deadline", Err: err}
	}
	return up, nil
}

// exchange writes the request and reads the response, with a pooled
// reader that is back in its pool when it returns.
func exchange(conn net.Conn, req []byte) (*Upstream, error) {
	if _, err := conn.Write(req); err != nil {
		return nil, &HandshakeError{Reason: "writing the request", Err: err}
	}

	br := readerPool.Get().(*bufio.Reader)
	br.Reset(conn)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	hs, err := ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	up := &Upstream{Conn: conn, Handshake: hs}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		up.Buffered = append([]byte(nil), b...)
	}
	return up, nil
}
