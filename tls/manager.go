// Package tls gives wsproxy's listeners their certificates: obtained over ACME
// and renewed in the background, issued by a local CA (`tls internal`), read
// from files, or obtained on demand at the first handshake. It is built on
// certmagic; importers alias crypto/tls.
//
// A Manager serves one runtime configuration. A reload builds a new Manager
// over the same storage (so certificates, ACME accounts and locks carry over
// and files are read again), starts it, swaps it in, and stops the old one.
// The storage is a directory, or any certmagic.Storage such as the Consul
// KV store of package consulstore, which a fleet of instances shares.
//
// The proxy owns the listeners. Its TLS listener uses TLSConfig, which also
// answers TLS-ALPN-01 challenges; its plain HTTP listener calls
// HandleHTTPChallenge (or uses HTTPRedirect). Listeners should be accepting
// before Start, which may need the CA to reach them.
package tls

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// acmeTLS1 is the ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// Manager holds the certificates of one configuration. Its methods are safe
// for concurrent use.
type Manager struct {
	g       Global
	log     *slog.Logger
	storage certmagic.Storage
	cache   *certmagic.Cache
	// base answers ACME challenges begun by any Manager of this process or
	// by any instance sharing the storage, and is the config of last resort
	// for certificates no site claims.
	base    *certmagic.Config
	baseIss *certmagic.ACMEIssuer
	ca      *localCA // nil without a ModeInternal site

	sites   []*site
	exact   map[string]*site
	wild    map[string]*site // "*.example.com" under "example.com"
	anyHost *site

	tlsConf   *cryptotls.Config
	askClient *http.Client

	mu       sync.Mutex
	started  bool
	stopped  bool
	approved map[string]struct{} // names on-demand sites were allowed to serve
}

// site is one Site, compiled.
type site struct {
	index  int
	label  string
	names  []string
	policy Policy
	cfg    *certmagic.Config

	// ModeFiles
	tag             string // certmagic cache tag of the site's certificate
	certPEM, keyPEM []byte
	leaf            *x509.Certificate
	fileNames       []string // the certificate's names

	// ModeOnDemand
	limiter *limiter
}

// New validates sites and builds their certificate management. It does no
// network I/O and takes no certificate yet (Start does); it reads certificate
// files and CA roots, so that a reload reads them again. Errors about one
// site are *SiteError values.
func New(g Global, sites []Site) (*Manager, error) {
	m, roots, err := prepare(g, sites)
	if err != nil {
		return nil, err
	}
	g = m.g

	zl := newZapLogger(g.Logger)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   m.configForCert,
		RenewCheckInterval: g.RenewInterval,
		Logger:             zl,
	})
	m.base = certmagic.New(m.cache, certmagic.Config{Storage: m.storage, Logger: zl})
	m.baseIss = m.newACMEIssuer(m.base, g.Email, g.CA, roots[g.CARoot], zl)
	m.base.Issuers = []certmagic.Issuer{m.baseIss}
	issuerKeys := map[string]bool{m.baseIss.IssuerKey(): true}

	for _, s := range m.sites {
		s.cfg = certmagic.New(m.cache, certmagic.Config{
			Storage: m.storage,
			Logger:  zl.With(zap.String("site", s.label)),
		})
		switch s.policy.Mode {
		case ModeACME, ModeOnDemand:
			email, ca, caRoot := m.acmeSettings(s.policy)
			iss := m.newACMEIssuer(s.cfg, email, ca, roots[caRoot], zl)
			if email == "" {
				// certmagic asks for an email on stdin when it obtains
				// interactively (ManageSync) and has none: a server must not.
				s.cfg.Issuers = []certmagic.Issuer{noPromptIssuer{iss}}
			} else {
				s.cfg.Issuers = []certmagic.Issuer{iss}
			}
			// The base config looks for other instances' challenge
			// tokens under every CA in use.
			if !issuerKeys[iss.IssuerKey()] {
				issuerKeys[iss.IssuerKey()] = true
				m.base.Issuers = append(m.base.Issuers, iss)
			}
			if s.policy.Mode == ModeOnDemand {
				s.cfg.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: m.decide(s)}
				s.cfg.OnEvent = s.onEvent
				s.cfg.ShouldEmitFunc = func(event string) bool { return event == "cert_obtaining" }
			}
		case ModeInternal:
			if m.ca == nil {
				m.ca = newLocalCA(m.storage)
			}
			s.cfg.Issuers = []certmagic.Issuer{m.ca}
		case ModeFiles:
			// Never issues: the certificate is cached unmanaged at Start.
			s.cfg.Issuers = []certmagic.Issuer{m.baseIss}
			s.cfg.CertSelection = tagSelector(s.tag)
		}
	}

	m.tlsConf = &cryptotls.Config{
		MinVersion:     cryptotls.VersionTLS12,
		NextProtos:     []string{"http/1.1", acmeTLS1},
		GetCertificate: m.getCertificate,
	}
	return m, nil
}

