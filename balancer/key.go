package balancer

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// KeyKind says where a KeySource finds a connection's sticky key.
type KeyKind uint8

// The places a sticky key can come from.
const (
	// KeyQuery is the value of the query parameter Name (its first
	// occurrence, URL-decoded).
	KeyQuery KeyKind = iota + 1
	// KeyHeader is the value of the request header Name (its first
	// occurrence).
	KeyHeader
	// KeyCookie is the value of the cookie Name.
	KeyCookie
	// KeyClientIP is the client's IP address in canonical text form
	// ("192.0.2.1", "2001:db8::1"): the TCP peer, or, when the peer is a
	// trusted proxy, the address it forwarded (see KeySpec).
	KeyClientIP
	// KeyPath is the request path, URL-decoded and normalised.
	KeyPath
)

// KeySource is one place to look for a sticky key.
type KeySource struct {
	Kind KeyKind
	// Name is the query parameter, header or cookie name; unused for
	// KeyClientIP and KeyPath.
	Name string
}

// ParseKeySource parses the configuration form of a key source:
// "query:NAME", "header:NAME", "cookie:NAME", "ip" or "path".
func ParseKeySource(s string) (KeySource, error) {
	kind, name, hasName := strings.Cut(s, ":")
	var k KeySource
	switch kind {
	case "query":
		k.Kind = KeyQuery
	case "header":
		k.Kind = KeyHeader
	case "cookie":
		k.Kind = KeyCookie
	case "ip":
		k.Kind = KeyClientIP
	case "path":
		k.Kind = KeyPath
	default:
		return KeySource{}, fmt.Errorf("key source %q: want query:NAME, header:NAME, cookie:NAME, ip or path", s)
	}
	switch k.Kind {
	case KeyQuery, KeyHeader, KeyCookie:
		if name == "" {
			return KeySource{}, fmt.Errorf("key source %q: %s needs a name, as in %s:NAME", s, kind, kind)
		}
		k.Name = name
	default:
		if hasName {
			return KeySource{}, fmt.Errorf("key source %q: %s takes no name", s, kind)
		}
	}
	return k, nil
}

// String returns the configuration form of k, as ParseKeySource reads it.
func (k KeySource) String() string {
	switch k.Kind {
	case KeyQuery:
		return "query:" + k.Name
	case KeyHeader:
		return "header:" + k.Name
	case KeyCookie:
		return "cookie:" + k.Name
	case KeyClientIP:
		return "ip"
	case KeyPath:
		return "path"
	}
	return fmt.Sprintf("KeyKind(%d)", k.Kind)
}

// Headers that carry the client address through trusted proxies.
const (
	HeaderXForwardedFor = "X-Forwarded-For"
	HeaderForwarded     = "Forwarded"
)

// KeySpec says how to find a connection's sticky key. The zero KeySpec
// finds no key. A KeySpec must not be modified once in use; Key is safe
// for concurrent use.
type KeySpec struct {
	// Sources are tried in order; the first one present with a non-empty
	// value gives the key.
	Sources []KeySource

	// TrustedProxies are the networks whose peers may tell us the client's
	// address. When the TCP peer is in one of them, KeyClientIP walks the
	// ClientIPHeader right to left, skipping addresses that are themselves
	// trusted, and takes the first one that is not: the client as seen by
	// the outermost trusted proxy. If every address is trusted it takes the
	// leftmost (the peer itself when the header is absent); if an entry is not an address (garbage, "unknown", an
	// obfuscated Forwarded identifier), there is no client IP. Empty means
	// no peer is trusted and the client IP is always the TCP peer.
	TrustedProxies []netip.Prefix

	// ClientIPHeader is the header that trusted proxies append the client
	// address to: HeaderXForwardedFor (the default, when empty) or
	// HeaderForwarded (RFC 7239, its for= parameter). Only one is read: a
	// trusted proxy that maintains one of them passes the other through
	// from the client unchecked, and reading it would let clients choose
	// their key.
	ClientIPHeader string
}

// Validate reports whether k can be used.
func (k *KeySpec) Validate() error {
	var errs []error
	for i, s := range k.Sources {
		switch s.Kind {
		case KeyQuery, KeyHeader, KeyCookie:
			if s.Name == "" {
				errs = append(errs, fmt.Errorf("key source %d (%s): empty name", i+1, s))
			}
		case KeyClientIP, KeyPath:
		default:
			errs = append(errs, fmt.Errorf("key source %d: unknown kind %d", i+1, s.Kind))
		}
	}
	switch k.ClientIPHeader {
	case "", HeaderXForwardedFor, HeaderForwarded:
	default:
		errs = append(errs, fmt.Errorf("client IP header %q: want %s or %s", k.ClientIPHeader, HeaderXForwardedFor, HeaderForwarded))
	}
	for _, p := range k.TrustedProxies {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("trusted proxy %s: invalid prefix", p))
		}
	}
	return errors.Join(errs...)
}

