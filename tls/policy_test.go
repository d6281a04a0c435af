package tls

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestNewErrors: what cannot work is refused by New, naming the site.
func TestNewErrors(t *testing.T) {
	acme := func(names ...string) Site { return Site{Names: names} }
	private := Policy{CA: "https://ca.internal.test/dir"}
	for _, c := range []struct {
		name  string
		g     Global
		sites []Site
		index int // of the site named; -1 for a global error
		want  string
	}{
		{"localhost with a public CA", Global{}, []Site{acme("localhost")}, 0, `"localhost" is an internal name, which a public ACME CA refuses`},
		{".internal with a public CA", Global{}, []Site{acme("ok.example.com"), acme("db.internal")}, 1, "internal name"},
		{"IP with a public CA", Global{}, []Site{acme("203.0.113.7")}, 0, "IP addresses"},
		{"wildcard over ACME", Global{}, []Site{acme("*.example.com")}, 0, "wildcard certificates need the ACME DNS challenge"},
		{"wildcard over ACME, private CA", Global{}, []Site{{Names: []string{"*.example.com"}, Policy: private}}, 0, "DNS challenge"},
		{"ACME without names", Global{}, []Site{{}}, 0, "automatic HTTPS needs host names"},
		{"bad name", Global{}, []Site{acme("exa mple.com")}, 0, "cannot be in a certificate"},
		{"name with port", Global{}, []Site{acme("example.com:443")}, 0, "not a host name"},
		{"bad wildcard", Global{}, []Site{{Names: []string{"*.com"}, Policy: Policy{Mode: ModeInternal}}}, 0, "left-most label"},
		{"internal without names", Global{}, []Site{{Policy: Policy{Mode: ModeInternal}}}, 0, "tls internal needs host names"},
		{"on-demand without ask", Global{}, []Site{{Policy: Policy{Mode: ModeOnDemand}}}, 0, "needs an ask URL"},
		{"on-demand bad ask", Global{}, []Site{{Policy: Policy{Mode: ModeOnDemand, Ask: "ftp://x"}}}, 0, "want http:// or https://"},
		{"on-demand bad rate", Global{}, []Site{{Policy: Policy{Mode: ModeOnDemand, Ask: "http://127.0.0.1:1/", RateLimit: RateLimit{Burst: 5}}}}, 0, "both must be positive"},
		{"same name twice", Global{}, []Site{acme("a.example.com"), acme("b.example.com", "A.example.com.")}, 1, "a.example.com is also a name of site a.example.com"},
		{"label is normalized", Global{}, []Site{acme("Bad Name.example.COM.")}, 0, "tls: site bad name.example.com: "},
		{"two catch-alls", Global{}, []Site{
			{Policy: Policy{Mode: ModeOnDemand, Ask: "http://127.0.0.1:1/"}},
			{Policy: Policy{Mode: ModeOnDemand, Ask: "http://127.0.0.1:1/"}},
		}, 1, "already serves any host"},
		{"unknown mode", Global{}, []Site{{Names: []string{"a.example.com"}, Policy: Policy{Mode: 42}}}, 0, "unknown TLS mode Mode(42)"},
		{"unreadable CA root", Global{CARoot: "/nonexistent/root.pem"}, []Site{acme("a.example.com")}, 0, "CA root: open /nonexistent/root.pem"},
		{"no challenge left", Global{DisableHTTPChallenge: true, DisableTLSALPNChallenge: true}, []Site{acme("a.example.com")}, 0, "both ACME challenges are disabled"},
		{"bad port", Global{HTTPPort: 70000}, []Site{acme("a.example.com")}, -1, "port 70000 out of range"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.g.StorageDir = t.TempDir()
			c.g.Logger = testLogger(t)
			m, err := New(c.g, c.sites)
			if err == nil {
				m.Stop()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			var se *SiteError
			if errors.As(err, &se) != (c.index >= 0) || (se != nil && se.Index != c.index) {
				t.Errorf("error %#v, want a SiteError for site %d", err, c.index)
			}
		})
	}
}

// TestNewAccepts: what a private CA or the local CA can serve is accepted.
func TestNewAccepts(t *testing.T) {
	m, err := New(Global{StorageDir: t.TempDir(), CA: "https://ca.internal.test/dir", Logger: testLogger(t)}, []Site{
		{Names: []string{"localhost", "10.0.0.1"}},                                 // private ACME CA
		{Names: []string{"*.dev.test", "::1"}, Policy: Policy{Mode: ModeInternal}}, // local CA
		{Names: []string{"*.customers.example"}, Policy: Policy{Mode: ModeOnDemand, Ask: "https://127.0.0.1:1/ask"}},
		{Policy: Policy{Mode: ModeOnDemand, Ask: "http://127.0.0.1:1/ask", CA: "https://acme-v02.api.letsencrypt.org/directory"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if m.LocalRoot() == "" {
		t.Error("no local root with a tls internal site")
	}
	for name, want := range map[string]int{"localhost": 0, "10.0.0.1": 0, "x.dev.test": 1, "::1": 1, "a.customers.example": 2, "any.example.org": 3, "x.y.customers.example": 3} {
		if s := m.lookup(name); s == nil || s.index != want {
			t.Errorf("lookup(%s) = %v, want site %d", name, s, want)
		}
	}
}

func TestDefaultStorageDir(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/data")
	if d, _ := defaultStorageDir(); d != "/data/wsproxy" {
		t.Errorf("with XDG_DATA_HOME: %s", d)
	}
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("HOME", "/home/u")
	if d, _ := defaultStorageDir(); d != filepath.Join("/home/u", ".local", "share", "wsproxy") {
		t.Errorf("with HOME: %s", d)
	}
}

func TestHTTPRedirect(t *testing.T) {
	for _, c := range []struct {
		port      int
		host, uri string
		status    int
		location  string
	}{
		{443, "example.com", "/a?b=c", 308, "https://example.com/a?b=c"},
		{443, "example.com:80", "/", 308, "https://example.com/"},
		{8443, "example.com:8080", "/ws", 308, "https://example.com:8443/ws"},
		{443, "[::1]:80", "/x", 308, "https://[::1]/x"},
		{443, "[::1]", "/x", 308, "https://[::1]/x"},
		// A challenge this process did not begin is redirected too.
		{443, "example.com", "/.well-known/acme-challenge/abc", 308, "https://example.com/.well-known/acme-challenge/abc"},
		{443, "", "/", 400, ""},
	} {
		m, err := New(Global{StorageDir: t.TempDir(), HTTPSPort: c.port, Logger: testLogger(t)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var req fasthttp.Request
		req.SetRequestURI(c.uri)
		req.Header.SetHost(c.host)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}, nil)
		m.HTTPRedirect(&ctx)
		m.Stop()
		if got := ctx.Response.StatusCode(); got != c.status {
			t.Errorf("%s%s: status %d, want %d", c.host, c.uri, got, c.status)
		}
		if got := string(ctx.Response.Header.Peek("Location")); got != c.location {
			t.Errorf("%s%s: Location %q, want %q", c.host, c.uri, got, c.location)
		}
	}
}

func TestStartTwice(t *testing.T) {
	m, err := New(Global{StorageDir: t.TempDir(), Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	ctx := ctxTimeout(t, 10*time.Second)
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
}
