package tls

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Mode says where a site's certificates come from.
type Mode int

const (
	// ModeACME obtains certificates for the site's names from an ACME CA
	// (Let's Encrypt unless a CA is set) at Start, and renews them in the
	// background. The zero Mode.
	ModeACME Mode = iota
	// ModeInternal issues certificates from a local CA whose root lives in
	// StorageDir/pki/root.crt (`tls internal`): for localhost, private names
	// and IP addresses, in development and demos.
	ModeInternal
	// ModeFiles serves a certificate and key read from files (`tls CERT KEY`).
	// The files are read when the Manager is built, so a reload re-reads them.
	ModeFiles
	// ModeOnDemand obtains a certificate from the ACME CA at the first TLS
	// handshake for a name, once the Ask URL has approved the name, within
	// the site's RateLimit.
	ModeOnDemand
)

// String returns the Caddyfile spelling of m.
func (m Mode) String() string {
	switch m {
	case ModeACME:
		return "acme"
	case ModeInternal:
		return "internal"
	case ModeFiles:
		return "files"
	case ModeOnDemand:
		return "on_demand"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Policy is how one site gets its certificates.
type Policy struct {
	// Mode selects the source; ModeACME when zero.
	Mode Mode

	// CertFile and KeyFile are PEM files for ModeFiles (the certificate file
	// may hold the chain after the leaf). Both are required there and
	// ignored otherwise.
	CertFile, KeyFile string

	// Email, CA and CARoot override Global's for ModeACME and ModeOnDemand.
	Email, CA, CARoot string

	// Ask is the URL that approves on-demand names (ModeOnDemand, required):
	// a GET with ?domain=NAME added; status 200 approves, anything else, or
	// no answer within 10 seconds, refuses.
	Ask string

	// RateLimit bounds how many certificates ModeOnDemand obtains; the
	// zero value is DefaultOnDemandRateLimit.
	RateLimit RateLimit
}

// RateLimit allows at most Burst new certificates in any Interval.
type RateLimit struct {
	Burst    int
	Interval time.Duration
}

// DefaultOnDemandRateLimit is an on-demand site's RateLimit when none is
// given: 10 new certificates a minute.
var DefaultOnDemandRateLimit = RateLimit{Burst: 10, Interval: time.Minute}

// Site is one set of names served with one Policy.
type Site struct {
	// Names are host names or IP addresses, without ports. For ModeInternal
	// and ModeFiles a name may be a wildcard ("*.example.com"); for
	// ModeOnDemand names are patterns that SNI values must match (exact or
	// "*.example.com"), and no names means any name the Ask URL approves.
	// ModeFiles with no names serves its certificate for any SNI that no
	// other site claims. Matching is case-insensitive.
	Names []string
	// Policy is where the certificates come from.
	Policy Policy
}

// Global holds the settings shared by every site.
type Global struct {
	// StorageDir holds certificates, keys, ACME accounts, locks and the local
	// CA (certmagic's file storage) when Storage is nil. Two wsproxy
	// instances that share it share certificates and never both obtain one
	// for the same name. If empty, ${XDG_DATA_HOME:-$HOME/.local/share}/wsproxy.
	StorageDir string

	// Storage, if set, is used instead of a file storage in StorageDir:
	// e.g. a consulstore.Store, shared by instances on several machines.
	// The Manager does not close it: it outlives a reload.
	Storage certmagic.Storage

	// RenewInterval is how often certmagic looks for certificates to renew
	// (and stored ones renewed by another instance). certmagic's default,
	// 10 minutes, if zero.
	RenewInterval time.Duration

	// Email is the ACME account's contact address; optional but recommended.
	Email string
	// CA is the ACME directory URL; Let's Encrypt's production directory if
	// empty.
	CA string
	// CARoot is a PEM file of root certificates trusted, besides the
	// system's, when talking to the CA (a private ACME CA).
	CARoot string

	// HTTPPort is the port the proxy serves plain HTTP on, where HTTP-01
	// challenges arrive (the CA always asks port 80; a different port
	// assumes a forward from 80). 80 if zero.
	HTTPPort int
	// HTTPSPort is the port the proxy serves TLS on, where TLS-ALPN-01
	// challenges arrive, and the port HTTPRedirect sends clients to. 443 if
	// zero.
	HTTPSPort int
	// ListenHost is the host the proxy binds HTTPPort and HTTPSPort on (""
	// for all interfaces). certmagic binds a challenge port itself only when
	// nothing listens there.
	ListenHost string

	// DisableHTTPChallenge and DisableTLSALPNChallenge turn off one ACME
	// challenge type; disabling both leaves ACME unable to validate.
	DisableHTTPChallenge, DisableTLSALPNChallenge bool

	// Logger receives certmagic's logs and the Manager's. slog.Default()
	// if nil.
	Logger *slog.Logger
}

// SiteError is an error in one site's TLS setup, reported by New and Start.
type SiteError struct {
	// Index is the site's position in the slice given to New.
	Index int
	// Site names the site: its names joined by ", ", or "(any host)".
	Site string
	Err  error
}

func (e *SiteError) Error() string { return "tls: site " + e.Site + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *SiteError) Unwrap() error { return e.Err }

// publicCAs are ACME directories whose CAs issue publicly trusted
// certificates, and so refuse internal names.
var publicCAs = []string{"api.letsencrypt.org", "acme.zerossl.com", "api.pki.goog", "api.buypass.com", "acme.ssl.com"}

func isPublicCA(directory string) bool {
	if directory == "" {
		return true // certmagic's default, Let's Encrypt
	}
	for _, host := range publicCAs {
		if strings.Contains(directory, host) {
			return true
		}
	}
	return false
}

// defaultStorageDir is ${XDG_DATA_HOME:-$HOME/.local/share}/wsproxy.
func defaultStorageDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "wsproxy"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("tls: no storage directory: set one, XDG_DATA_HOME or HOME: %w", err)
	}
	return filepath.Join(home, ".local", "share", "wsproxy"), nil
}

