package config

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	wstls "github.com/wsproxy/wsproxy/tls"
)

// Default ports of TLSOptions.
const (
	defaultHTTPPort  = 80
	defaultHTTPSPort = 443
)

// TLSOptions are the global options of automatic TLS, shared by every site.
type TLSOptions struct {
	// Email is the ACME account's contact address. Directive: email ADDR.
	// Default none (accepted by Let's Encrypt; recommended so that the CA
	// can warn about expiring certificates).
	Email string
	// CA is the ACME directory URL. Directive: acme_ca URL. Default ""
	// (Let's Encrypt's production directory).
	CA string
	// CARoot is a PEM file of root certificates trusted, besides the
	// system's, when talking to the ACME CA (a private CA). Directive:
	// acme_ca_root FILE. Parse checks that it holds a certificate.
	CARoot string
	// StorageDir holds certificates, keys, ACME accounts, locks and the
	// local CA of `tls internal`; instances sharing it share certificates.
	// Directive: storage DIR (or Caddy's storage file_system DIR and
	// storage file_system { root DIR }). Default "": the tls package's,
	// ${XDG_DATA_HOME:-$HOME/.local/share}/wsproxy.
	StorageDir string
	// StorageConsul keeps all of that in Consul's KV store instead, under
	// StoragePrefix, reached with the global consul block's settings (or
	// Consul's environment without one), so that instances on several
	// machines share it. Directive: storage consul [PREFIX]. Default
	// prefix "wsproxy".
	StorageConsul bool
	StoragePrefix string
	// RenewInterval is how often certificates are checked for renewal
	// (and reloaded when another instance renewed them). Directive:
	// renew_interval DURATION. Default 0: certmagic's, 10 minutes.
	RenewInterval time.Duration
	// HTTPPort is the plain HTTP port: HTTP-01 challenges arrive there and
	// other requests are redirected to https when a site uses ACME or
	// serves TLS on HTTPSPort; http:// addresses without a port listen on
	// it. Directive: http_port N. Default 80.
	HTTPPort int
	// HTTPSPort is the TLS port: addresses without a scheme or port (and
	// https:// ones without a port) listen on it, TLS-ALPN-01 challenges
	// arrive there, and redirects point to it. Directive: https_port N.
	// Default 443.
	HTTPSPort int
}

// SiteTLS is how a site's https addresses get their certificates: its
// `tls` directive, or automatic ACME without one.
//
//	tls internal                   ModeInternal
//	tls CERT_FILE KEY_FILE         ModeFiles
//	tls [EMAIL] [{                 ModeACME (ModeOnDemand with on_demand)
//		ca URL                     this site's ACME directory (acme_ca)
//		ca_root FILE               and its root (acme_ca_root)
//		on_demand                  obtain at the first handshake ...
//		ask URL                    ... for names this URL approves (200)
//		rate_limit N INTERVAL      at most N new certificates per INTERVAL
//	}]
type SiteTLS struct {
	// Pos is the `tls` directive's place, or the site's without one.
	Pos Pos
	// Policy is what the tls package does for the site. Parse reads a
	// ModeFiles pair and checks that it matches (a reload parses again);
	// Email, CA and CARoot left empty mean the global options; a zero
	// RateLimit, the tls package's default.
	wstls.Policy
}

// addrDefaults are the rules for a site address's scheme and port. An
// address is TLS (scheme "https") when it says https://, when it has
// neither scheme nor port (a name, as in Caddy), or when it has no scheme
// and its port is HTTPS's or its site has a tls directive; a port-less
// address gets HTTP's or HTTPS's port.
type addrDefaults struct {
	httpPort, httpsPort int
	tls                 bool // the site has a tls directive
}

func (d addrDefaults) isTLS(scheme string, port int) bool {
	switch {
	case scheme != "":
		return scheme == "https"
	case port == 0:
		return true
	case port == d.httpPort:
		return false
	}
	return d.tls || port == d.httpsPort
}

