package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/examples/echoserver"
	"github.com/wsproxy/wsproxy/tls/pebbletest"
)

// logBuffer collects a proxy's logs or a process's output, for polling and
// for printing if the test fails (certmagic logs from goroutines that may
// outlive a test, so t.Log is not safe).
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.b.Bytes(), []byte(sub))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tlsProxy is a Server with a TLS port and a plain HTTP port on loopback,
// opened before its config is written (Pebble must be told the ports), an
// echo backend and a storage directory.
type tlsProxy struct {
	srv              *Server
	ln, httpLn       net.Listener
	port, httpPort   int
	addr, httpAddr   string
	storage          string
	backend          *echoserver.Server
	log              *logBuffer
	logger           *slog.Logger
	vars             map[string]string
	shutdownOnce     sync.Once
	shutdownDeadline time.Duration
}

// newTLSProxy opens the listeners (on the given ports, or free ones if 0)
// and starts the backend.
func newTLSProxy(t testing.TB, port, httpPort int) *tlsProxy {
	t.Helper()
	tp := &tlsProxy{storage: t.TempDir(), log: &logBuffer{}, vars: map[string]string{}}
	b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "b0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	tp.backend = b
	listen := func(p int) net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	tp.ln, tp.httpLn = listen(port), listen(httpPort)
	tp.addr, tp.httpAddr = tp.ln.Addr().String(), tp.httpLn.Addr().String()
	tp.port, tp.httpPort = tp.ln.Addr().(*net.TCPAddr).Port, tp.httpLn.Addr().(*net.TCPAddr).Port
	level := slog.LevelInfo
	if os.Getenv("WSPROXY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn
	}
	tp.logger = slog.New(slog.NewTextHandler(tp.log, &slog.HandlerOptions{Level: level}))
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("WSPROXY_TEST_LOGS") != "" {
			t.Logf("proxy logs:\n%s", tp.log.String())
		}
	})
	return tp
}

// config returns conf with {port}, {http}, {b0}, {storage} and tp.vars
// replaced, parsed.
func (tp *tlsProxy) config(t testing.TB, conf string) (*config.Config, error) {
	t.Helper()
	r := []string{"{port}", strconv.Itoa(tp.port), "{http}", strconv.Itoa(tp.httpPort),
		"{b0}", tp.backend.Addr(), "{storage}", tp.storage}
	for k, v := range tp.vars {
		r = append(r, "{"+k+"}", v)
	}
	return config.Parse("test.Caddyfile", []byte(strings.NewReplacer(r...).Replace(conf)))
}

// start builds and starts the Server; it is shut down when the test ends.
// Errors from config.Parse, New and Start are returned.
func (tp *tlsProxy) start(t testing.TB, conf string) error {
	t.Helper()
	cfg, err := tp.config(t, conf)
	if err != nil {
		return err
	}
	srv, err := New(cfg, Options{Logger: tp.logger, Listeners: map[int]net.Listener{tp.port: tp.ln, tp.httpPort: tp.httpLn}})
	if err != nil {
		return err
	}
	tp.srv = srv
	t.Cleanup(func() { tp.shutdown() })
	return srv.Start()
}

func (tp *tlsProxy) shutdown() {
	tp.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tp.srv.Shutdown(ctx)
	})
}

// reload parses conf and reloads the Server with it.
func (tp *tlsProxy) reload(t testing.TB, conf string) error {
	t.Helper()
	cfg, err := tp.config(t, conf)
	if err != nil {
		return err
	}
	_, err = tp.srv.Reload(cfg)
	return err
}

// wssDialer dials addr whatever the URL's host, over TLS trusting only
// roots, offering ALPN http/1.1.
func wssDialer(addr string, roots *x509.CertPool) *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: 30 * time.Second,
		NetDial:          func(_, _ string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) },
		TLSClientConfig:  &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}},
	}
}

