package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/discovery"
)

// Defaults and limits of the register block.
const (
	defaultCheckInterval   = 10 * time.Second
	defaultCheckTimeout    = 5 * time.Second
	defaultDeregisterAfter = time.Minute
	// minDeregisterAfter is Consul's floor for
	// DeregisterCriticalServiceAfter (its check_deregister_interval_min,
	// which users cannot change): a shorter value would silently be 1m.
	minDeregisterAfter = time.Minute
)

// Consul is the global `consul { ... }` block: how to reach the agent.
// Empty fields fall back to Consul's usual environment (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, CONSUL_CACERT, ...) and then to its defaults
// (127.0.0.1:8500).
type Consul struct {
	Pos Pos
	// Client is how to reach the agent. Directives: address HOST:PORT,
	// scheme http|https, token TOKEN (an ACL token; use {$ENV} rather
	// than a literal), datacenter DC, tls_ca_file, tls_cert_file,
	// tls_key_file, tls_server_name, tls_insecure_skip_verify.
	Client discovery.ConsulConfig

	// Register, if set, registers the proxy itself as a service of this
	// name (register NAME [TAG...] [{ ... }]) so a fleet of proxies can be
	// found: one instance per site port, with an HTTP health check, kept
	// registered while the proxy runs and deregistered on shutdown.
	Register     string
	RegisterTags []string
	RegisterPos  Pos
	// RegisterAddress is the address clients reach the proxy at. Directive
	// (in the register block): address HOST. Default: the Consul agent's
	// node address.
	RegisterAddress string
	// CheckURL is what Consul's agent GETs to check the proxy. Directive:
	// check_url URL. Default: the admin listener's /health/ready?port=PORT
	// for each registered port; without an admin listener, check_url is
	// required.
	CheckURL string
	// CheckInterval and CheckTimeout of the check. Directives:
	// check_interval, check_timeout. Defaults 10s and 5s.
	CheckInterval, CheckTimeout time.Duration
	// DeregisterAfter has Consul remove an instance whose check has been
	// critical that long (a proxy killed without deregistering). Directive:
	// deregister_after DURATION. Default 1m, Consul's minimum; Consul's
	// reaper runs every 30s, so removal comes up to 30s later.
	DeregisterAfter time.Duration
}

// consulGlobal parses the global consul block.
func (p *parser) consulGlobal(d directive) {
	c := &Consul{Pos: d.pos()}
	if len(d.args) > 0 {
		c.Client.Address = d.args[0].Text
	}
	options(p, d, "consul", consulOptions, c)
	if (c.Client.TLS.CertFile == "") != (c.Client.TLS.KeyFile == "") {
		p.errorf(c.Pos, "consul: tls_cert_file and tls_key_file go together")
	}
	p.cfg.Global.Consul = c
}

// consulOptions are the global consul block's options.
var consulOptions = map[string]option[*Consul]{
	"address": stringOption("address HOST:PORT", func(c *Consul) *string { return &c.Client.Address }),
	"scheme": {usage: "scheme http|https", min: 1, max: 1, parse: func(p *parser, c *Consul, d directive) {
		c.Client.Scheme = d.args[0].Text
		if c.Client.Scheme != "http" && c.Client.Scheme != "https" {
			p.errorf(d.pos(), "scheme %q: want http or https", c.Client.Scheme)
		}
	}},
	"token":                    stringOption("token TOKEN", func(c *Consul) *string { return &c.Client.Token }),
	"datacenter":               stringOption("datacenter DC", func(c *Consul) *string { return &c.Client.Datacenter }),
	"tls_ca_file":              stringOption("tls_ca_file FILE", func(c *Consul) *string { return &c.Client.TLS.CAFile }),
	"tls_cert_file":            stringOption("tls_cert_file FILE", func(c *Consul) *string { return &c.Client.TLS.CertFile }),
	"tls_key_file":             stringOption("tls_key_file FILE", func(c *Consul) *string { return &c.Client.TLS.KeyFile }),
	"tls_server_name":          stringOption("tls_server_name NAME", func(c *Consul) *string { return &c.Client.TLS.ServerName }),
	"tls_insecure_skip_verify": flagOption("tls_insecure_skip_verify", func(c *Consul) *bool { return &c.Client.TLS.InsecureSkipVerify }),
	"register": {usage: "register NAME [TAG...] [{ ... }]", min: 1, max: -1, block: true, parse: func(p *parser, c *Consul, d directive) {
		c.Register = d.args[0].Text
		c.RegisterPos = d.pos()
		for _, t := range d.args[1:] {
			c.RegisterTags = append(c.RegisterTags, t.Text)
		}
		c.CheckInterval, c.CheckTimeout, c.DeregisterAfter = defaultCheckInterval, defaultCheckTimeout, defaultDeregisterAfter
		options(p, d, "register", registerOptions, c)
	}},
}

