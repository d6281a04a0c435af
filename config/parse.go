package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/keepalive"
)

// Defaults, as documented on the fields they fill.
const (
	defaultMaxHeaderBytes           = 16 << 10
	defaultHandshakeTimeout         = 10 * time.Second
	defaultRequestBodyTimeout       = 60 * time.Second
	defaultLogLevel                 = "info"
	defaultLBRetries                = 2
	defaultDialTimeout              = 5 * time.Second
	defaultWriteTimeout             = 30 * time.Second
	defaultResponseTimeout          = 60 * time.Second
	defaultMaxConnsPerBackend       = 1024
	defaultMaxConnsWait             = 30 * time.Second
	defaultUpstreamHandshakeTimeout = 10 * time.Second
	defaultAllowEmptyOrigin         = true
	defaultLBPolicy                 = balancer.NameLeastConn
	defaultClientIPHeader           = balancer.HeaderXForwardedFor

	minMaxHeaderBytes = 1 << 10
	maxMaxHeaderBytes = 1 << 20
	maxLBRetries      = 10
)

// Known directives, listed in "unknown directive" errors.
const (
	knownSite = "route, tls"
)

// Load reads the Caddyfile at path and parses it with Parse.
func Load(path string) (*Config, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, body)
}

// Format returns body in the standard Caddyfile layout (caddyfile.Format):
// tabs for indentation, one space between tokens, braces placed as Caddy
// places them. It does not parse or validate the config.
func Format(body []byte) []byte {
	return caddyfile.Format(body)
}

// Parse parses a Caddyfile. filename names the file in errors and is the
// base for relative imports. It returns a complete, validated Config with
// every default filled, or an ErrorList holding every problem it found.
func Parse(filename string, body []byte) (*Config, error) {
	p := &parser{
		file:  filename,
		addrs: make(map[Address]Pos),
		names: make(map[string]Pos),
		cfg: &Config{
			File: filename,
			Global: Global{
				MaxHeaderBytes:     defaultMaxHeaderBytes,
				HandshakeTimeout:   defaultHandshakeTimeout,
				RequestBodyTimeout: defaultRequestBodyTimeout,
				LogLevel:           defaultLogLevel,
				ClientIPHeader:     defaultClientIPHeader,
				GracePeriod:        30 * time.Second,
				AccessLog:          "stdout",
				AccessLogSample:    1,
				ReloadDrain:        10 * time.Second,
				WriteTimeout:       defaultWriteTimeout,
				TLS:                TLSOptions{HTTPPort: defaultHTTPPort, HTTPSPort: defaultHTTPSPort},
			},
		},
	}
	blocks, err := caddyfile.Parse(filename, body)
	if err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, ErrorList{fromCaddyfileError(filename, err)}
	}
	p.checkBraces(body)
	p.blocks(blocks)
	p.checkTLSPorts()
	p.checkAdminPort()
	p.inheritGlobal()
	p.checkConsul()
	if len(p.errs) > 0 {
		sortErrors(p.errs, filename)
		return nil, p.errs
	}
	return p.cfg, nil
}

// parser walks caddyfile's server blocks into a Config, collecting errors.
type parser struct {
	file  string
	cfg   *Config
	errs  ErrorList
	addrs map[Address]Pos // site addresses claimed so far
	names map[string]Pos  // route names used so far

	adminPort int // of the admin directive at adminPos; 0 if none
	adminPos  Pos
}