// siteAddrDefaults returns the address rules of site block b.
func (p *parser) siteAddrDefaults(b caddyfile.ServerBlock) addrDefaults {
	d := addrDefaults{httpPort: p.cfg.Global.TLS.HTTPPort, httpsPort: p.cfg.Global.TLS.HTTPSPort}
	for _, seg := range b.Segments {
		if len(seg) > 0 && seg[0].Text == "tls" {
			d.tls = true
		}
	}
	return d
}

// globalTLS parses one global option of automatic TLS (email, acme_ca,
// acme_ca_root, storage, http_port, https_port, renew_interval); it reports a block
// where none is allowed itself.
func (p *parser) globalTLS(d directive) {
	o := &p.cfg.Global.TLS
	if d.name.Text != "storage" {
		p.noBlock(d)
	}
	switch d.name.Text {
	case "email":
		if p.argCount(d, "email ADDRESS", 1, 1) {
			if err := checkEmail(d.args[0].Text); err != nil {
				p.errorf(d.pos(), "email: %v", err)
				return
			}
			o.Email = d.args[0].Text
		}
	case "acme_ca":
		if p.argCount(d, "acme_ca DIRECTORY_URL", 1, 1) {
			if err := checkURL(d.args[0].Text); err != nil {
				p.errorf(d.pos(), "acme_ca: %v", err)
				return
			}
			o.CA = d.args[0].Text
		}
	case "acme_ca_root":
		if p.argCount(d, "acme_ca_root PEM_FILE", 1, 1) {
			if err := checkRootFile(d.args[0].Text); err != nil {
				p.errorf(d.pos(), "acme_ca_root: %v", err)
				return
			}
			o.CARoot = d.args[0].Text
		}
	case "storage":
		p.storage(o, d)
	case "renew_interval":
		if p.argCount(d, "renew_interval DURATION", 1, 1) {
			p.duration(d, &o.RenewInterval)
		}
	case "http_port", "https_port":
		if !p.argCount(d, d.name.Text+" PORT", 1, 1) {
			return
		}
		n, err := parsePort(d.args[0].Text)
		if err != nil {
			p.errorf(d.pos(), "%s: %v", d.name.Text, err)
			return
		}
		dst, other, otherName := &o.HTTPPort, o.HTTPSPort, "https_port"
		if d.name.Text == "https_port" {
			dst, other, otherName = &o.HTTPSPort, o.HTTPPort, "http_port"
		}
		if n == other {
			p.errorf(d.pos(), "%s %d is also the %s; plain HTTP and TLS need a port each", d.name.Text, n, otherName)
			return
		}
		*dst = n
	}
}

// storage parses `storage DIR`, `storage file_system DIR`,
// `storage file_system { root DIR }` or `storage consul [PREFIX]`.
func (p *parser) storage(o *TLSOptions, d directive) {
	const usage = "storage DIR | storage file_system { root DIR } | storage consul [PREFIX]"
	if !p.argCount(d, usage, 1, 2) {
		return
	}
	dir := ""
	switch {
	case d.args[0].Text == "consul":
		p.noBlock(d)
		o.StorageConsul, o.StoragePrefix = true, "wsproxy"
		if len(d.args) == 2 {
			o.StoragePrefix = strings.Trim(d.args[1].Text, "/")
			if o.StoragePrefix == "" || strings.ContainsAny(o.StoragePrefix, " \t") {
				p.errorf(d.pos(), "storage consul %q: want a KV path such as wsproxy or edge/certs", d.args[1].Text)
			}
		}
		return
	case len(d.args) == 2 && d.args[0].Text == "file_system":
		p.noBlock(d)
		dir = d.args[1].Text
	case len(d.args) == 2:
		p.errorf(d.pos(), "storage %q: the storages are file_system and consul; usage: %s", d.args[0].Text, usage)
		return
	case d.args[0].Text == "file_system" && d.hasBlock:
		blk := d.block
		for nesting := blk.Nesting(); blk.NextBlock(nesting); {
			sub := splitDirective(blk.NextSegment())
			if sub.name.Text != "root" {
				p.errorf(sub.pos(), "unknown storage option %q; the only one is root", sub.name.Text)
				continue
			}
			p.noBlock(sub)
			if p.argCount(sub, "root DIR", 1, 1) {
				dir = sub.args[0].Text
			}
		}
		if dir == "" {
			p.errorf(d.pos(), "storage file_system: missing root DIR; usage: %s", usage)
			return
		}
	default:
		p.noBlock(d)
		dir = d.args[0].Text
	}
	if dir == "" {
		p.errorf(d.pos(), "storage: empty directory")
		return
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		p.errorf(d.pos(), "storage %s is a file, not a directory", dir)
		return
	}
	o.StorageDir = dir
}

