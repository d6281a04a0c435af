package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// target is a request-target in the one form the proxy both routes on and
// forwards.
//
// Routing and forwarding must see the same path: when the proxy matched a
// decoded, dot-resolved path but forwarded the raw one, GET
// /admin/..%2fws/x matched an open /ws/* route while a backend routing on
// the raw prefix served /admin. Forwarding the fully decoded form instead
// would change what the backend receives (an encoded "/" or "?" becomes a
// real one). So the path is normalised only in ways RFC 3986 §6.2.2 says
// cannot change its meaning, and that form is both matched and forwarded:
//
//   - percent-encoded unreserved characters (letters, digits, "-._~") are
//     decoded (%41 is A, %2e is .), and the hex digits of the other
//     escapes are upper-cased (%2f is %2F);
//   - bytes that may not appear raw in a path (controls, space, non-ASCII,
//     and the like) are percent-encoded;
//   - nothing else changes: no dot-segment removal, no merging of slashes.
//
// What no form can make unambiguous is refused with 400: "." and ".."
// segments, raw or encoded (a backend resolves them, the proxy does not),
// malformed escapes and an encoded NUL. An encoded slash (%2F) or a
// backslash (raw or %5C) is refused too unless the route says
// allow_encoded_slash: backends disagree on whether it separates segments.
// It is then kept encoded, so the route matched what the backend gets.
type target struct {
	path         []byte // normalised, as matched and forwarded
	query        []byte // from the '?' on, as received; nil if none
	encodedSlash bool   // path holds %2F or %5C
	absolute     bool   // the client sent absolute-form
	asterisk     bool   // OPTIONS *: path is "*" and nothing is rewritten
}

// parseTarget reads the request-target of ctx's request. A non-empty
// reason means the request must be refused with 400.
func parseTarget(ctx *fasthttp.RequestCtx, buf []byte) (tg target, reason string) {
	raw := ctx.Request.Header.RequestURI()
	if len(raw) == 1 && raw[0] == '*' {
		return target{path: raw, asterisk: true}, ""
	}
	if len(raw) > 0 && raw[0] != '/' {
		// absolute-form: scheme "://" authority [path] ["?" query]
		i := bytes.Index(raw, []byte("://"))
		if i <= 0 {
			return tg, "request-target is neither a path nor an absolute URI"
		}
		rest := raw[i+3:]
		j := bytes.IndexAny(rest, "/?#")
		if j < 0 {
			j = len(rest)
		}
		if j == 0 {
			return tg, "absolute URI without a host"
		}
		raw = rest[j:]
		tg.absolute = true
	}
	if i := bytes.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i] // a fragment is never sent; fasthttp drops it too
	}
	p := raw
	if i := bytes.IndexByte(raw, '?'); i >= 0 {
		p, tg.query = raw[:i], raw[i:]
	}
	tg.path, tg.encodedSlash, reason = normalisePath(buf[:0], p)
	return tg, reason
}

// normalisePath appends the normalised form of an origin-form path to dst;
// see target.
func normalisePath(dst, p []byte) (out []byte, encodedSlash bool, reason string) {
	if len(p) == 0 {
		return append(dst, '/'), false, ""
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || unhex(p[i+1]) < 0 || unhex(p[i+2]) < 0 {
				return dst, false, "malformed percent-encoding in the path"
			}
			v := byte(unhex(p[i+1])<<4 | unhex(p[i+2]))
			i += 2
			switch {
			case v == 0:
				return dst, false, "encoded NUL in the path"
			case unreserved(v):
				dst = append(dst, v)
			default:
				if v == '/' || v == '\\' {
					encodedSlash = true
				}
				dst = append(dst, '%', upperHex[v>>4], upperHex[v&15])
			}
		case c == '\\':
			encodedSlash = true
			dst = append(dst, '%', '5', 'C')
		case pathByte(c):
			dst = append(dst, c)
		default:
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	if dotSegment(dst) {
		return dst, false, `"." or ".." segment in the path`
	}
	return dst, encodedSlash, ""
}

// dotSegment reports whether a normalised path has a "." or ".." segment,
// counting %2F and %5C as separators (a backend may decode them first).
func dotSegment(p []byte) bool {
	start := 0
	for i := 0; i <= len(p); i++ {
		sep := 0
		switch {
		case i == len(p):
			sep = 1
		case p[i] == '/':
			sep = 1
		case p[i] == '%' && i+2 < len(p) && (p[i+1] == '2' && p[i+2] == 'F' || p[i+1] == '5' && p[i+2] == 'C'):
			sep = 3
		}
		if sep == 0 {
			continue
		}
		if seg := p[start:i]; string(seg) == "." || string(seg) == ".." {
			return true
		}
		start = i + sep
		i += sep - 1
	}
	return false
}

// forward makes the request carry the normalised target: the path the
// route matched, the authority of an absolute-form target as its Host
// (RFC 9112 §3.2.2: the URI's authority wins over the Host field), and
// origin-form for the backend. fasthttp's client writes the URI (plain
// HTTP); upgrade.AppendRequest writes the header's request-target and
// Host (WebSocket).
func (tg *target) forward(ctx *fasthttp.RequestCtx) {
	if tg.asterisk {
		return
	}
	if tg.absolute {
		ctx.Request.Header.SetHostBytes(ctx.URI().Host())
	}
	ctx.URI().SetPathBytes(tg.path)
	// Both copy; the query aliases the header's own request-target, which
	// is why it is appended to the path's buffer first.
	ctx.Request.Header.SetRequestURIBytes(append(tg.path, tg.query...))
}

const upperHex = "0123456789ABCDEF"

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// unreserved is RFC 3986's unreserved set, whose escapes mean the same as
// the characters.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// pathByte reports whether c may appear raw in a path: unreserved,
// sub-delims, ':', '@' and the '/' separator (RFC 3986 §3.3).
func pathByte(c byte) bool {
	if unreserved(c) {
		return true
	}
	switch c {
	case '/', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@':
		return true
	}
	return false
}