// wssEcho opens wss://host/ws through the proxy at addr, checks an echo and
// the backend's X-Forwarded-Proto, and returns the connection and its TLS
// state.
func wssEcho(t testing.TB, addr, host string, roots *x509.CertPool) (*websocket.Conn, tls.ConnectionState) {
	t.Helper()
	url := "wss://" + host + "/ws"
	c, resp, err := wssDialer(addr, roots).Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for _, msg := range [][]byte{[]byte("hello over TLS"), repeat(200 << 10)} {
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes came back as %d different ones", len(msg), len(got))
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("__headers")); err != nil {
		t.Fatal(err)
	}
	_, hdrs, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ReplaceAll(string(hdrs), " ", ""), `"X-Forwarded-Proto":"https"`) {
		t.Errorf("backend saw headers %s, want X-Forwarded-Proto https", hdrs)
	}
	state := c.UnderlyingConn().(*tls.Conn).ConnectionState()
	if state.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", state.NegotiatedProtocol)
	}
	if len(state.VerifiedChains) == 0 {
		t.Error("no verified chain")
	}
	return c, state
}

// expectClose reads until the close frame and checks its code.
func expectCloseCode(t testing.TB, c *websocket.Conn, code int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			t.Fatalf("read %v, want close %d", err, code)
		}
		return
	}
}

// handshakeFails checks that a TLS handshake with sni at addr fails.
func handshakeFails(t testing.TB, addr, sni string, roots *x509.CertPool) {
	t.Helper()
	d := &net.Dialer{Timeout: 30 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, RootCAs: roots})
	if err == nil {
		c.Close()
		t.Fatalf("TLS handshake for %s succeeded", sni)
	}
	t.Logf("handshake for %s refused: %v", sni, err)
}

func rootsFromFile(t testing.TB, file string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("%s holds no certificate", file)
	}
	return pool
}

