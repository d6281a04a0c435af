package upgrade

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// OriginPolicy is a compiled Origin allow-list. Build one with
// CompileOrigins; it never changes afterwards, so one value may be shared by
// any number of goroutines.
//
// A nil *OriginPolicy allows every request, with or without an Origin.
type OriginPolicy struct {
	// all is set when the pattern list was empty: everything is allowed.
	all bool
	// allowEmpty admits requests that carry no Origin header.
	allowEmpty bool
	// any is set by the pattern "*": every non-empty Origin is allowed.
	any      bool
	patterns []originPattern
}

// originPattern is one compiled scheme://host[:port] pattern.
type originPattern struct {
	scheme string // lower-case
	// host is the lower-case host; for a wildcard pattern it is the suffix
	// with its leading dot (".example.com"). An IPv6 host keeps its brackets.
	host     string
	wildcard bool
	port     int // -1 for ":*"; the scheme's default port when none was given
}

// OriginPatternError reports a pattern that CompileOrigins cannot use.
type OriginPatternError struct {
	Pattern string
	Reason  string
}

// Error names the pattern and what is wrong with it.
func (e *OriginPatternError) Error() string {
	return fmt.Sprintf("origin %q: %s", e.Pattern, e.Reason)
}

// CheckOrigin reports whether s is a pattern CompileOrigins accepts: "*",
// or scheme://host[:port] where host may start with "*." and port may be
// "*". Any URI scheme is allowed (browsers send chrome-extension://,
// capacitor:// and the like for their apps).
func CheckOrigin(s string) error {
	if s == "*" {
		return nil
	}
	if _, reason := compileOrigin(s); reason != "" {
		return &OriginPatternError{Pattern: s, Reason: reason}
	}
	return nil
}

// CompileOrigins compiles an Origin allow-list.
//
// Each pattern is one of:
//
//   - "*": any Origin;
//   - "https://example.com": that scheme and host on the scheme's default
//     port (80 for http and ws, 443 for https and wss; other schemes have
//     none), so it also matches "https://example.com:443";
//   - "https://example.com:8443": that scheme, host and port;
//   - "https://*.example.com": any host made of one or more labels followed
//     by ".example.com" (not "https://example.com" itself);
//   - "http://localhost:*": any port, or none.
//
// Schemes and hosts are compared ASCII case-insensitively; IPv6 hosts are
// written in brackets ("http://[::1]:8080"). An Origin header never has a
// path, so a pattern with one is refused.
//
// A nil or empty pattern list allows every request. Otherwise allowEmpty
// decides whether a request without an Origin header (a non-browser client)
// is allowed. The error, if any, is an *OriginPatternError for the first bad
// pattern.
func CompileOrigins(patterns []string, allowEmpty bool) (*OriginPolicy, error) {
	p := &OriginPolicy{all: len(patterns) == 0, allowEmpty: allowEmpty}
	for _, s := range patterns {
		if s == "*" {
			p.any = true
			continue
		}
		op, reason := compileOrigin(s)
		if reason != "" {
			return nil, &OriginPatternError{Pattern: s, Reason: reason}
		}
		p.patterns = append(p.patterns, op)
	}
	return p, nil
}

func compileOrigin(s string) (originPattern, string) {
	l := strings.ToLower(s)
	scheme, rest, ok := strings.Cut(l, "://")
	if !ok || !isScheme([]byte(scheme)) {
		return originPattern{}, `want "*" or scheme://host[:port], like https://example.com`
	}
	if strings.ContainsAny(rest, "/?#@") {
		return originPattern{}, "an origin is scheme://host[:port] only, without path, query or user"
	}
	op := originPattern{scheme: scheme, port: defaultPort([]byte(scheme))}
	host, port := rest, ""
	hasPort := false
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return op, "missing ']' after the IPv6 address"
		}
		ip, err := netip.ParseAddr(rest[1:end])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return op, fmt.Sprintf("%q in brackets is not an IPv6 address", rest[1:end])
		}
		host = "[" + ip.String() + "]"
		switch after := rest[end+1:]; {
		case after == "":
		case after[0] == ':':
			port, hasPort = after[1:], true
		default:
			return op, fmt.Sprintf("unexpected %q after ']'", after)
		}
	} else {
		if i := strings.IndexByte(rest, ':'); i >= 0 {
			host, port, hasPort = rest[:i], rest[i+1:], true
		}
		name := host
		if strings.HasPrefix(name, "*.") {
			op.wildcard = true
			name = name[1:] // keep the dot: the suffix to match
		}
		if !isHostName([]byte(strings.TrimPrefix(name, "."))) {
			if strings.Contains(name, "*") {
				return op, "a wildcard may only be the whole first label, as in https://*.example.com"
			}
			return op, fmt.Sprintf("invalid host %q", host)
		}
		host = name
	}
	op.host = host
	if hasPort {
		if port == "*" {
			op.port = -1
		} else {
			n, err := strconv.Atoi(port)
			if err != nil || n < 1 || n > 65535 || port[0] == '+' {
				return op, fmt.Sprintf("port %q must be a number from 1 to 65535 or *", port)
			}
			op.port = n
		}
	}
	return op, ""
}

