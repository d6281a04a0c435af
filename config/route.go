package config

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/upgrade"
)

// routeDir is one directive of a route block: its usage, which errors
// show and which gives its argument count, and its parser. The parser
// runs only when the count is right (and, unless repeat, the directive is
// not given twice); it reports its own errors at the directive's
// file:line. A new route directive is a Route field, an entry here and
// what reads the field.
type routeDir struct {
	usage    string
	min, max int  // argument count; max -1: any
	repeat   bool // may be given more than once; the arguments add up
	block    bool // takes a block
	parse    func(p *parser, r *Route, st *routeState, d directive)
}

// routeDirectives are the directives of a route block, by name.
var routeDirectives = map[string]routeDir{
	"name": {usage: "name NAME", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		if d.args[0].Text == "" {
			p.errorf(d.pos(), "name: empty route name")
			return
		}
		r.Name = d.args[0].Text
		st.namePos = d.pos()
	}},
	"path": {usage: "path PATTERN...", min: 1, max: -1, repeat: true, parse: func(p *parser, r *Route, st *routeState, d directive) {
		for _, t := range d.args {
			p.addPath(r, st, t)
		}
	}},
	"query": {usage: "query KEY[=VALUE]...", min: 1, max: -1, repeat: true, parse: func(p *parser, r *Route, st *routeState, d directive) {
		for _, t := range d.args {
			q, err := parseQuery(t.Text)
			if err != nil {
				p.errorf(posOf(t), "query: %v", err)
				continue
			}
			r.Query = append(r.Query, q)
		}
	}},
	"to": {usage: "to ADDR...", min: 1, max: -1, repeat: true, parse: func(p *parser, r *Route, st *routeState, d directive) {
		for _, t := range d.args {
			addr, err := parseUpstream(t.Text)
			if err != nil {
				p.errorf(posOf(t), "to: %v", err)
				continue
			}
			if i := slices.IndexFunc(r.Upstreams, func(u Upstream) bool { return u.Addr == addr }); i >= 0 {
				// A second entry would not be a second backend: weights
				// would pair with the wrong upstreams, and counts and
				// health would be shared under one address.
				p.errorf(posOf(t), "to: upstream %q is already listed at %s; use weights to give it more traffic", t.Text, r.Upstreams[i].Pos)
				continue
			}
			r.Upstreams = append(r.Upstreams, Upstream{Pos: posOf(t), Addr: addr})
		}
	}},
	"lb_retries": {usage: "lb_retries N", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		n, err := strconv.Atoi(d.args[0].Text)
		if err != nil || n < 0 || n > maxLBRetries {
			p.errorf(d.pos(), "lb_retries %q: want a whole number from 0 to %d", d.args[0].Text, maxLBRetries)
			return
		}
		r.LBRetries = n
	}},
	"dial_timeout": {usage: "dial_timeout DURATION", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.duration(d, &r.DialTimeout)
	}},
	"response_timeout": {usage: "response_timeout DURATION | off", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.optDuration(d, &r.ResponseTimeout)
	}},
	"max_conns_per_backend": {usage: "max_conns_per_backend N [WAIT]", min: 1, max: 2, parse: func(p *parser, r *Route, st *routeState, d directive) {
		n, err := strconv.Atoi(d.args[0].Text)
		if err != nil || n < 1 {
			p.errorf(d.pos(), "max_conns_per_backend %q: want a whole number of at least 1", d.args[0].Text)
			return
		}
		r.MaxConnsPerBackend = n
		if len(d.args) == 2 {
			v, err := time.ParseDuration(d.args[1].Text)
			if err != nil || v < 0 {
				p.errorf(d.pos(), "max_conns_per_backend wait %q: want a duration such as 30s, or 0 to answer 503 at once", d.args[1].Text)
				return
			}
			r.MaxConnsWait = v
		}
	}},
	"upstream_handshake_timeout": {usage: "upstream_handshake_timeout DURATION", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.duration(d, &r.UpstreamHandshakeTimeout)
	}},
	"origins": {usage: "origins PATTERN...", min: 1, max: -1, repeat: true, parse: func(p *parser, r *Route, st *routeState, d directive) {
		// upgrade owns the Origin rules (it matches them at run time):
		// each pattern is checked by them here, at its own line.
		for _, t := range d.args {
			if err := upgrade.CheckOrigin(t.Text); err != nil {
				p.errorf(posOf(t), "origins: %v", err)
				continue
			}
			r.Origins = append(r.Origins, strings.ToLower(t.Text))
		}
	}},
	"allow_encoded_slash": {usage: "allow_encoded_slash [true|false]", min: 0, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		r.AllowEncodedSlash = true
		if len(d.args) == 1 {
			p.boolean(d, &r.AllowEncodedSlash)
		}
	}},
	"allow_empty_origin": {usage: "allow_empty_origin true|false", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.boolean(d, &r.AllowEmptyOrigin)
	}},
	"lb_policy": {usage: "lb_policy " + policyUsage(), min: 1, max: -1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.lbPolicy(r, st, d)
	}},
	"lb_load_factor": {usage: "lb_load_factor C", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		c, err := strconv.ParseFloat(d.args[0].Text, 64)
		if err != nil || !(c == 0 || c >= 1 && c <= balancer.MaxLoadFactor) {
			p.errorf(d.pos(), "lb_load_factor %q: want 0 (off) or a number from 1 to %d, e.g. 1.25", d.args[0].Text, balancer.MaxLoadFactor)
			return
		}
		r.LBArgs.LoadFactor = c
		st.loadFactorPos = d.pos()
	}},
	"lb_key_missing": {usage: "lb_key_missing reject|" + strings.Join(balancer.PolicyNames(false), "|"), min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		v := d.args[0].Text
		if k, ok := balancer.Policies[v]; v != "reject" && (!ok || k.Keyed) {
			known := append([]string{"reject"}, balancer.PolicyNames(false)...)
			p.errorf(d.pos(), "lb_key_missing %q: want %s (%s)", v, strings.Join(known, ", "), unknownName("fallback", v, "", known))
			return
		}
		r.LBKeyMissing = v
		st.keyMissingPos = d.pos()
	}},
	"ping_client": {usage: "ping_client INTERVAL [TIMEOUT] | off", min: 1, max: 2, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.pingArgs(d, &r.ClientPing)
	}},
	"ping_backend": {usage: "ping_backend INTERVAL [TIMEOUT] | off", min: 1, max: 2, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.pingArgs(d, &r.BackendPing)
	}},
	"tcp_keepalive": {usage: "tcp_keepalive IDLE INTERVAL COUNT | off", min: 1, max: 3, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.tcpKeepalive(r, d)
	}},
	"tcp_user_timeout": {usage: "tcp_user_timeout DURATION | off", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		if d.args[0].Text == "off" {
			r.TCP.UserTimeout = -1
			return
		}
		k := r.TCP
		p.duration(d, &k.UserTimeout)
		if err := k.Validate(); err != nil {
			p.errorf(d.pos(), "tcp_user_timeout: %v", err)
			return
		}
		r.TCP = k
	}},
	"write_timeout": {usage: "write_timeout DURATION | off", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.offDuration(d, &r.WriteTimeout)
	}},
	"idle_timeout": {usage: "idle_timeout DURATION | off", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.optDuration(d, &r.IdleTimeout)
	}},
	"max_lifetime": {usage: "max_lifetime DURATION | off", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.optDuration(d, &r.MaxLifetime)
	}},
	"max_frame_size": {usage: "max_frame_size FROM_CLIENT [FROM_BACKEND]", min: 1, max: 2, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.sizePair(d, &r.MaxFrame)
	}},
	"max_message_size": {usage: "max_message_size FROM_CLIENT [FROM_BACKEND]", min: 1, max: 2, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.sizePair(d, &r.MaxMessage)
	}},
	"max_connections": {usage: "max_connections N", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.count(d, &r.MaxConnections)
	}},
	"max_message_rate": {usage: "max_message_rate FROM_CLIENT [FROM_BACKEND] [burst N [N]] [close|pause]", min: 1, max: 6, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.messageRate(r, &st.rates, d, &r.MessageRate)
	}},
	"max_message_rate_per_key": {usage: "max_message_rate_per_key FROM_CLIENT [FROM_BACKEND] [burst N [N]] [close|pause]", min: 1, max: 6, parse: func(p *parser, r *Route, st *routeState, d directive) {
		st.rates.perKeyPos = d.pos()
		p.messageRate(r, &st.rates, d, &r.MessageRatePerKey)
	}},
	"handshake_rate": {usage: "handshake_rate N/DURATION [BURST] | off", min: 1, max: 2, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.handshakeRateRoute(r, d)
	}},
	"consul": {usage: "consul SERVICE { ... }", min: 1, max: 1, block: true, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.consulRoute(r, d)
	}},
	"drain_on_removal": {usage: "drain_on_removal DURATION", min: 1, max: 1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		p.duration(d, &r.DrainWindow)
	}},
	"weights": {usage: "weights N... (one per upstream of \"to\", in order)", min: 1, max: -1, parse: func(p *parser, r *Route, st *routeState, d directive) {
		st.weights = d.args
		st.weightsPos = d.pos()
	}},

	// Active and passive health: health.go.
	"health_uri":          {usage: "health_uri PATH", min: 1, max: 1, parse: healthPath},
	"health_websocket":    {usage: "health_websocket PATH", min: 1, max: 1, parse: healthPath},
	"health_status":       {usage: "health_status CODE", min: 1, max: 1, parse: healthStatus},
	"health_interval":     {usage: "health_interval DURATION", min: 1, max: 1, parse: healthDuration},
	"health_timeout":      {usage: "health_timeout DURATION", min: 1, max: 1, parse: healthDuration},
	"health_passes":       {usage: "health_passes N", min: 1, max: 1, parse: healthCount},
	"health_fails":        {usage: "health_fails N", min: 1, max: 1, parse: healthCount},
	"max_fails":           {usage: "max_fails N", min: 1, max: 1, parse: passiveCount},
	"fail_window":         {usage: "fail_window DURATION", min: 1, max: 1, parse: passiveDuration},
	"eject_duration":      {usage: "eject_duration DURATION", min: 1, max: 1, parse: passiveDuration},
	"max_ejected_percent": {usage: "max_ejected_percent N", min: 1, max: 1, parse: passiveCount},
}