func (p *parser) errorf(pos Pos, format string, args ...any) {
	p.errs = append(p.errs, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

func posOf(t caddyfile.Token) Pos { return Pos{File: t.File, Line: t.Line} }

// checkBraces reports unbalanced braces in the main file: caddyfile.Parse
// quietly accepts a last block that is never closed, and turns a stray '}'
// into a site address.
func (p *parser) checkBraces(body []byte) {
	tokens, err := caddyfile.Tokenize(body, p.file)
	if err != nil {
		return // caddyfile.Parse has already lexed this successfully
	}
	var open []caddyfile.Token
	for _, t := range tokens {
		if t.Quoted() {
			continue
		}
		switch t.Text {
		case "{":
			open = append(open, t)
		case "}":
			if len(open) == 0 {
				p.errorf(posOf(t), "unexpected '}' with no matching '{'")
				continue
			}
			open = open[:len(open)-1]
		}
	}
	for _, t := range open {
		p.errorf(posOf(t), "'{' is never closed; add the missing '}'")
	}
}

func (p *parser) blocks(blocks []caddyfile.ServerBlock) {
	sites := 0
	for i, b := range blocks {
		switch {
		case b.IsNamedRoute:
			p.errorf(posOf(b.Keys[0]), "named routes &(...) are not supported")
		case len(b.Keys) == 0 && i == 0:
			p.global(b)
		case len(b.Keys) == 0:
			p.errorf(p.blockPos(b), "the global options block { ... } must come first in the file")
		case len(b.Keys) == 1 && b.Keys[0].Text == "}" && !b.Keys[0].Quoted():
			// a stray '}', already reported by checkBraces
		default:
			sites++
			p.site(b)
		}
	}
	if sites == 0 {
		p.errorf(Pos{File: p.file}, `no site blocks; add one such as ":8080 { ... }" holding a "route" block`)
	}
}

// blockPos is where a block without keys starts: its first directive.
func (p *parser) blockPos(b caddyfile.ServerBlock) Pos {
	for _, seg := range b.Segments {
		if len(seg) > 0 {
			return posOf(seg[0])
		}
	}
	return Pos{File: p.file}
}

// directive is one line of a block: a name, its arguments and, if the line
// opened one, the tokens of its block.
type directive struct {
	name     caddyfile.Token
	args     []caddyfile.Token
	hasBlock bool
	block    *caddyfile.Dispenser // positioned just before the block; walk it with NextBlock
}

func (d *directive) pos() Pos { return posOf(d.name) }

// splitDirective reads one segment (a directive line and its block).
func splitDirective(seg caddyfile.Segment) directive {
	d := caddyfile.NewDispenser(seg)
	d.Next()
	dir := directive{name: d.Token(), args: d.RemainingArgsAsTokens()}
	if d.Next() { // the only thing left on a segment is a block
		dir.hasBlock = true
		d.Prev()
	}
	dir.block = d
	return dir
}

// noBlock reports a block after a directive that takes none.
func (p *parser) noBlock(d directive) {
	if d.hasBlock {
		p.errorf(d.pos(), "%s does not take a block { ... }", d.name.Text)
	}
}

// argCount reports a wrong number of arguments; max < 0 means no limit.
func (p *parser) argCount(d directive, usage string, min, max int) bool {
	n := len(d.args)
	switch {
	case n < min:
		p.errorf(d.pos(), "%s: missing argument; usage: %s", d.name.Text, usage)
		return false
	case max >= 0 && n > max:
		p.errorf(d.pos(), "%s: too many arguments; usage: %s", d.name.Text, usage)
		return false
	}
	return true
}

// once reports a directive given twice where only one is allowed.
func (p *parser) once(seen map[string]Pos, d directive) bool {
	if prev, ok := seen[d.name.Text]; ok {
		p.errorf(d.pos(), "%s already set at %s", d.name.Text, prev)
		return false
	}
	seen[d.name.Text] = d.pos()
	return true
}

func (p *parser) site(b caddyfile.ServerBlock) {
	s := &Site{Pos: posOf(b.Keys[0])}
	addrsOK := true
	def := p.siteAddrDefaults(b)
	for _, k := range b.Keys {
		a, err := parseSiteAddress(k.Text, def)
		if err != nil {
			p.errorf(posOf(k), "%v", err)
			addrsOK = false
			continue
		}
		if prev, ok := p.addrs[a]; ok {
			p.errorf(posOf(k), "site address %s is already used at %s", a, prev)
			continue
		}
		p.addrs[a] = posOf(k)
		s.Addresses = append(s.Addresses, a)
	}
	routes := 0
	for _, seg := range b.Segments {
		d := splitDirective(seg)
		if d.name.Text == "tls" {
			p.siteTLS(s, d) // see tls.go
			continue
		}
		if d.name.Text != "route" {
			p.errorf(d.pos(), "%s", unknownName("directive", d.name.Text, " in site", strings.Split(knownSite, ", ")))
			continue
		}
		routes++
		r, st := p.route(d)
		if addrsOK && len(s.Addresses) > 0 {
			p.nameRoute(r, st, s.Addresses[0])
		}
		s.Routes = append(s.Routes, r)
	}
	if routes == 0 {
		p.errorf(s.Pos, "site has no routes; add a \"route\" block with a \"to HOST:PORT\" line in it")
	}
	p.finishSiteTLS(s)
	p.cfg.Sites = append(p.cfg.Sites, s)
}

// routeState is what route parsing tracks beyond the Route itself.
type routeState struct {
	weights       []caddyfile.Token
	weightsPos    Pos
	loadFactorPos Pos
	keyMissingPos Pos
	policyPos     Pos
	firstPattern  string // as written, for the default name
	matchAll      *Pos   // where a "*" path was given
	namePos       Pos    // where `name` was given
	rates         rateState
}

func (p *parser) route(d directive) (*Route, *routeState) {
	r := &Route{
		Pos:                      d.pos(),
		LBRetries:                defaultLBRetries,
		DialTimeout:              defaultDialTimeout,
		ResponseTimeout:          defaultResponseTimeout,
		MaxConnsPerBackend:       defaultMaxConnsPerBackend,
		MaxConnsWait:             defaultMaxConnsWait,
		UpstreamHandshakeTimeout: defaultUpstreamHandshakeTimeout,
		AllowEmptyOrigin:         defaultAllowEmptyOrigin,
		LBPolicy:                 defaultLBPolicy,
		LBKeyMissing:             defaultLBPolicy,
		ClientPing:               Ping{Interval: 30 * time.Second, Timeout: 15 * time.Second},
		TCP:                      keepalive.DefaultTCP(),
		MaxMessage:               [2]int64{64 << 20, 0},
		Passive:                  defaultPassive(),
	}
	st := &routeState{}
	for _, t := range d.args {
		p.addPath(r, st, t)
	}
	seen := map[string]Pos{}
	blk := d.block
	for nesting := blk.Nesting(); blk.NextBlock(nesting); {
		sub := splitDirective(blk.NextSegment())
		if p.routeDirective(r, st, seen, sub) {
			p.noBlock(sub)
		}
	}
	if st.matchAll != nil && len(r.Paths) > 0 {
		p.errorf(*st.matchAll, `path "*" matches every path; remove it or the other path patterns`)
	}
	switch {
	case len(r.Upstreams) == 0 && r.Consul == nil:
		p.errorf(r.Pos, "route has no upstreams; add \"to HOST:PORT\" or \"consul SERVICE\" inside its block")
	case len(r.Upstreams) > 0 && r.Consul != nil:
		p.errorf(r.ConsulPos, "a route takes its backends from \"to\" or from \"consul\", not both")
	case r.DrainWindow > 0 && r.Consul == nil:
		p.errorf(r.Pos, "drain_on_removal applies to routes with \"consul\" backends")
	}
	p.checkBalancing(r, st)
	p.checkRates(r, &st.rates)
	return r, st
}

// routeDirective applies one directive of a route block, from the
// routeDirectives table. It returns true when the directive takes no
// block (so one given is an error); false for one that takes a block, or
// an unknown one (already reported).
func (p *parser) routeDirective(r *Route, st *routeState, seen map[string]Pos, d directive) bool {
	rd, ok := routeDirectives[d.name.Text]
	if !ok {
		p.errorf(d.pos(), "%s", unknownName("directive", d.name.Text, " in route", sortedNames(routeDirectives)))
		return false
	}
	if (rd.repeat || p.once(seen, d)) && p.argCount(d, rd.usage, rd.min, rd.max) {
		rd.parse(p, r, st, d)
	}
	return !rd.block
}

// addPath adds one path pattern of a route.
func (p *parser) addPath(r *Route, st *routeState, t caddyfile.Token) {
	pat := t.Text
	if st.firstPattern == "" {
		st.firstPattern = pat
	}
	if pat == "*" {
		if st.matchAll == nil {
			pos := posOf(t)
			st.matchAll = &pos
		}
		return
	}
	if !strings.HasPrefix(pat, "/") {
		p.errorf(posOf(t), "path %q must start with \"/\" (or be \"*\" for every path)", pat)
		return
	}
	switch n := strings.Count(pat, "*"); {
	case n == 0:
		r.Paths = append(r.Paths, PathMatcher{Kind: PathExact, Pattern: pat})
	case n == 1 && strings.HasSuffix(pat, "*"):
		r.Paths = append(r.Paths, PathMatcher{Kind: PathPrefix, Pattern: strings.TrimSuffix(pat, "*")})
	default:
		if _, err := path.Match(pat, ""); err != nil {
			p.errorf(posOf(t), "path %q is not a valid pattern: %v", pat, err)
			return
		}
		r.Paths = append(r.Paths, PathMatcher{Kind: PathGlob, Pattern: pat})
	}
}

// nameRoute fills the default name and checks that names are unique.
func (p *parser) nameRoute(r *Route, st *routeState, first Address) {
	pos := r.Pos
	if r.Name == "" {
		pat := st.firstPattern
		if pat == "" {
			pat = "*"
		}
		r.Name = first.String() + pat
	} else {
		pos = st.namePos
	}
	if prev, ok := p.names[r.Name]; ok {
		p.errorf(pos, "route name %q already used at %s; set a distinct \"name\"", r.Name, prev)
		return
	}
	p.names[r.Name] = pos
}

// duration parses the single argument of d as a positive Go duration.
func (p *parser) duration(d directive, dst *time.Duration) {
	v, err := time.ParseDuration(d.args[0].Text)
	switch {
	case err != nil:
		p.errorf(d.pos(), "%s %q: want a duration such as 10s or 500ms", d.name.Text, d.args[0].Text)
	case v <= 0:
		p.errorf(d.pos(), "%s %q: must be greater than zero", d.name.Text, d.args[0].Text)
	default:
		*dst = v
	}
}

// parseQuery parses KEY or KEY=VALUE. A VALUE with any of "*?[" is a glob.
func parseQuery(s string) (QueryMatcher, error) {
	key, value, hasValue := strings.Cut(s, "=")
	if key == "" {
		return QueryMatcher{}, fmt.Errorf("%q has no key; want KEY or KEY=VALUE", s)
	}
	switch {
	case !hasValue:
		return QueryMatcher{Key: key, Kind: QueryPresent}, nil
	case strings.ContainsAny(value, "*?["):
		if _, err := path.Match(value, ""); err != nil {
			return QueryMatcher{}, fmt.Errorf("%q: value %q is not a valid pattern: %v", s, value, err)
		}
		return QueryMatcher{Key: key, Kind: QueryGlob, Value: value}, nil
	default:
		return QueryMatcher{Key: key, Kind: QueryEquals, Value: value}, nil
	}
}

// parseSize parses a byte count: a whole number with an optional unit B, KB
// (1000), KiB (1024), MB or MiB, case-insensitive, and checks it lies in
// 1 KiB..1 MiB.
func parseSize(s string) (int, error) {
	n, err := parseBytes(s)
	if err != nil {
		return 0, err
	}
	if n < minMaxHeaderBytes || n > maxMaxHeaderBytes {
		return 0, fmt.Errorf("%q is out of range; must be from 1KiB to 1MiB", s)
	}
	return int(n), nil
}

const maxBytes = 1 << 40 // a sanity bound for any size setting

// parseBytes parses a size such as 16384, 16KiB, 1MiB or 2GiB.
func parseBytes(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.ToLower(s[i:])
	var mult int64
	switch unit {
	case "", "b":
		mult = 1
	case "kb":
		mult = 1000
	case "kib":
		mult = 1 << 10
	case "mb":
		mult = 1000 * 1000
	case "mib":
		mult = 1 << 20
	case "gb":
		mult = 1000 * 1000 * 1000
	case "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("%q: want a size such as 16384, 16KiB or 1MiB (units B, KB, KiB, MB, MiB, GB, GiB)", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || num == "" {
		return 0, fmt.Errorf("%q: want a size such as 16384, 16KiB or 1MiB (units B, KB, KiB, MB, MiB, GB, GiB)", s)
	}
	if err != nil || n > maxBytes/mult {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return n * mult, nil
}

// pingArgs parses `ping_client|ping_backend INTERVAL [TIMEOUT] | off`.
func (p *parser) pingArgs(d directive, dst *Ping) {
	if d.args[0].Text == "off" {
		if len(d.args) > 1 {
			p.errorf(d.pos(), "%s off takes no other argument", d.name.Text)
		}
		*dst = Ping{}
		return
	}
	var vals [2]time.Duration
	for i, t := range d.args {
		v, err := time.ParseDuration(t.Text)
		if err != nil || v <= 0 {
			p.errorf(d.pos(), "%s %q: want a positive duration such as 30s", d.name.Text, t.Text)
			return
		}
		vals[i] = v
	}
	if vals[1] == 0 {
		vals[1] = vals[0]
	}
	*dst = Ping{Interval: vals[0], Timeout: vals[1]}
}

// sizePair parses `NAME FROM_CLIENT [FROM_BACKEND]`; 0 means no limit.
func (p *parser) sizePair(d directive, dst *[2]int64) {
	for i, t := range d.args {
		n, err := parseBytes(t.Text)
		if err != nil {
			p.errorf(d.pos(), "%s: %v", d.name.Text, err)
			return
		}
		dst[i] = n
	}
	if len(d.args) == 1 {
		dst[1] = dst[0]
	}
}

// count parses a non-negative whole number.
func (p *parser) count(d directive, dst *int) {
	n, err := strconv.Atoi(d.args[0].Text)
	if err != nil || n < 0 {
		p.errorf(d.pos(), "%s %q: want a whole number, 0 for no limit", d.name.Text, d.args[0].Text)
		return
	}
	*dst = n
}

// optDuration parses `NAME DURATION | off`.
// offDuration parses a duration where "off" is -1, so that 0 can mean
// "not set" (inherit the global value).
func (p *parser) offDuration(d directive, dst *time.Duration) {
	if d.args[0].Text == "off" {
		*dst = -1
		return
	}
	p.duration(d, dst)
}

// inheritGlobal gives routes the global defaults they did not override.
func (p *parser) inheritGlobal() {
	g := &p.cfg.Global
	for _, st := range p.cfg.Sites {
		for _, r := range st.Routes {
			if r.WriteTimeout == 0 {
				r.WriteTimeout = g.WriteTimeout
			}
		}
	}
}

func (p *parser) optDuration(d directive, dst *time.Duration) {
	if d.args[0].Text == "off" {
		*dst = 0
		return
	}
	p.duration(d, dst)
}

// checkBalancing applies weights and checks options that only fit hash.
func (p *parser) checkBalancing(r *Route, st *routeState) {
	for i := range r.Upstreams {
		r.Upstreams[i].Weight = 1
	}
	if st.weights != nil {
		if len(st.weights) != len(r.Upstreams) {
			p.errorf(st.weightsPos, "weights: %d given for %d upstreams; give one per upstream of \"to\", in order", len(st.weights), len(r.Upstreams))
		} else {
			for i, t := range st.weights {
				w, err := strconv.Atoi(t.Text)
				if err != nil || w < 1 || w > balancer.MaxWeight {
					p.errorf(posOf(t), "weights: %q is not a whole number from 1 to %d", t.Text, balancer.MaxWeight)
					continue
				}
				r.Upstreams[i].Weight = w
			}
		}
	}
	if !balancer.Policies[r.LBPolicy].Keyed {
		if r.LBArgs.LoadFactor != 0 {
			p.errorf(st.loadFactorPos, "lb_load_factor applies to lb_policy %s only", strings.Join(keyedPolicies(), " or "))
		}
		if st.keyMissingPos != (Pos{}) {
			p.errorf(st.keyMissingPos, "lb_key_missing applies to lb_policy %s only", strings.Join(keyedPolicies(), " or "))
		}
	}
}

// parseTrusted parses one trusted_proxies entry: a CIDR, an IP, or
// private_ranges (the loopback, RFC 1918 and unique-local ranges).
func parseTrusted(s string) ([]netip.Prefix, error) {
	if s == "private_ranges" {
		var out []netip.Prefix
		for _, c := range []string{"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"} {
			out = append(out, netip.MustParsePrefix(c))
		}
		return out, nil
	}
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return []netip.Prefix{pfx.Masked()}, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
	}
	return []netip.Prefix{netip.PrefixFrom(ip, ip.BitLen())}, nil
}

// admin parses `admin ADDR [allow_remote]` or `admin off`.
func (p *parser) admin(g *Global, d directive) {
	addr := d.args[0].Text
	if addr == "off" {
		if len(d.args) > 1 || d.hasBlock {
			p.errorf(d.pos(), "admin off takes no other argument or block")
		}
		return
	}
	if len(d.args) == 2 {
		if d.args[1].Text != "allow_remote" {
			p.errorf(d.pos(), "admin: unknown option %q; the only one is allow_remote", d.args[1].Text)
			return
		}
		g.AdminAllowRemote = true
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.errorf(d.pos(), "admin %q: want HOST:PORT, e.g. 127.0.0.1:2019", addr)
		return
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		p.errorf(d.pos(), "admin %q: bad port", addr)
		return
	}
	p.adminPort, p.adminPos = int(n), d.pos()
	ip, err := netip.ParseAddr(host)
	loopback := host == "localhost" || err == nil && ip.IsLoopback()
	if !loopback && !g.AdminAllowRemote {
		p.errorf(d.pos(), "admin %q is not a loopback address: the admin API can reload and inspect the proxy; add allow_remote if you mean it", addr)
		return
	}
	if d.hasBlock {
		blk := d.block
		seen := map[string]Pos{}
		for nesting := blk.Nesting(); blk.NextBlock(nesting); {
			sub := splitDirective(blk.NextSegment())
			if sub.name.Text != "token" {
				p.errorf(sub.pos(), "unknown option %q in admin; known: token", sub.name.Text)
				continue
			}
			if !p.once(seen, sub) {
				continue
			}
			if len(sub.args) == 0 || sub.args[0].Text == "" {
				// {$VAR} of an unset variable leaves no argument at all.
				p.errorf(sub.pos(), "admin token is missing or empty (is the environment variable it names set?)")
				continue
			}
			if p.argCount(sub, "token TOKEN", 1, 1) {
				g.AdminToken = sub.args[0].Text
			}
			p.noBlock(sub)
		}
	}
	if g.AdminAllowRemote && g.AdminToken == "" {
		p.errorf(d.pos(), "admin allow_remote requires a token: admin %s allow_remote { token {$WSPROXY_ADMIN_TOKEN} }", addr)
		return
	}
	g.Admin = addr
}

// tcpKeepalive parses `tcp_keepalive IDLE INTERVAL COUNT | off`.
func (p *parser) tcpKeepalive(r *Route, d directive) {
	if d.args[0].Text == "off" {
		if len(d.args) > 1 {
			p.errorf(d.pos(), "tcp_keepalive off takes no other argument")
		}
		r.TCP.Idle = -1
		return
	}
	if len(d.args) != 3 {
		p.errorf(d.pos(), "tcp_keepalive: usage: tcp_keepalive IDLE INTERVAL COUNT, e.g. 30s 10s 3, or off")
		return
	}
	k := r.TCP
	for i, dst := range []*time.Duration{&k.Idle, &k.Interval} {
		v, err := time.ParseDuration(d.args[i].Text)
		if err != nil || v < time.Second {
			p.errorf(d.pos(), "tcp_keepalive %q: want a duration of at least 1s", d.args[i].Text)
			return
		}
		*dst = v
	}
	n, err := strconv.Atoi(d.args[2].Text)
	if err != nil || n < 1 {
		p.errorf(d.pos(), "tcp_keepalive count %q: want 1 to %d probes", d.args[2].Text, keepalive.MaxCount)
		return
	}
	k.Count = n
	if err := k.Validate(); err != nil { // the kernel's limits, keepalive's rule
		p.errorf(d.pos(), "tcp_keepalive: %v", err)
		return
	}
	r.TCP = k
}

// handshakeRate parses `handshake_rate_per_ip PER_SECOND [BURST]`.
func (p *parser) handshakeRate(g *Global, d directive) {
	rate, err := strconv.ParseFloat(d.args[0].Text, 64)
	if err != nil || !(rate >= 0) || math.IsInf(rate, 1) { // NaN too
		p.errorf(d.pos(), "handshake_rate_per_ip %q: want handshakes per second, e.g. 10 or 0.5; 0 for no limit", d.args[0].Text)
		return
	}
	burst := int(math.Ceil(rate))
	if len(d.args) == 2 {
		if burst, err = strconv.Atoi(d.args[1].Text); err != nil || burst < 1 {
			p.errorf(d.pos(), "handshake_rate_per_ip burst %q: want a whole number of at least 1", d.args[1].Text)
			return
		}
	}
	g.HandshakeRatePerIP, g.HandshakeBurstPerIP = rate, max(burst, 1)
}

// checkAdminPort refuses an admin API on a port the sites listen on (the
// http_port too, with TLS sites): the proxy would open its listeners and
// then fail to start the API, where validate saw nothing wrong.
func (p *parser) checkAdminPort() {
	if p.adminPort == 0 {
		return
	}
	for _, s := range p.cfg.Sites {
		for _, a := range s.Addresses {
			if a.Port == p.adminPort {
				p.errorf(p.adminPos, "admin: port %d is site %s's (at %s); give the admin API a port of its own", a.Port, a, p.addrs[a])
				return
			}
			if a.Scheme == "https" && p.cfg.Global.TLS.HTTPPort == p.adminPort {
				p.errorf(p.adminPos, "admin: port %d is the http_port, which TLS site %s uses (ACME challenges, redirects); give the admin API a port of its own", p.adminPort, a)
				return
			}
		}
	}
}