// Allow reports whether a request with this Origin header value (nil or
// empty when the request had none) passes the policy. It does not allocate.
func (p *OriginPolicy) Allow(origin []byte) bool {
	if p == nil || p.all {
		return true
	}
	if len(origin) == 0 {
		return p.allowEmpty
	}
	if p.any {
		return true
	}
	scheme, host, port, ok := splitOrigin(origin)
	if !ok {
		return false
	}
	for i := range p.patterns {
		if p.patterns[i].match(scheme, host, port) {
			return true
		}
	}
	return false
}

// allowsAnyOrigin reports whether every non-empty Origin passes.
func (p *OriginPolicy) allowsAnyOrigin() bool {
	return p == nil || p.all || p.any
}

func (op *originPattern) match(scheme, host []byte, port int) bool {
	if op.port >= 0 && op.port != port {
		return false
	}
	if !equalFold(scheme, op.scheme) {
		return false
	}
	if op.wildcard {
		// splitOrigin refused empty labels, so anything before the suffix
		// is one or more whole labels.
		return len(host) > len(op.host) && hasSuffixFold(host, op.host)
	}
	return equalFold(host, op.host)
}

// splitOrigin parses an Origin value, scheme "://" host [":" port]. The port
// is the scheme's default when absent. ok is false for anything else,
// including "null", paths and malformed hosts.
func splitOrigin(o []byte) (scheme, host []byte, port int, ok bool) {
	i := indexSchemeSep(o)
	if i <= 0 || !isScheme(o[:i]) {
		return nil, nil, 0, false
	}
	scheme, rest := o[:i], o[i+3:]
	var portStr []byte
	hasPort := false
	if len(rest) > 0 && rest[0] == '[' {
		end := -1
		for j := 1; j < len(rest); j++ {
			if rest[j] == ']' {
				end = j
				break
			}
			if !isIPv6Char(rest[j]) {
				return nil, nil, 0, false
			}
		}
		if end < 2 {
			return nil, nil, 0, false
		}
		host = rest[:end+1]
		switch after := rest[end+1:]; {
		case len(after) == 0:
		case after[0] == ':':
			portStr, hasPort = after[1:], true
		default:
			return nil, nil, 0, false
		}
	} else {
		host = rest
		for j, c := range rest {
			if c == ':' {
				host, portStr, hasPort = rest[:j], rest[j+1:], true
				break
			}
		}
		if !isHostName(host) {
			return nil, nil, 0, false
		}
	}
	port = defaultPort(scheme)
	if hasPort {
		if len(portStr) == 0 || len(portStr) > 5 {
			return nil, nil, 0, false
		}
		port = 0
		for _, c := range portStr {
			if c < '0' || c > '9' {
				return nil, nil, 0, false
			}
			port = port*10 + int(c-'0')
		}
		if port > 65535 {
			return nil, nil, 0, false
		}
	}
	return scheme, host, port, true
}

func indexSchemeSep(b []byte) int {
	for i := 0; i+2 < len(b); i++ {
		if b[i] == ':' {
			if b[i+1] == '/' && b[i+2] == '/' {
				return i
			}
			return -1
		}
	}
	return -1
}

// defaultPort is the port an origin of this scheme has when none is written.
func defaultPort(scheme []byte) int {
	switch {
	case equalFold(scheme, "https"), equalFold(scheme, "wss"):
		return 443
	case equalFold(scheme, "http"), equalFold(scheme, "ws"):
		return 80
	}
	return 0
}

// isScheme checks RFC 3986 scheme syntax: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func isScheme(b []byte) bool {
	if len(b) == 0 || !isAlpha(b[0]) {
		return false
	}
	for _, c := range b[1:] {
		if !isAlpha(c) && !('0' <= c && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { c |= 0x20; return 'a' <= c && c <= 'z' }

// isHostName checks a DNS name or IPv4 address: labels of letters, digits,
// '-' and '_' separated by single dots, with no empty label.
func isHostName(b []byte) bool {
	if len(b) == 0 || len(b) > 253 {
		return false
	}
	label := 0
	for _, c := range b {
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case isAlpha(c), '0' <= c && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}

func isIPv6Char(c byte) bool {
	return c == ':' || c == '.' || ('0' <= c && c <= '9') || ('a' <= c|0x20 && c|0x20 <= 'f')
}
