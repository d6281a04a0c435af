package upgrade

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// This file holds the allocation-free helpers that read HTTP header fields:
// a scanner over the raw header block, comma-separated list splitting and
// the hop-by-hop rules shared by both legs of the handshake.

// rawFields returns the request's header block as the client sent it,
// without the request line. fasthttp keeps that copy (RawHeaders) for every
// parsed request; reading it instead of the parsed form sees every field,
// duplicates and order included, and never triggers fasthttp's lossy cookie
// re-serialisation or its "Connection: close" special case.
//
// A header that was built in code rather than parsed has no raw block; its
// serialised form is used instead (this path allocates).
func rawFields(h *fasthttp.RequestHeader) []byte {
	if raw := h.RawHeaders(); len(raw) > 0 {
		return raw
	}
	full := h.Header() // fasthttp scratch buffer: copy it below.
	i := bytes.IndexByte(full, '\n')
	if i < 0 {
		return nil
	}
	return append([]byte(nil), full[i+1:]...)
}

// requestFields returns the header block of a request head built as
// AppendRequest builds one: what follows the request line.
func requestFields(head []byte) []byte {
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		return head[i+1:]
	}
	return nil
}

// fieldScanner walks the fields of a raw header block. The zero value with b
// set is ready to use.
type fieldScanner struct {
	b []byte
}

// next returns the next field. A value folded over continuation lines
// (obs-fold) is returned as one slice that still contains the CR LF bytes;
// the list helpers below treat them as white space. Leading and trailing
// white space is trimmed from the value. Lines without a colon are skipped.
// The slices alias the scanned block.
func (s *fieldScanner) next() (name, value []byte, ok bool) {
	b := s.b
	for len(b) > 0 {
		end, next := lineBounds(b, 0)
		if end == 0 {
			break // the blank line that ends the header block
		}
		if b[0] == ' ' || b[0] == '\t' {
			b = b[next:] // continuation without a field to continue
			continue
		}
		colon := bytes.IndexByte(b[:end], ':')
		for next < len(b) && (b[next] == ' ' || b[next] == '\t') {
			end, next = lineBounds(b, next)
		}
		line := b[:end]
		b = b[next:]
		if colon <= 0 {
			continue
		}
		s.b = b
		return line[:colon], trimOWS(line[colon+1:]), true
	}
	s.b = nil
	return nil, nil, false
}

// lineBounds returns the end of the line starting at from (before any
// CR LF) and the start of the following line.
func lineBounds(b []byte, from int) (end, next int) {
	i := bytes.IndexByte(b[from:], '\n')
	if i < 0 {
		end, next = len(b), len(b)
	} else {
		end, next = from+i, from+i+1
	}
	if end > from && b[end-1] == '\r' {
		end--
	}
	return end, next
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// trimOWS trims spaces, tabs and the CR LF of folded lines from both ends.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// nextElem splits the first element off a comma-separated header list. Commas
// inside quoted strings do not split. The element is trimmed; empty elements
// (as in "a,,b") are returned as empty slices and callers skip them.
func nextElem(v []byte) (elem, rest []byte) {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return trimOWS(v[:i]), v[i+1:]
		}
	}
	return trimOWS(v), nil
}

// hasToken reports whether the list v contains tok, compared ASCII
// case-insensitively.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var e []byte
		e, v = nextElem(v)
		if equalFold(e, tok) {
			return true
		}
	}
	return false
}

// hasExactToken is hasToken with a case-sensitive comparison (subprotocol
// names are case-sensitive, RFC 6455 §11.3.4).
func hasExactToken(v, tok []byte) bool {
	for len(v) > 0 {
		var e []byte
		e, v = nextElem(v)
		if len(e) > 0 && bytes.Equal(e, tok) {
			return true
		}
	}
	return false
}

// extensionName returns the name of one element of a Sec-WebSocket-Extensions
// list: the part before the first ';', trimmed.
func extensionName(elem []byte) []byte {
	if i := bytes.IndexByte(elem, ';'); i >= 0 {
		elem = elem[:i]
	}
	return trimOWS(elem)
}