// siteTLS parses a site's `tls` directive.
func (p *parser) siteTLS(s *Site, d directive) {
	if s.TLS != nil {
		p.errorf(d.pos(), "tls already set at %s", s.TLS.Pos)
		return
	}
	st := &SiteTLS{Pos: d.pos()}
	s.TLS = st
	const usage = "tls internal | tls CERT_FILE KEY_FILE | tls [EMAIL] [{ on_demand; ask URL; rate_limit N INTERVAL; ca URL; ca_root FILE }]"
	switch args := d.args; {
	case len(args) == 0:
	case len(args) == 1 && args[0].Text == "internal":
		st.Mode = wstls.ModeInternal
	case len(args) == 1 && strings.Contains(args[0].Text, "@"):
		if err := checkEmail(args[0].Text); err != nil {
			p.errorf(d.pos(), "tls: %v", err)
		}
		st.Email = args[0].Text
	case len(args) == 1:
		p.errorf(d.pos(), "tls %q: want internal, an email address or CERT_FILE KEY_FILE; usage: %s", args[0].Text, usage)
	case len(args) == 2:
		st.Mode = wstls.ModeFiles
		st.CertFile, st.KeyFile = args[0].Text, args[1].Text
		if err := checkKeyPair(st.CertFile, st.KeyFile); err != nil {
			p.errorf(d.pos(), "tls: %v", err)
		}
	default:
		p.errorf(d.pos(), "tls: too many arguments; usage: %s", usage)
	}
	if d.hasBlock {
		p.siteTLSBlock(st, d)
	}

	https := false
	for _, a := range s.Addresses {
		https = https || a.Scheme == "https"
	}
	if len(s.Addresses) > 0 && !https {
		p.errorf(d.pos(), "tls: the site has no TLS address (its http:// addresses, and those on http_port, are served plain)")
	}
}

// siteTLSBlock parses the options block of `tls [EMAIL] { ... }`.
func (p *parser) siteTLSBlock(st *SiteTLS, d directive) {
	if st.Mode != wstls.ModeACME {
		p.errorf(d.pos(), "tls %s takes no block; its options are for ACME certificates", st.Mode)
		return
	}
	ts := &siteTLSState{st: st}
	options(p, d, "tls", siteTLSOptions, ts)
	onDemand, askPos, ratePos := ts.onDemand, ts.askPos, ts.ratePos
	switch {
	case onDemand:
		st.Mode = wstls.ModeOnDemand
		if askPos == (Pos{}) {
			p.errorf(d.pos(), "tls on_demand needs \"ask URL\": an endpoint that approves names, so that no client can make the proxy request certificates for any name")
		}
	case askPos != (Pos{}):
		p.errorf(askPos, "ask applies to on_demand only; add on_demand")
	case ratePos != (Pos{}):
		p.errorf(ratePos, "rate_limit applies to on_demand only; add on_demand")
	}
}

// siteTLSState is what the options of a site's tls block fill in.
type siteTLSState struct {
	st              *SiteTLS
	onDemand        bool
	askPos, ratePos Pos
}