// writeSelfSigned writes a self-signed certificate for names, and its key,
// into dir; it returns their paths.
func writeSelfSigned(t testing.TB, dir, prefix string, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so that a client can trust it as its own root
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, prefix+".crt"), filepath.Join(dir, prefix+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

const internalConf = `{
	storage {storage}
}
localhost:{port} {
	tls internal
	route /* {
		to {b0}
	}
}`

// TestTLSInternal: `tls internal` issues a certificate from the local CA
// whose root the proxy logs; a client trusting only that root gets a wss
// echo with TLS 1.3 and ALPN http/1.1; TLS 1.1 and plain text are refused
// on the port; shutdown sends 1001 through TLS.
func TestTLSInternal(t *testing.T) {
	t.Parallel()
	tp := newTLSProxy(t, 0, 0)
	if err := tp.start(t, internalConf); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(tp.storage, "pki", "root.crt")
	if logs := tp.log.String(); !strings.Contains(logs, "trust this root") || !strings.Contains(logs, "root="+root) {
		t.Errorf("logs do not give the root to trust (%s):\n%s", root, logs)
	}
	roots := rootsFromFile(t, root)
	c, state := wssEcho(t, tp.addr, "localhost:"+strconv.Itoa(tp.port), roots)
	if state.Version != tls.VersionTLS13 {
		t.Errorf("TLS version %x, want 1.3", state.Version)
	}
	if err := state.PeerCertificates[0].VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	// Plain HTTP on the TLS site is proxied too (to a plain-HTTP backend).
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	req, _ := http.NewRequest("GET", "https://"+tp.addr+"/api/x", nil)
	req.Host = "localhost:" + strconv.Itoa(tp.port)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Echo-X-Forwarded-Proto") != "https" {
		t.Fatalf("HTTP over TLS: %d %q, X-Forwarded-Proto %q", resp.StatusCode, body, resp.Header.Get("X-Echo-X-Forwarded-Proto"))
	}
	// The certificate's expiry is exported for alerting.
	mfs, err := tp.srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	expiry := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "wsproxy_certificate_expiry_timestamp_seconds" && len(mf.GetMetric()) > 0 {
			expiry = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if expiry < float64(time.Now().Unix()) {
		t.Errorf("certificate expiry metric %v, want a time in the future", expiry)
	}
	if got := tp.srv.Sessions(); got != 1 {
		t.Errorf("%d sessions, want 1", got)
	}

	// TLS 1.2 is the minimum.
	old, err := tls.Dial("tcp", tp.addr, &tls.Config{ServerName: "localhost", RootCAs: roots, MaxVersion: tls.VersionTLS11})
	if err == nil {
		old.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
	// TLS 1.2 works.
	c12, err := tls.Dial("tcp", tp.addr, &tls.Config{ServerName: "localhost", RootCAs: roots, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Errorf("TLS 1.2: %v", err)
	} else {
		c12.Close()
	}
	// Plain text on the TLS port is not served.
	rc, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(rc, wsHead("/ws"))
	reply, _ := io.ReadAll(rc)
	if bytes.Contains(reply, []byte("HTTP/1.1 101")) {
		t.Errorf("plain-text handshake on the TLS port got %q", reply)
	}

	// The client answers the proxy's close while Shutdown waits for it.
	done := make(chan struct{})
	go func() {
		defer close(done)
		tp.shutdown()
	}()
	expectCloseCode(t, c, websocket.CloseGoingAway)
	c.Close()
	<-done
}

// TestTLSFiles: `tls CERT KEY` serves the files' certificate; a reload
// reads them again.
func TestTLSFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir, "site", "files.wsproxy.test")
	tp := newTLSProxy(t, 0, 0)
	tp.vars["cert"], tp.vars["key"] = cert, key
	const conf = `files.wsproxy.test:{port} {
	tls {cert} {key}
	route /* {
		to {b0}
	}
}`
	if err := tp.start(t, conf); err != nil {
		t.Fatal(err)
	}
	host := "files.wsproxy.test:" + strconv.Itoa(tp.port)
	live, state := wssEcho(t, tp.addr, host, rootsFromFile(t, cert))
	first := state.PeerCertificates[0].SerialNumber

	// New files, then a reload: new handshakes get the new certificate;
	// the live connection goes on.
	cert2, key2 := writeSelfSigned(t, dir, "site2", "files.wsproxy.test")
	for _, p := range [][2]string{{cert2, cert}, {key2, key}} {
		if err := os.Rename(p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.reload(t, conf); err != nil {
		t.Fatal(err)
	}
	_, state = wssEcho(t, tp.addr, host, rootsFromFile(t, cert))
	if state.PeerCertificates[0].SerialNumber.Cmp(first) == 0 {
		t.Error("after the reload the old certificate is served")
	}
	if err := live.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := live.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("live connection after reload: %q %v", msg, err)
	}

	// A broken key is refused at reload with the tls line; the running
	// certificate stays.
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := tp.reload(t, conf)
	if err == nil || !strings.HasPrefix(err.Error(), "test.Caddyfile:2: tls: certificate "+cert+" with key "+key+": ") {
		t.Fatalf("reload with a bad key: %v, want an error at test.Caddyfile:2", err)
	}
	wssEcho(t, tp.addr, host, rootsFromFile(t, cert))
}

// TestTLSValidate: what `wsproxy validate` (config.Parse, then New) says
// about TLS sites it cannot serve: file:line and the reason, without
// network I/O.
func TestTLSValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir, "site", "files.wsproxy.test")
	_, otherKey := writeSelfSigned(t, dir, "other", "other.wsproxy.test")
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	site := func(addr string, lines ...string) string {
		return addr + " {\n" + strings.Join(lines, "\n") + "\n\troute /* {\n\t\tto 127.0.0.1:1\n\t}\n}\n"
	}
	for _, tt := range []struct{ name, conf, want string }{
		{"bad key", site("files.wsproxy.test:8443", "\ttls "+cert+" "+garbage),
			"test.Caddyfile:2: tls: certificate " + cert + " with key " + garbage + ": tls: failed to parse private key"},
		{"key of another certificate", site("files.wsproxy.test:8443", "\ttls "+cert+" "+otherKey),
			"test.Caddyfile:2: tls: certificate " + cert + " with key " + otherKey + ": tls: private key does not match public key"},
		{"unreadable key", site("files.wsproxy.test:8443", "\ttls "+cert+" "+dir+"/missing.key"),
			"test.Caddyfile:2: tls: key file: open " + dir + "/missing.key: no such file or directory"},
		{"certificate for another name", site("other.wsproxy.test:8443", "\ttls "+cert+" "+key),
			"test.Caddyfile:2: tls: site other.wsproxy.test: certificate " + cert + " does not cover other.wsproxy.test (it is for files.wsproxy.test)"},
		{"IP with public ACME", site("192.0.2.1"),
			`test.Caddyfile:1: tls: site 192.0.2.1: "192.0.2.1": a public ACME CA does not issue certificates for IP addresses here; use tls internal or certificate files`},
		{"wildcard with ACME", site("*.wsproxy.example"),
			`test.Caddyfile:1: tls: site *.wsproxy.example: "*.wsproxy.example": wildcard certificates need the ACME DNS challenge`},
		{"internal name with public ACME", "{\n\temail ops@example.com\n}\n" + site("localhost"),
			`test.Caddyfile:4: tls: site localhost: "localhost" is an internal name, which a public ACME CA refuses; use tls internal or a private CA`},
		{"ACME without names", site("https://:8443"),
			"test.Caddyfile:1: tls: site (any host): automatic HTTPS needs host names; for any host use on-demand TLS"},
		{"internal without names", site(":8443", "\ttls internal"),
			"test.Caddyfile:2: tls: site (any host): tls internal needs host names or IP addresses"},
		{"one name in two sites", site("a.wsproxy.test:8443", "\ttls internal") + site("a.wsproxy.test:9443", "\ttls internal"),
			"test.Caddyfile:8: tls: site a.wsproxy.test: a.wsproxy.test is also a name of site a.wsproxy.test"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// New does no I/O in the (default) storage directory.
			cfg, err := config.Parse("test.Caddyfile", []byte(tt.conf))
			if err == nil {
				var srv *Server
				srv, err = New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err == nil {
					srv.Shutdown(context.Background())
				}
			}
			if err == nil || err.Error() != tt.want && !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("got  %v\nwant %s", err, tt.want)
			}
			var list config.ErrorList
			if !errors.As(err, &list) || list[0].Pos.Line == 0 {
				t.Errorf("error %v is not a config.ErrorList with a line", err)
			}
		})
	}
}