// Validate reports the errors New would report for g and sites, and
// builds nothing that runs: no certificate cache (which owns a goroutine
// from its birth), no storage. Like New it reads certificate files and CA
// roots, and closes them.
func Validate(g Global, sites []Site) error {
	_, _, err := prepare(g, sites)
	return err
}

// prepare fills g's defaults and checks g and sites, compiling each site,
// before any certmagic value exists: New builds on its result, Validate
// stops there.
func prepare(g Global, sites []Site) (*Manager, map[string]*x509.CertPool, error) {
	if g.Logger == nil {
		g.Logger = slog.Default()
	}
	if g.StorageDir == "" && g.Storage == nil {
		dir, err := defaultStorageDir()
		if err != nil {
			return nil, nil, err
		}
		g.StorageDir = dir
	}
	if g.HTTPPort == 0 {
		g.HTTPPort = 80
	}
	if g.HTTPSPort == 0 {
		g.HTTPSPort = 443
	}
	for _, p := range []int{g.HTTPPort, g.HTTPSPort} {
		if p < 0 || p > 65535 {
			return nil, nil, fmt.Errorf("tls: port %d out of range", p)
		}
	}

	m := &Manager{
		g:         g,
		log:       g.Logger.With("component", "tls"),
		storage:   g.Storage,
		exact:     make(map[string]*site),
		wild:      make(map[string]*site),
		askClient: &http.Client{Timeout: 10 * time.Second},
		approved:  make(map[string]struct{}),
	}
	if m.storage == nil {
		m.storage = &certmagic.FileStorage{Path: g.StorageDir}
	}
	if g.RenewInterval < 0 {
		return nil, nil, fmt.Errorf("tls: renew interval %v is negative", g.RenewInterval)
	}

	// Validate everything before building certmagic values: a cache owns a
	// goroutine from its birth.
	roots := make(map[string]*x509.CertPool)
	for i, s := range sites {
		cs, err := m.compile(i, s, roots)
		if err != nil {
			names := make([]string, len(s.Names))
			for j, n := range s.Names {
				names[j] = normalizeName(n)
			}
			return nil, nil, &SiteError{Index: i, Site: siteLabel(names), Err: err}
		}
		m.sites = append(m.sites, cs)
	}
	return m, roots, nil
}

// compile validates one site and indexes its names.
func (m *Manager) compile(i int, s Site, roots map[string]*x509.CertPool) (*site, error) {
	cs := &site{index: i, policy: s.Policy}
	seen := make(map[string]bool)
	for _, n := range s.Names {
		n = normalizeName(n)
		if !seen[n] {
			seen[n] = true
			cs.names = append(cs.names, n)
		}
	}
	cs.label = siteLabel(cs.names)
	p := s.Policy
	_, ca, caRoot := m.acmeSettings(p)

	switch p.Mode {
	case ModeACME, ModeOnDemand:
		if m.g.DisableHTTPChallenge && m.g.DisableTLSALPNChallenge {
			return nil, errors.New("both ACME challenges are disabled, so no certificate can be validated")
		}
		if caRoot != "" && roots[caRoot] == nil {
			pool, err := loadRoots(caRoot)
			if err != nil {
				return nil, err
			}
			roots[caRoot] = pool
		}
		if p.Mode == ModeACME && len(cs.names) == 0 {
			return nil, errors.New("automatic HTTPS needs host names; for any host use on-demand TLS")
		}
		if p.Mode == ModeOnDemand {
			if err := checkAsk(p.Ask); err != nil {
				return nil, err
			}
			rl, err := checkRateLimit(p.RateLimit)
			if err != nil {
				return nil, err
			}
			cs.limiter = &limiter{rl: rl}
		}
	case ModeInternal:
		if len(cs.names) == 0 {
			return nil, errors.New("tls internal needs host names or IP addresses")
		}
	case ModeFiles:
		if err := cs.loadFiles(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown TLS mode %v", p.Mode)
	}
	for _, n := range cs.names {
		if err := checkName(p, n, ca); err != nil {
			return nil, err
		}
		if p.Mode == ModeFiles {
			if err := cs.checkCovers(n); err != nil {
				return nil, err
			}
		}
	}

	// Index the names; one site per name.
	if len(cs.names) == 0 {
		if m.anyHost != nil {
			return nil, fmt.Errorf("site %s already serves any host", m.anyHost.label)
		}
		m.anyHost = cs
	}
	for _, n := range cs.names {
		idx, key := m.exact, n
		if strings.HasPrefix(n, "*.") {
			idx, key = m.wild, n[2:]
		}
		if other := idx[key]; other != nil {
			return nil, fmt.Errorf("%s is also a name of site %s", n, other.label)
		}
		idx[key] = cs
	}
	return cs, nil
}

// acmeSettings returns the email, CA and CA root in effect for p.
func (m *Manager) acmeSettings(p Policy) (email, ca, caRoot string) {
	email, ca, caRoot = m.g.Email, m.g.CA, m.g.CARoot
	if p.Email != "" {
		email = p.Email
	}
	if p.CA != "" {
		ca = p.CA
	}
	if p.CARoot != "" {
		caRoot = p.CARoot
	}
	return email, ca, caRoot
}

func (m *Manager) newACMEIssuer(cfg *certmagic.Config, email, ca string, roots *x509.CertPool, zl *zap.Logger) *certmagic.ACMEIssuer {
	return certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:                      ca,
		Email:                   email,
		Agreed:                  true, // configuring a CA is agreeing to its terms
		TrustedRoots:            roots,
		DisableHTTPChallenge:    m.g.DisableHTTPChallenge,
		DisableTLSALPNChallenge: m.g.DisableTLSALPNChallenge,
		ListenHost:              m.g.ListenHost,
		AltHTTPPort:             m.g.HTTPPort,
		AltTLSALPNPort:          m.g.HTTPSPort,
		Logger:                  zl,
	})
}

