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
	seen := map[string]Pos{}
	blk := d.block
	for nesting := blk.Nesting(); d.hasBlock && blk.NextBlock(nesting); {
		sub := splitDirective(blk.NextSegment())
		if sub.name.Text != "register" {
			p.noBlock(sub)
		}
		str := func(dst *string) {
			if p.once(seen, sub) && p.argCount(sub, sub.name.Text+" VALUE", 1, 1) {
				*dst = sub.args[0].Text
			}
		}
		switch sub.name.Text {
		case "address":
			str(&c.Client.Address)
		case "scheme":
			str(&c.Client.Scheme)
			if c.Client.Scheme != "" && c.Client.Scheme != "http" && c.Client.Scheme != "https" {
				p.errorf(sub.pos(), "scheme %q: want http or https", c.Client.Scheme)
			}
		case "token":
			str(&c.Client.Token)
		case "datacenter":
			str(&c.Client.Datacenter)
		case "tls_ca_file":
			str(&c.Client.TLS.CAFile)
		case "tls_cert_file":
			str(&c.Client.TLS.CertFile)
		case "tls_key_file":
			str(&c.Client.TLS.KeyFile)
		case "tls_server_name":
			str(&c.Client.TLS.ServerName)
		case "tls_insecure_skip_verify":
			if p.once(seen, sub) && p.argCount(sub, "tls_insecure_skip_verify", 0, 0) {
				c.Client.TLS.InsecureSkipVerify = true
			}
		case "register":
			if p.once(seen, sub) && p.argCount(sub, "register NAME [TAG...] [{ ... }]", 1, -1) {
				c.Register = sub.args[0].Text
				c.RegisterPos = sub.pos()
				for _, t := range sub.args[1:] {
					c.RegisterTags = append(c.RegisterTags, t.Text)
				}
				p.registerBlock(c, sub)
			}
		default:
			p.errorf(sub.pos(), "%s", unknownName("option", sub.name.Text, " in consul", strings.Split("address, datacenter, register, scheme, tls_ca_file, tls_cert_file, tls_insecure_skip_verify, tls_key_file, tls_server_name, token", ", ")))
		}
	}
	if (c.Client.TLS.CertFile == "") != (c.Client.TLS.KeyFile == "") {
		p.errorf(c.Pos, "consul: tls_cert_file and tls_key_file go together")
	}
	p.cfg.Global.Consul = c
}

// registerBlock parses the options of `register NAME { ... }` and fills
// their defaults.
func (p *parser) registerBlock(c *Consul, d directive) {
	c.CheckInterval, c.CheckTimeout, c.DeregisterAfter = defaultCheckInterval, defaultCheckTimeout, defaultDeregisterAfter
	seen := map[string]Pos{}
	blk := d.block
	for nesting := blk.Nesting(); d.hasBlock && blk.NextBlock(nesting); {
		sub := splitDirective(blk.NextSegment())
		p.noBlock(sub)
		if !p.once(seen, sub) {
			continue
		}
		switch sub.name.Text {
		case "address":
			if p.argCount(sub, "address HOST", 1, 1) {
				c.RegisterAddress = sub.args[0].Text
			}
		case "check_url":
			if p.argCount(sub, "check_url URL", 1, 1) {
				u, err := url.Parse(sub.args[0].Text)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					p.errorf(sub.pos(), "check_url %q: want an http:// or https:// URL", sub.args[0].Text)
					continue
				}
				c.CheckURL = sub.args[0].Text
			}
		case "check_interval":
			if p.argCount(sub, "check_interval DURATION", 1, 1) {
				p.duration(sub, &c.CheckInterval)
			}
		case "check_timeout":
			if p.argCount(sub, "check_timeout DURATION", 1, 1) {
				p.duration(sub, &c.CheckTimeout)
			}
		case "deregister_after":
			if p.argCount(sub, "deregister_after DURATION", 1, 1) {
				p.duration(sub, &c.DeregisterAfter)
				if c.DeregisterAfter < minDeregisterAfter {
					p.errorf(sub.pos(), "deregister_after %s: Consul's minimum is %s (it would use that)", sub.args[0].Text, minDeregisterAfter)
				}
			}
		default:
			p.errorf(sub.pos(), "%s", unknownName("option", sub.name.Text, " in register", strings.Split("address, check_interval, check_timeout, check_url, deregister_after", ", ")))
		}
	}
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
	seen := map[string]Pos{}
	blk := d.block
	for nesting := blk.Nesting(); d.hasBlock && blk.NextBlock(nesting); {
		sub := splitDirective(blk.NextSegment())
		p.noBlock(sub)
		switch sub.name.Text {
		case "tags":
			if p.argCount(sub, "tags TAG...", 1, -1) {
				for _, t := range sub.args {
					cs.Tags = append(cs.Tags, t.Text)
				}
			}
		case "service_meta", "node_meta":
			if !p.argCount(sub, sub.name.Text+" KEY=VALUE...", 1, -1) {
				continue
			}
			dst := &cs.ServiceMeta
			if sub.name.Text == "node_meta" {
				dst = &cs.NodeMeta
			}
			if *dst == nil {
				*dst = map[string]string{}
			}
			for _, t := range sub.args {
				k, v, ok := strings.Cut(t.Text, "=")
				if !ok || k == "" {
					p.errorf(posOf(t), "%s %q: want KEY=VALUE", sub.name.Text, t.Text)
					continue
				}
				(*dst)[k] = v
			}
		case "datacenter":
			if p.once(seen, sub) && p.argCount(sub, "datacenter DC", 1, 1) {
				cs.Datacenter = sub.args[0].Text
			}
		case "weight_meta":
			if p.once(seen, sub) && p.argCount(sub, "weight_meta KEY", 1, 1) {
				cs.WeightMetaKey = sub.args[0].Text
			}
		case "allow_warning":
			if p.once(seen, sub) && p.argCount(sub, "allow_warning", 0, 0) {
				cs.AllowWarning = true
			}
		case "keep_stale_on_empty":
			if p.once(seen, sub) && p.argCount(sub, "keep_stale_on_empty", 0, 0) {
				cs.KeepStaleOnEmpty = true
			}
		default:
			p.errorf(sub.pos(), "%s", unknownName("option", sub.name.Text, " in consul", strings.Split("allow_warning, datacenter, keep_stale_on_empty, node_meta, service_meta, tags, weight_meta", ", ")))
		}
	}
	if err := cs.Validate(); err != nil { // discovery's rules, checked once, here
		p.errorf(d.pos(), "consul: %v", strings.TrimPrefix(err.Error(), "discovery: "))
		return
	}
	r.Consul, r.ConsulPos = cs, d.pos()
}