// acmeVars points a config at Pebble.
//
// Every ACME test uses names of its own: certmagic keeps the challenges in
// progress in one map per process, by name, so two tests obtaining one name
// at once (from two Pebbles) would answer each other's challenges.
func acmeVars(tp *tlsProxy, p *pebbletest.Server) {
	tp.vars["ca"], tp.vars["ca_root"] = p.Directory, p.MiniCA
}

const acmeGlobal = `{
	email ops@wsproxy.test
	acme_ca {ca}
	acme_ca_root {ca_root}
	storage {storage}
	http_port {http}
	https_port {port}
}
`

// TestTLSACMEHTTP01: a certificate from Pebble over HTTP-01, answered on
// the proxy's HTTP port (Pebble's TLS-ALPN-01 port is closed, so no other
// challenge can pass), serves a wss echo. The HTTP port redirects to https
// what no plain site there routes, and routes what one does.
func TestTLSACMEHTTP01(t *testing.T) {
	t.Parallel()
	tp := newTLSProxy(t, 0, 0)
	p := pebbletest.Start(t, tp.httpPort, pebbletest.FreePort(t, false))
	acmeVars(tp, p)
	conf := acmeGlobal + `
a.wsproxy.test {
	route /* {
		to {b0}
	}
}
http://plain.wsproxy.test:{http} {
	route /* {
		to {b0}
	}
}`
	began := time.Now()
	if err := tp.start(t, conf); err != nil {
		t.Fatal(err)
	}
	t.Logf("HTTP-01 through the proxy: certificate in %v", time.Since(began).Round(time.Millisecond))
	if logs := tp.log.String(); !strings.Contains(logs, `msg="served key authentication"`) || !strings.Contains(logs, "challenge=http-01") {
		t.Errorf("no HTTP-01 challenge answered by the proxy:\n%s", logs)
	}
	host := "a.wsproxy.test:" + strconv.Itoa(tp.port)
	_, state := wssEcho(t, tp.addr, host, p.Roots)
	if err := state.PeerCertificates[0].VerifyHostname("a.wsproxy.test"); err != nil {
		t.Error(err)
	}
	if p.Issued() != 1 {
		t.Errorf("pebble issued %d certificates, want 1", p.Issued())
	}

	// The HTTP port.
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(host, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+tp.httpAddr+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get("a.wsproxy.test", "/x/y?z=1")
	if want := "https://a.wsproxy.test:" + strconv.Itoa(tp.port) + "/x/y?z=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("GET http://a.wsproxy.test/x/y?z=1: %d to %q, want 308 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if resp := get("plain.wsproxy.test", "/x"); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend-Id") != "b0" {
		t.Errorf("GET http://plain.wsproxy.test/x: %d from %q, want 200 from the plain site's backend", resp.StatusCode, resp.Header.Get("X-Backend-Id"))
	}
	// A WebSocket over ws:// to the TLS site is redirected, not served plain.
	rc := rawRequest(t, tp.httpAddr, strings.Replace(wsHead("/ws"), "Host: localhost", "Host: a.wsproxy.test", 1))
	if rc.Status != http.StatusPermanentRedirect {
		t.Errorf("ws:// handshake on the HTTP port: status %d, want 308", rc.Status)
	}
}