// loadRoots returns the system roots plus the PEM certificates in file.
func loadRoots(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA root: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA root %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// loadFiles reads and checks a ModeFiles site's certificate and key.
func (s *site) loadFiles() error {
	p := s.policy
	if p.CertFile == "" || p.KeyFile == "" {
		return errors.New("tls with files needs a certificate file and a key file")
	}
	var err error
	if s.certPEM, err = os.ReadFile(p.CertFile); err != nil {
		return fmt.Errorf("certificate file: %w", err)
	}
	if s.keyPEM, err = os.ReadFile(p.KeyFile); err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	pair, err := cryptotls.X509KeyPair(s.certPEM, s.keyPEM)
	if err != nil {
		return fmt.Errorf("certificate %s with key %s: %w", p.CertFile, p.KeyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("certificate %s: %w", p.CertFile, err)
		}
	}
	s.leaf = leaf
	s.fileNames = append(s.fileNames, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		s.fileNames = append(s.fileNames, ip.String())
	}
	if len(s.fileNames) == 0 && leaf.Subject.CommonName != "" {
		s.fileNames = []string{leaf.Subject.CommonName}
	}
	// A tag per file pair and site: the cache is shared by every site.
	s.tag = "wsproxy-files-" + strconv.Itoa(s.index) + ":" + p.CertFile
	return nil
}

// checkCovers refuses a site name that the site's certificate file does not
// cover.
func (s *site) checkCovers(name string) error {
	probe := name
	if strings.HasPrefix(name, "*.") {
		probe = "wsproxy-probe" + name[1:]
	}
	if err := s.leaf.VerifyHostname(probe); err != nil {
		return fmt.Errorf("certificate %s does not cover %s (it is for %s)", s.policy.CertFile, name, strings.Join(s.fileNames, ", "))
	}
	return nil
}

// tagSelector picks the certificate carrying one tag from any candidates: a
// ModeFiles site serves its own certificate whatever the SNI.
type tagSelector string

func (t tagSelector) SelectCertificate(_ *cryptotls.ClientHelloInfo, choices []certmagic.Certificate) (certmagic.Certificate, error) {
	for _, c := range choices {
		if c.HasTag(string(t)) {
			return c, nil
		}
	}
	return certmagic.Certificate{}, errors.New("site certificate not loaded")
}

// noPromptIssuer keeps certmagic from prompting on stdin for an ACME email
// when the Manager obtains at Start.
type noPromptIssuer struct{ *certmagic.ACMEIssuer }

func (i noPromptIssuer) PreCheck(ctx context.Context, names []string, _ bool) error {
	return i.ACMEIssuer.PreCheck(ctx, names, false)
}

// Start loads or obtains the certificates of every ACME and internal site,
// and caches certificate files; certmagic then renews in the background
// until Stop. It returns at the first failure, a *SiteError naming the site
// (a CA that refuses, an unreachable CA, a challenge that fails). On-demand
// sites obtain at handshakes. Start may be called once; after an error the
// caller keeps the running configuration and Stops this Manager.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started || m.stopped {
		m.mu.Unlock()
		return errors.New("tls: Manager already started or stopped")
	}
	m.started = true
	m.mu.Unlock()

	if m.ca != nil {
		if err := m.ca.load(ctx); err != nil {
			return m.siteErr(ModeInternal, err)
		}
		m.log.Info("local CA ready: trust its root certificate to trust tls internal sites", "root", m.ca.RootPath())
	}
	for _, s := range m.sites {
		var err error
		switch s.policy.Mode {
		case ModeFiles:
			_, err = s.cfg.CacheUnmanagedCertificatePEMBytes(ctx, s.certPEM, s.keyPEM, []string{s.tag})
		case ModeACME, ModeInternal:
			err = s.cfg.ManageSync(ctx, s.names)
		}
		if err != nil {
			return &SiteError{Index: s.index, Site: s.label, Err: err}
		}
	}
	return nil
}