// normalizeName lowercases name and drops a trailing dot.
func normalizeName(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

func siteLabel(names []string) string {
	if len(names) == 0 {
		return "(any host)"
	}
	return strings.Join(names, ", ")
}

// checkName refuses a name that site policy p cannot get a certificate for.
// ca is the ACME directory in effect for the site.
func checkName(p Policy, name, ca string) error {
	if name == "" {
		return errors.New("empty host name")
	}
	if strings.ContainsAny(name, "/:") && net.ParseIP(name) == nil {
		return fmt.Errorf("%q is not a host name (no scheme, port or path here)", name)
	}
	if !certmagic.SubjectQualifiesForCert(name) {
		return fmt.Errorf("%q cannot be in a certificate", name)
	}
	wildcard := strings.Contains(name, "*")
	if wildcard && (name == "*" || strings.Count(name, "*") > 1 || strings.Count(name, ".") < 2) {
		return fmt.Errorf("%q: a wildcard must be the left-most label of a name with at least three labels", name)
	}
	switch p.Mode {
	case ModeACME:
		if wildcard {
			return fmt.Errorf("%q: wildcard certificates need the ACME DNS challenge, which wsproxy does not do; use on-demand TLS, tls internal or certificate files", name)
		}
		if isPublicCA(ca) {
			if certmagic.SubjectIsIP(name) {
				return fmt.Errorf("%q: a public ACME CA does not issue certificates for IP addresses here; use tls internal or certificate files", name)
			}
			if !certmagic.SubjectQualifiesForPublicCert(name) {
				return fmt.Errorf("%q is an internal name, which a public ACME CA refuses; use tls internal or a private CA", name)
			}
		}
	case ModeOnDemand:
		if certmagic.SubjectIsIP(name) && isPublicCA(ca) {
			return fmt.Errorf("%q: a public ACME CA does not issue certificates for IP addresses here", name)
		}
	}
	return nil
}

// checkAsk validates an on-demand approval URL.
func checkAsk(ask string) error {
	if ask == "" {
		return errors.New("on-demand TLS needs an ask URL that approves names, so that any client cannot make the proxy request certificates")
	}
	u, err := url.Parse(ask)
	if err != nil {
		return fmt.Errorf("ask URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("ask URL %q: want http:// or https:// and a host", ask)
	}
	return nil
}

// checkRateLimit fills the default and refuses nonsense.
func checkRateLimit(rl RateLimit) (RateLimit, error) {
	if rl == (RateLimit{}) {
		return DefaultOnDemandRateLimit, nil
	}
	if rl.Burst <= 0 || rl.Interval <= 0 {
		return rl, fmt.Errorf("on-demand rate limit %d per %v: both must be positive", rl.Burst, rl.Interval)
	}
	return rl, nil
}
