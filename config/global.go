package config

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/wsproxy/wsproxy/balancer"
)

// globalDirectives are the options of the global block, by name. An
// option whose parser checks its own arguments (and block) has min -1.
var globalDirectives = map[string]option[*Global]{
	"max_header_bytes": {usage: "max_header_bytes SIZE", min: 1, max: 1, parse: func(p *parser, g *Global, d directive) {
		if n, err := parseSize(d.args[0].Text); err != nil {
			p.errorf(d.pos(), "max_header_bytes: %v", err)
		} else {
			g.MaxHeaderBytes = n
		}
	}},
	"handshake_timeout": durationOption("handshake_timeout DURATION", func(g *Global) *time.Duration { return &g.HandshakeTimeout }),
	"request_body_timeout": {usage: "request_body_timeout DURATION | off", min: 1, max: 1, parse: func(p *parser, g *Global, d directive) {
		p.optDuration(d, &g.RequestBodyTimeout)
	}},
	"log_level": {usage: "log_level debug|info|warn|error", min: 1, max: 1, parse: func(p *parser, g *Global, d directive) {
		switch v := strings.ToLower(d.args[0].Text); v {
		case "debug", "info", "warn", "error":
			g.LogLevel = v
		default:
			p.errorf(d.pos(), "log_level %q: want debug, info, warn or error", d.args[0].Text)
		}
	}},
	"trusted_proxies": {usage: "trusted_proxies CIDR|private_ranges...", min: 1, max: -1, repeat: true, parse: func(p *parser, g *Global, d directive) {
		for _, t := range d.args {
			pfx, err := parseTrusted(t.Text)
			if err != nil {
				p.errorf(posOf(t), "trusted_proxies: %v", err)
				continue
			}
			g.TrustedProxies = append(g.TrustedProxies, pfx...)
		}
	}},
	"client_ip_header": {usage: "client_ip_header X-Forwarded-For|Forwarded", min: 1, max: 1, parse: func(p *parser, g *Global, d directive) {
		switch h := d.args[0].Text; {
		case strings.EqualFold(h, balancer.HeaderXForwardedFor):
			g.ClientIPHeader = balancer.HeaderXForwardedFor
		case strings.EqualFold(h, balancer.HeaderForwarded):
			g.ClientIPHeader = balancer.HeaderForwarded
		default:
			p.errorf(d.pos(), "client_ip_header %q: want X-Forwarded-For or Forwarded", h)
		}
	}},
	"max_connections": {usage: "max_connections N", min: 1, max: 1, parse: func(p *parser, g *Global, d directive) {
		p.count(d, &g.MaxConnections)
	}},
	"max_connections_per_ip": {usage: "max_connections_per_ip N", min: 1, max: 1, parse: func(p *parser, g *Global, d directive) {
		p.count(d, &g.MaxConnectionsPerIP)
	}},
	"handshake_rate_per_ip": {usage: "handshake_rate_per_ip PER_SECOND [BURST]", min: 1, max: 2, parse: func(p *parser, g *Global, d directive) {
		p.handshakeRate(g, d)
	}},
	"access_log": {usage: "access_log stdout|stderr|FILE|off [SAMPLE]", min: 1, max: 2, parse: func(p *parser, g *Global, d directive) {
		g.AccessLog = d.args[0].Text
		if g.AccessLog == "off" {
			g.AccessLog = ""
		}
		if len(d.args) == 2 {
			v, err := strconv.ParseFloat(d.args[1].Text, 64)
			if err != nil || !(v >= 0 && v <= 1) { // NaN too
				p.errorf(d.pos(), "access_log sample %q: want a share from 0 to 1, e.g. 0.1", d.args[1].Text)
			} else {
				g.AccessLogSample = v
			}
		}
	}},
	"write_timeout": {usage: "write_timeout DURATION | off", min: 1, max: 1, parse: func(p *parser, g *Global, d directive) {
		p.offDuration(d, &g.WriteTimeout)
	}},
	"grace_period": durationOption("grace_period DURATION", func(g *Global) *time.Duration { return &g.GracePeriod }),
	"reload_drain": durationOption("reload_drain DURATION", func(g *Global) *time.Duration { return &g.ReloadDrain }),
	"consul": {usage: "consul [ADDR] { ... }", min: 0, max: 1, block: true, parse: func(p *parser, g *Global, d directive) {
		p.consulGlobal(d)
	}},
	"admin": {usage: "admin ADDR [allow_remote] [{ token TOKEN }] | admin off", min: 1, max: 2, block: true, parse: func(p *parser, g *Global, d directive) {
		p.admin(g, d)
	}},

	// Automatic TLS: tls.go.
	"email":          globalTLSDir,
	"acme_ca":        globalTLSDir,
	"acme_ca_root":   globalTLSDir,
	"storage":        globalTLSDir,
	"http_port":      globalTLSDir,
	"https_port":     globalTLSDir,
	"renew_interval": globalTLSDir,
}

// globalTLSDir is the entry of the automatic TLS options: globalTLS
// checks their arguments and storage's block.
var globalTLSDir = option[*Global]{min: -1, block: true, parse: func(p *parser, _ *Global, d directive) { p.globalTLS(d) }}

// global parses the global options block from the globalDirectives table.
func (p *parser) global(b caddyfile.ServerBlock) {
	g := &p.cfg.Global
	seen := map[string]Pos{}
	for _, seg := range b.Segments {
		d := splitDirective(seg)
		gd, ok := globalDirectives[d.name.Text]
		switch {
		case !ok:
			p.errorf(d.pos(), "%s", unknownName("global option", d.name.Text, "", sortedNames(globalDirectives)))
			continue
		case !gd.repeat && !p.once(seen, d):
		case gd.min < 0 || p.argCount(d, gd.usage, gd.min, gd.max):
			gd.parse(p, g, d)
		}
		if !gd.block {
			p.noBlock(d)
		}
	}
}