// siteErr attributes err to the first site of mode.
func (m *Manager) siteErr(mode Mode, err error) error {
	for _, s := range m.sites {
		if s.policy.Mode == mode {
			return &SiteError{Index: s.index, Site: s.label, Err: err}
		}
	}
	return fmt.Errorf("tls: %w", err)
}

// Stop ends background renewal and releases what the Manager holds. The
// Manager's TLSConfig keeps serving the certificates already in memory, so a
// reload stops the old Manager after swapping in the new one. Idle
// connections to an ACME CA close when the CA times them out.
func (m *Manager) Stop() {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.stopped = true
	m.mu.Unlock()
	m.cache.Stop()
	m.askClient.CloseIdleConnections()
}

// LocalRoot returns where the local CA's root certificate is, which users
// trust to trust `tls internal` certificates: a file name with file storage,
// "consul:PREFIX/data/pki/root.crt" with Consul storage (`consul kv get`
// prints it); "" without such a site.
func (m *Manager) LocalRoot() string {
	if m.ca == nil {
		return ""
	}
	return m.ca.RootPath()
}

// TLSConfig returns a new crypto/tls config for the proxy's TLS listeners:
// TLS 1.2 minimum, ALPN http/1.1 (and acme-tls/1 for TLS-ALPN-01
// challenges), and GetCertificate choosing the certificate by SNI, with
// OCSP staples where certmagic has them. Without SNI the listener's local IP
// address is the name.
func (m *Manager) TLSConfig() *cryptotls.Config {
	return m.tlsConf.Clone()
}

func (m *Manager) getCertificate(hello *cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
	if hello.ServerName != "" && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLS1 {
		return m.base.GetCertificate(hello)
	}
	name := normalizeName(hello.ServerName)
	if name == "" && hello.Conn != nil {
		if host, _, err := net.SplitHostPort(hello.Conn.LocalAddr().String()); err == nil {
			name = host
		}
	}
	s := m.lookup(name)
	if s == nil {
		return nil, fmt.Errorf("tls: no site for server name %q", name)
	}
	return s.cfg.GetCertificate(hello)
}

// lookup returns the site serving name: an exact name, then a wildcard one
// label up, then the site for any host.
func (m *Manager) lookup(name string) *site {
	if s := m.exact[name]; s != nil {
		return s
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if s := m.wild[name[i+1:]]; s != nil {
			return s
		}
	}
	return m.anyHost
}

// configForCert tells certmagic's cache which config manages a certificate.
func (m *Manager) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	for _, s := range m.sites {
		if s.tag != "" && c.HasTag(s.tag) {
			return s.cfg, nil
		}
	}
	for _, n := range c.Names {
		if s := m.lookup(normalizeName(n)); s != nil && s.policy.Mode != ModeFiles {
			return s.cfg, nil
		}
	}
	return m.base, nil
}

// Expiry returns when the certificate serving each known name expires: the
// names of ACME and internal sites, those of certificate files, and the
// names on-demand sites have served. Names without a certificate in memory
// are left out.
func (m *Manager) Expiry() map[string]time.Time {
	var names []string
	for _, s := range m.sites {
		switch s.policy.Mode {
		case ModeACME, ModeInternal:
			names = append(names, s.names...)
		case ModeFiles:
			names = append(names, s.fileNames...)
		}
	}
	m.mu.Lock()
	for n := range m.approved {
		names = append(names, n)
	}
	m.mu.Unlock()
	sort.Strings(names)

	out := make(map[string]time.Time, len(names))
	for _, n := range names {
		for _, c := range m.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(out[n]) {
				out[n] = c.Leaf.NotAfter
			}
		}
	}
	return out
}