// Key appends the sticky key of the request in ctx to dst[:0] and returns
// it, with ok false (and a nil key) when no source has a value; an empty
// value counts as absent. The key is
// the raw value, whatever its source, so that anyone holding the value (a
// room name, a user id) can compute its backend with Set.Lookup. Key does
// not allocate when dst has room for the key (256 bytes covers any sane
// one) and ctx's request has been parsed once.
func (k *KeySpec) Key(ctx *fasthttp.RequestCtx, dst []byte) (key []byte, ok bool) {
	var peer netip.Addr
	if a, isTCP := ctx.RemoteAddr().(*net.TCPAddr); isTCP {
		peer = a.AddrPort().Addr()
	}
	return k.KeyFrom(&ctx.Request, peer, dst)
}

// KeyFrom is Key for a request and TCP peer address given apart.
func (k *KeySpec) KeyFrom(req *fasthttp.Request, peer netip.Addr, dst []byte) (key []byte, ok bool) {
	dst = dst[:0]
	for _, s := range k.Sources {
		var v []byte
		switch s.Kind {
		case KeyQuery:
			v = req.URI().QueryArgs().Peek(s.Name)
		case KeyHeader:
			v = req.Header.Peek(s.Name)
		case KeyCookie:
			v = req.Header.Cookie(s.Name)
		case KeyPath:
			v = req.URI().Path()
		case KeyClientIP:
			if ip := k.clientIP(&req.Header, peer); ip.IsValid() {
				return ip.AppendTo(dst), true
			}
		}
		if len(v) > 0 {
			return append(dst, v...), true
		}
	}
	return nil, false
}

// ClientIP returns the client address of a request from peer, following
// k.TrustedProxies; the zero Addr if there is none.
func (k *KeySpec) ClientIP(h *fasthttp.RequestHeader, peer netip.Addr) netip.Addr {
	return k.clientIP(h, peer)
}

func (k *KeySpec) clientIP(h *fasthttp.RequestHeader, peer netip.Addr) netip.Addr {
	addr := peer.Unmap()
	if !addr.IsValid() || !k.trusted(addr) {
		return addr
	}
	forwarded := k.ClientIPHeader == HeaderForwarded
	name := HeaderXForwardedFor
	if forwarded {
		name = HeaderForwarded
	}
	lines := h.PeekAll(name)
	for l := len(lines) - 1; l >= 0; l-- {
		v := lines[l]
		for len(v) > 0 {
			var elem []byte
			v, elem = lastElement(v)
			elem = bytes.TrimSpace(elem)
			if len(elem) == 0 {
				continue
			}
			var ip netip.Addr
			var ok bool
			if forwarded {
				ip, ok = forwardedFor(elem)
			} else {
				ip, ok = parseNodeAddr(elem)
			}
			if !ok {
				return netip.Addr{}
			}
			addr = ip
			if !k.trusted(addr) {
				return addr
			}
		}
	}
	return addr
}

// Trusted reports whether a peer is one of k.TrustedProxies, whose
// forwarding fields may be believed and passed on.
func (k *KeySpec) Trusted(peer netip.Addr) bool { return k.trusted(peer.Unmap()) }

func (k *KeySpec) trusted(a netip.Addr) bool {
	for _, p := range k.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// lastElement splits the list v at its last comma outside double quotes,
// returning what comes before it and the element after it.
func lastElement(v []byte) (rest, elem []byte) {
	quoted := false
	for i := len(v) - 1; i >= 0; i-- {
		switch v[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				return v[:i], v[i+1:]
			}
		}
	}
	return nil, v
}

// forwardedFor returns the address in the for= parameter of one element of
// a Forwarded header (RFC 7239 section 4), such as
// `for=192.0.2.60;proto=http;by=203.0.113.43` or `for="[2001:db8::17]:4711"`.
func forwardedFor(elem []byte) (netip.Addr, bool) {
	for len(elem) > 0 {
		var pair []byte
		pair, elem, _ = bytes.Cut(elem, []byte{';'})
		name, value, ok := bytes.Cut(bytes.TrimSpace(pair), []byte{'='})
		if !ok || !bytes.EqualFold(bytes.TrimSpace(name), []byte("for")) {
			continue
		}
		value = bytes.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		return parseNodeAddr(value)
	}
	return netip.Addr{}, false
}

// parseNodeAddr parses an address as proxies write them: "192.0.2.1",
// "2001:db8::1", "192.0.2.1:4711", "[2001:db8::1]" or "[2001:db8::1]:4711".
// Zones are refused. The result is unmapped (::ffff:192.0.2.1 is 192.0.2.1).
func parseNodeAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 || bytes.IndexByte(b, '%') >= 0 {
		return netip.Addr{}, false
	}
	if b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 || (end+1 < len(b) && b[end+1] != ':') {
			return netip.Addr{}, false
		}
		b = b[1:end]
	} else if i := bytes.IndexByte(b, ':'); i >= 0 && bytes.IndexByte(b[i+1:], ':') < 0 {
		b = b[:i] // IPv4 with a port: one colon only
	}
	// The string aliases b only for the call: ParseAddr keeps nothing of
	// it (zones, which it would intern, are refused above) and the error,
	// which would, is dropped. This avoids an allocation per request.
	a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