// TestTLSACMETLSALPN01: a certificate from Pebble over TLS-ALPN-01,
// answered on the proxy's TLS port (Pebble's HTTP-01 port is closed); a
// reload over the same storage loads it instead of obtaining another, and
// a live connection survives the reload.
func TestTLSACMETLSALPN01(t *testing.T) {
	t.Parallel()
	tp := newTLSProxy(t, 0, 0)
	p := pebbletest.Start(t, pebbletest.FreePort(t, false), tp.port)
	acmeVars(tp, p)
	conf := acmeGlobal + `
b.wsproxy.test {
	route /* {
		to {b0}
	}
}`
	if err := tp.start(t, conf); err != nil {
		t.Fatal(err)
	}
	if logs := tp.log.String(); !strings.Contains(logs, `msg="served key authentication certificate"`) || !strings.Contains(logs, "challenge=tls-alpn-01") {
		t.Errorf("no TLS-ALPN-01 challenge answered by the proxy:\n%s", logs)
	}
	host := "b.wsproxy.test:" + strconv.Itoa(tp.port)
	live, state := wssEcho(t, tp.addr, host, p.Roots)

	if err := tp.reload(t, conf); err != nil {
		t.Fatal(err)
	}
	_, state2 := wssEcho(t, tp.addr, host, p.Roots)
	if p.Issued() != 1 || !state2.PeerCertificates[0].Equal(state.PeerCertificates[0]) {
		t.Errorf("after a reload: %d certificates issued, same served: %v; want 1, true", p.Issued(), state2.PeerCertificates[0].Equal(state.PeerCertificates[0]))
	}
	if err := live.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := live.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("live connection after reload: %q %v", msg, err)
	}
}

// TestTLSACMERefused: a CA that refuses a name fails Start, and a reload,
// with the site's file:line and the CA's reason; the failed reload leaves
// the running certificates serving.
func TestTLSACMERefused(t *testing.T) {
	t.Parallel()
	tp := newTLSProxy(t, 0, 0)
	p := pebbletest.Start(t, tp.httpPort, tp.port, "blocked.wsproxy.test")
	acmeVars(tp, p)
	good := acmeGlobal + `
good.wsproxy.test {
	route /* {
		to {b0}
	}
}`
	bad := good + `
blocked.wsproxy.test {
	route /* {
		to {b0}
	}
}`
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.HasPrefix(err.Error(), "test.Caddyfile:15: tls: site blocked.wsproxy.test: ") || !strings.Contains(err.Error(), "rejectedIdentifier") {
			t.Fatalf("%s: %v; want test.Caddyfile:15, the site and the CA's reason", what, err)
		}
		t.Logf("%s: %v", what, err)
	}
	check("start", tp.start(t, bad))
	tp.shutdown()

	// The same ports, a new Server: good config, then the bad reload.
	tp2 := newTLSProxy(t, tp.port, tp.httpPort)
	tp2.storage = tp.storage
	acmeVars(tp2, p)
	if err := tp2.start(t, good); err != nil {
		t.Fatal(err)
	}
	check("reload", tp2.reload(t, bad))
	wssEcho(t, tp2.addr, "good.wsproxy.test:"+strconv.Itoa(tp2.port), p.Roots)
	handshakeFails(t, tp2.addr, "blocked.wsproxy.test", p.Roots)
}