// hasExtension reports whether the Sec-WebSocket-Extensions list v offers an
// extension called name (ASCII case-insensitive).
func hasExtension(v, name []byte) bool {
	for len(v) > 0 {
		var e []byte
		e, v = nextElem(v)
		if n := extensionName(e); len(n) > 0 && bytes.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// equalFold compares b with the ASCII string s, ignoring ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	if string(b) == s {
		return true // names nearly always come in the case they are looked up in
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

// hasSuffixFold reports whether b ends with the lower-case ASCII string
// suffix, ignoring the case of b.
func hasSuffixFold(b []byte, suffix string) bool {
	return len(b) >= len(suffix) && equalFold(b[len(b)-len(suffix):], suffix)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

// tokenChar marks the bytes allowed in an RFC 9110 token.
var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isHopByHop reports whether a field named name is hop-by-hop by definition
// (RFC 9110 §7.6.1, plus the non-standard Proxy-Connection and Keep-Alive),
// so a proxy never forwards it.
func isHopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return equalFold(name, "TE")
	case 7:
		return equalFold(name, "Upgrade") || equalFold(name, "Trailer")
	case 10:
		return equalFold(name, "Connection") || equalFold(name, "Keep-Alive")
	case 16:
		return equalFold(name, "Proxy-Connection")
	case 17:
		return equalFold(name, "Transfer-Encoding")
	case 18:
		return equalFold(name, "Proxy-Authenticate")
	case 19:
		return equalFold(name, "Proxy-Authorization")
	}
	return false
}

// byteLists collects byte strings: the values of a field that may be
// repeated (the client's Sec-WebSocket-Protocol or -Extensions), or, as a
// set of names, what a message's Connection fields list. The first eight
// are kept without allocating (the type holds no pointer to itself, so it
// stays on the stack).
type byteLists struct {
	store [8][]byte
	n     int
	extra [][]byte
}

func (c *byteLists) add(v []byte) {
	if c.n < len(c.store) {
		c.store[c.n] = v
		c.n++
		return
	}
	c.extra = append(c.extra, v)
}

// len returns the number of values collected.
func (c *byteLists) len() int { return c.n + len(c.extra) }

func (c *byteLists) at(i int) []byte {
	if i < c.n {
		return c.store[i]
	}
	return c.extra[i-c.n]
}

// addList adds the non-empty elements of a comma-separated list. The
// Connection names are split once this way: checking each of a message's
// fields against them then costs a comparison per listed name, where
// scanning every Connection value again for each field would let a client
// make the check quadratic in its header's size.
func (c *byteLists) addList(v []byte) {
	for len(v) > 0 {
		var e []byte
		e, v = nextElem(v)
		if len(e) > 0 {
			c.add(e)
		}
	}
}

// has reports whether name was collected, compared ASCII case-insensitively.
func (c *byteLists) has(name []byte) bool {
	for i := 0; i < c.len(); i++ {
		if e := c.at(i); len(e) == len(name) && bytes.EqualFold(e, name) {
			return true
		}
	}
	return false
}

// isWebSocketField reports whether name starts with "Sec-WebSocket-".
func isWebSocketField(name []byte) bool {
	const p = "sec-websocket-"
	return len(name) > len(p) && equalFold(name[:len(p)], p)
}

// appendField appends "name: value\r\n". Any CR or LF inside value (the
// line breaks of an obs-fold, or stray bytes in a configured value) becomes
// a space, as RFC 9112 §5.2 asks of a proxy, so a value can never end the
// field early.
func appendField(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ':', ' ')
	return appendValue(dst, value)
}

// appendFieldString is appendField for string values.
func appendFieldString(dst []byte, name, value string) []byte {
	dst = append(dst, name...)
	dst = append(dst, ':', ' ')
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return append(dst, '\r', '\n')
}

func appendValue(dst, value []byte) []byte {
	for len(value) > 0 {
		i := bytes.IndexAny(value, "\r\n")
		if i < 0 {
			dst = append(dst, value...)
			break
		}
		dst = append(dst, value[:i]...)
		dst = append(dst, ' ')
		value = value[i+1:]
	}
	return append(dst, '\r', '\n')
}

// HTTP1 reports whether a request line's version is HTTP/1.x (what fasthttp
// parsed as HTTP/0.9 or 1.0 included): a later major version in HTTP/1's
// syntax is a 505.
func HTTP1(p []byte) bool {
	return len(p) != len("HTTP/1.1") || !bytes.HasPrefix(p, []byte("HTTP/")) || p[5] <= '1'
}

// protoAtLeast11 reports whether an "HTTP/x.y" protocol string is HTTP/1.1 or
// later. fasthttp has already checked the "HTTP/d.d" shape.
func protoAtLeast11(p []byte) bool {
	if len(p) != len("HTTP/1.1") || !bytes.HasPrefix(p, []byte("HTTP/")) || p[6] != '.' {
		return false
	}
	major, minor := p[5], p[7]
	if major < '0' || major > '9' || minor < '0' || minor > '9' {
		return false
	}
	return major > '1' || (major == '1' && minor >= '1')
}