// boolean parses a true|false argument.
func (p *parser) boolean(d directive, dst *bool) {
	switch d.args[0].Text {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		p.errorf(d.pos(), "%s %q: want true or false", d.name.Text, d.args[0].Text)
	}
}

// policyUsage is lb_policy's usage, from balancer.Policies.
func policyUsage() string {
	var alts []string
	for _, name := range balancer.PolicyNames(true) {
		alts = append(alts, strings.TrimSpace(name+" "+balancer.Policies[name].Usage))
	}
	return strings.Join(alts, " | ")
}

// lbPolicy parses `lb_policy NAME [ARG...]` with the policy's own
// argument parser (balancer.Policies).
func (p *parser) lbPolicy(r *Route, st *routeState, d directive) {
	st.policyPos = d.pos()
	name := d.args[0].Text
	kind, ok := balancer.Policies[name]
	if !ok {
		p.errorf(d.pos(), "lb_policy: %s", unknownName("policy", name, "", balancer.PolicyNames(true)))
		return
	}
	args := make([]string, len(d.args)-1)
	for i, t := range d.args[1:] {
		args[i] = t.Text
	}
	a, errs := kind.Parse(args)
	for _, err := range errs {
		pos := d.pos()
		if err.Index >= 0 {
			pos = posOf(d.args[1+err.Index])
		}
		p.errorf(pos, "lb_policy %s: %v", name, err.Err)
	}
	if len(errs) > 0 {
		return
	}
	if a.LoadFactor == 0 { // lb_load_factor may have come first
		a.LoadFactor = r.LBArgs.LoadFactor
	}
	r.LBPolicy, r.LBArgs = name, a
}

// keyedPolicies are the policies that hash a key.
func keyedPolicies() []string {
	var out []string
	for _, name := range balancer.PolicyNames(true) {
		if balancer.Policies[name].Keyed {
			out = append(out, name)
		}
	}
	return out
}