// TestTLSOnDemand: on-demand TLS obtains a certificate at the first
// handshake for a name the ask URL approves, and refuses the handshake for
// one it does not.
func TestTLSOnDemand(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var asked []string
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("domain")
		mu.Lock()
		asked = append(asked, name)
		mu.Unlock()
		if name != "ok.wsproxy.test" {
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	t.Cleanup(ask.Close)
	tp := newTLSProxy(t, 0, 0)
	p := pebbletest.Start(t, tp.httpPort, tp.port)
	acmeVars(tp, p)
	tp.vars["ask"] = ask.URL + "/check"
	conf := acmeGlobal + `
https:// {
	tls {
		on_demand
		ask {ask}
		rate_limit 5 1m
	}
	route /* {
		to {b0}
	}
}`
	if err := tp.start(t, conf); err != nil {
		t.Fatal(err)
	}
	if p.Issued() != 0 {
		t.Fatal("an on-demand site obtained a certificate at start")
	}
	began := time.Now()
	wssEcho(t, tp.addr, "ok.wsproxy.test:"+strconv.Itoa(tp.port), p.Roots)
	t.Logf("on-demand: first wss connection, certificate included, in %v", time.Since(began).Round(time.Millisecond))
	handshakeFails(t, tp.addr, "no.wsproxy.test", p.Roots)
	if p.Issued() != 1 {
		t.Errorf("pebble issued %d certificates, want 1", p.Issued())
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(asked, " "); !strings.Contains(got, "ok.wsproxy.test") || !strings.Contains(got, "no.wsproxy.test") {
		t.Errorf("ask URL was asked about %q", got)
	}
}

// BenchmarkHandshakeWS and BenchmarkHandshakeWSS measure WebSocket
// connections per second through the proxy to an echo backend: dial, the
// handshake (TCP, then TLS 1.3 with a full ECDSA P-256 handshake for wss),
// one echo, a close frame, close. The figure is handshakes/s.
//
//	go test -run xxx -bench 'HandshakeWSS?$' -benchtime 3s ./proxy
func BenchmarkHandshakeWS(b *testing.B) { benchmarkHandshake(b, false) }

func BenchmarkHandshakeWSS(b *testing.B) { benchmarkHandshake(b, true) }

func benchmarkHandshake(b *testing.B, withTLS bool) {
	tp := newTLSProxy(b, 0, 0)
	conf := strings.Replace(internalConf, "\ttls internal\n", "", 1)
	scheme := "ws"
	if withTLS {
		conf, scheme = internalConf, "wss"
	}
	conf = strings.Replace(conf, "{\n", "{\n\taccess_log off\n", 1) // measure the proxy, not its log
	if err := tp.start(b, conf); err != nil {
		b.Fatal(err)
	}
	var roots *x509.CertPool
	if withTLS {
		roots = rootsFromFile(b, filepath.Join(tp.storage, "pki", "root.crt"))
	}
	d := wssDialer(tp.addr, roots)
	url := fmt.Sprintf("%s://localhost:%d/ws", scheme, tp.port)
	msg := []byte("ping")
	closeMsg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, _, err := d.Dial(url, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
				b.Error(err)
			}
			if _, got, err := c.ReadMessage(); err != nil || !bytes.Equal(got, msg) {
				b.Errorf("echo %q %v", got, err)
			}
			c.WriteControl(websocket.CloseMessage, closeMsg, time.Now().Add(time.Second))
			c.Close()
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}