// siteTLSOptions are the options of `tls [EMAIL] { ... }`.
var siteTLSOptions = map[string]option[*siteTLSState]{
	"on_demand": flagOption("on_demand", func(ts *siteTLSState) *bool { return &ts.onDemand }),
	"ask": {usage: "ask URL", min: 1, max: 1, parse: func(p *parser, ts *siteTLSState, d directive) {
		ts.askPos = d.pos()
		if err := checkURL(d.args[0].Text); err != nil {
			p.errorf(d.pos(), "ask: %v", err)
			return
		}
		ts.st.Ask = d.args[0].Text
	}},
	"rate_limit": {usage: "rate_limit N INTERVAL", min: 2, max: 2, parse: func(p *parser, ts *siteTLSState, d directive) {
		ts.ratePos = d.pos()
		n, err := strconv.Atoi(d.args[0].Text)
		if err != nil || n < 1 {
			p.errorf(d.pos(), "rate_limit %q: want a whole number of certificates of at least 1", d.args[0].Text)
			return
		}
		iv, err := time.ParseDuration(d.args[1].Text)
		if err != nil || iv <= 0 {
			p.errorf(d.pos(), "rate_limit interval %q: want a positive duration such as 1m", d.args[1].Text)
			return
		}
		ts.st.RateLimit = wstls.RateLimit{Burst: n, Interval: iv}
	}},
	"ca": {usage: "ca DIRECTORY_URL", min: 1, max: 1, parse: func(p *parser, ts *siteTLSState, d directive) {
		if err := checkURL(d.args[0].Text); err != nil {
			p.errorf(d.pos(), "ca: %v", err)
			return
		}
		ts.st.CA = d.args[0].Text
	}},
	"ca_root": {usage: "ca_root PEM_FILE", min: 1, max: 1, parse: func(p *parser, ts *siteTLSState, d directive) {
		if err := checkRootFile(d.args[0].Text); err != nil {
			p.errorf(d.pos(), "ca_root: %v", err)
			return
		}
		ts.st.CARoot = d.args[0].Text
	}},
}

// finishSiteTLS gives a site with TLS addresses and no tls directive
// automatic ACME.
func (p *parser) finishSiteTLS(s *Site) {
	if s.TLS != nil {
		return
	}
	for _, a := range s.Addresses {
		if a.Scheme == "https" {
			s.TLS = &SiteTLS{Pos: s.Pos} // ACME: the zero Mode
			return
		}
	}
}

// checkTLSPorts refuses a port that would serve both TLS and plain HTTP,
// and TLS on the HTTP port.
func (p *parser) checkTLSPorts() {
	httpPort := p.cfg.Global.TLS.HTTPPort
	type use struct {
		scheme string
		addr   Address
	}
	first := map[int]use{}
	for _, s := range p.cfg.Sites {
		for _, a := range s.Addresses {
			pos := p.addrs[a]
			if a.Scheme == "https" && a.Port == httpPort {
				p.errorf(pos, "site address %s: port %d is the http_port (ACME challenges, redirects to https); use another port or set http_port", a, a.Port)
				continue
			}
			u, ok := first[a.Port]
			if !ok {
				first[a.Port] = use{a.Scheme, a}
				continue
			}
			if u.scheme != a.Scheme {
				p.errorf(pos, "site address %s: port %d is already %s for %s at %s; a port serves either TLS or plain HTTP",
					a, a.Port, schemeWord(u.scheme), u.addr, p.addrs[u.addr])
			}
		}
	}
}

func schemeWord(scheme string) string {
	if scheme == "https" {
		return "TLS"
	}
	return "plain HTTP"
}

// checkKeyPair reads a certificate and key file and checks that they form
// a pair.
func checkKeyPair(certFile, keyFile string) error {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return fmt.Errorf("certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if _, err := cryptotls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return nil
}

// checkRootFile checks that a file holds at least one PEM certificate.
func checkRootFile(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("%s holds no PEM certificate", file)
	}
	return nil
}

// checkURL accepts an absolute http:// or https:// URL with a host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: want an http:// or https:// URL with a host", s)
	}
	return nil
}

// checkEmail accepts local@domain without spaces.
func checkEmail(s string) error {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || domain == "" || strings.ContainsAny(s, " \t<>") || strings.Contains(domain, "@") {
		return fmt.Errorf("%q is not an email address", s)
	}
	return nil
}