// registerOptions are the options of `register NAME { ... }`.
var registerOptions = map[string]option[*Consul]{
	"address": stringOption("address HOST", func(c *Consul) *string { return &c.RegisterAddress }),
	"check_url": {usage: "check_url URL", min: 1, max: 1, parse: func(p *parser, c *Consul, d directive) {
		u, err := url.Parse(d.args[0].Text)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.errorf(d.pos(), "check_url %q: want an http:// or https:// URL", d.args[0].Text)
			return
		}
		c.CheckURL = d.args[0].Text
	}},
	"check_interval": durationOption("check_interval DURATION", func(c *Consul) *time.Duration { return &c.CheckInterval }),
	"check_timeout":  durationOption("check_timeout DURATION", func(c *Consul) *time.Duration { return &c.CheckTimeout }),
	"deregister_after": {usage: "deregister_after DURATION", min: 1, max: 1, parse: func(p *parser, c *Consul, d directive) {
		p.duration(d, &c.DeregisterAfter)
		if c.DeregisterAfter < minDeregisterAfter {
			p.errorf(d.pos(), "deregister_after %s: Consul's minimum is %s (it would use that)", d.args[0].Text, minDeregisterAfter)
		}
	}},
}

// checkConsul checks what the consul block needs from the rest of the
// global block, once all of it is read: a registration's health check
// needs the admin listener or a check_url.
func (p *parser) checkConsul() {
	g := &p.cfg.Global
	c := g.Consul
	if c == nil || c.Register == "" || c.CheckURL != "" || g.Admin != "" {
		return
	}
	p.errorf(c.RegisterPos, "register %s: Consul needs a health check of the proxy: set the admin listener (admin 127.0.0.1:2019; its /health/ready is checked) or check_url in a register { ... } block", c.Register)
}

// consulRoute parses a route's `consul SERVICE { ... }`.
func (p *parser) consulRoute(r *Route, d directive) {
	cs := &discovery.Query{Service: d.args[0].Text}
	options(p, d, "consul", consulQueryOptions, cs)
	if err := cs.Validate(); err != nil { // discovery's rules, checked once, here
		p.errorf(d.pos(), "consul: %v", strings.TrimPrefix(err.Error(), "discovery: "))
		return
	}
	r.Consul, r.ConsulPos = cs, d.pos()
}

// consulQueryOptions are the options of a route's consul block.
var consulQueryOptions = map[string]option[*discovery.Query]{
	"tags": {usage: "tags TAG...", min: 1, max: -1, repeat: true, parse: func(_ *parser, q *discovery.Query, d directive) {
		for _, t := range d.args {
			q.Tags = append(q.Tags, t.Text)
		}
	}},
	"service_meta":        metaOption("service_meta", func(q *discovery.Query) *map[string]string { return &q.ServiceMeta }),
	"node_meta":           metaOption("node_meta", func(q *discovery.Query) *map[string]string { return &q.NodeMeta }),
	"datacenter":          stringOption("datacenter DC", func(q *discovery.Query) *string { return &q.Datacenter }),
	"weight_meta":         stringOption("weight_meta KEY", func(q *discovery.Query) *string { return &q.WeightMetaKey }),
	"allow_warning":       flagOption("allow_warning", func(q *discovery.Query) *bool { return &q.AllowWarning }),
	"keep_stale_on_empty": flagOption("keep_stale_on_empty", func(q *discovery.Query) *bool { return &q.KeepStaleOnEmpty }),
}

// metaOption parses `service_meta|node_meta KEY=VALUE...`, which may be
// repeated.
func metaOption(name string, field func(*discovery.Query) *map[string]string) option[*discovery.Query] {
	return option[*discovery.Query]{usage: name + " KEY=VALUE...", min: 1, max: -1, repeat: true, parse: func(p *parser, q *discovery.Query, d directive) {
		dst := field(q)
		if *dst == nil {
			*dst = map[string]string{}
		}
		for _, t := range d.args {
			k, v, ok := strings.Cut(t.Text, "=")
			if !ok || k == "" {
				p.errorf(posOf(t), "%s %q: want KEY=VALUE", d.name.Text, t.Text)
				continue
			}
			(*dst)[k] = v
		}
	}}
}
