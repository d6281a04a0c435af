package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// parseSiteAddress parses one key of a site block: [scheme://]host[:port],
// where scheme is http or https and host may be empty, a name, "*.name", an
// IPv4 address or a bracketed IPv6 address. Which addresses are TLS and the
// default ports are def's rules (see addrDefaults).
func parseSiteAddress(s string, def addrDefaults) (Address, error) {
	rest := strings.ToLower(s)
	scheme := ""
	if sch, after, ok := strings.Cut(rest, "://"); ok {
		scheme, rest = sch, after
	}
	switch scheme {
	case "", "http", "https":
	default:
		return Address{}, fmt.Errorf("site address %q: unsupported scheme %q; use http:// or https://", s, scheme)
	}
	if strings.Contains(rest, "/") {
		return Address{}, fmt.Errorf("site address %q has a path; match paths with route instead", s)
	}
	host, port, hasPort, err := splitHostPort(rest)
	if err != nil {
		return Address{}, fmt.Errorf("site address %q: %v", s, err)
	}
	a := Address{Scheme: "http"}
	if hasPort {
		if a.Port, err = parsePort(port); err != nil {
			return Address{}, fmt.Errorf("site address %q: %v", s, err)
		}
	}
	if def.isTLS(scheme, a.Port) {
		a.Scheme = "https"
	}
	if !hasPort {
		a.Port = def.httpPort
		if a.Scheme == "https" {
			a.Port = def.httpsPort
		}
	}
	if host != "" {
		if a.Host, err = normalizeHost(host, true); err != nil {
			return Address{}, fmt.Errorf("site address %q: %v", s, err)
		}
	}
	return a, nil
}

// parseUpstream parses one argument of `to`: host:port, ws://host:port or
// http://host:port. It returns host:port with the host lower-cased.
func parseUpstream(s string) (string, error) {
	rest := s
	if sch, after, ok := strings.Cut(s, "://"); ok {
		switch strings.ToLower(sch) {
		case "ws", "http":
			rest = after
		case "wss", "https":
			return "", fmt.Errorf("upstream %q: TLS to upstreams is not supported yet; use ws:// or host:port", s)
		default:
			return "", fmt.Errorf("upstream %q: unsupported scheme %q; use ws://, http:// or host:port", s, sch)
		}
	}
	if strings.Contains(rest, "/") {
		return "", fmt.Errorf("upstream %q has a path; give host:port only", s)
	}
	host, port, hasPort, err := splitHostPort(strings.ToLower(rest))
	if err != nil {
		return "", fmt.Errorf("upstream %q: %v", s, err)
	}
	if !hasPort {
		return "", fmt.Errorf("upstream %q has no port; write it as host:port", s)
	}
	if host == "" {
		return "", fmt.Errorf("upstream %q has no host; write it as host:port", s)
	}
	if _, err := parsePort(port); err != nil {
		return "", fmt.Errorf("upstream %q: %v", s, err)
	}
	if host, err = normalizeHost(host, false); err != nil {
		return "", fmt.Errorf("upstream %q: %v", s, err)
	}
	return net.JoinHostPort(host, port), nil
}

// splitHostPort splits host[:port] or [ipv6][:port]. Unlike net.SplitHostPort
// the port is optional; hasPort tells whether a ':' was there. The brackets of
// an IPv6 host are removed.
func splitHostPort(s string) (host, port string, hasPort bool, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, errors.New("missing ']' after IPv6 address")
		}
		host, rest := s[1:end], s[end+1:]
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() {
			return "", "", false, fmt.Errorf("%q in brackets is not an IPv6 address", host)
		}
		if rest == "" {
			return host, "", false, nil
		}
		if rest[0] != ':' {
			return "", "", false, fmt.Errorf("unexpected %q after ']'", rest)
		}
		return host, rest[1:], true, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", false, nil
	}
	host, port = s[:i], s[i+1:]
	if strings.Contains(host, ":") {
		return "", "", false, errors.New("an IPv6 address needs brackets, like [::1]:8080")
	}
	return host, port, true, nil
}

// parsePort parses a TCP port, 1..65535.
func parsePort(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty port after ':'")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q must be a number from 1 to 65535", s)
	}
	return n, nil
}

// normalizeHost checks a lower-cased host without brackets or port: an IP
// address (returned in canonical form) or a DNS name made of letters,
// digits, '-' and '_'. With wildcard, the name may start with "*." to
// stand for one or more leading labels.
func normalizeHost(host string, wildcard bool) (string, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.String(), nil
	}
	name := host
	if wildcard {
		name = strings.TrimPrefix(name, "*.")
	}
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("invalid host %q", host)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("invalid host %q: empty or overlong label", host)
		}
		for _, c := range label {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c == '*' && wildcard:
				return "", fmt.Errorf("invalid host %q: a wildcard may only be the whole first label, as in *.example.com", host)
			default:
				return "", fmt.Errorf("invalid host %q: unexpected %q", host, c)
			}
		}
	}
	return host, nil
}
