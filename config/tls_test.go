package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	wstls "github.com/wsproxy/wsproxy/tls"
)

// writeCertPair writes a self-signed certificate for names and its key as
// PEM files in dir, and returns their paths.
func writeCertPair(t *testing.T, dir, prefix string, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
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

// tlsFiles are the files the TLS tests refer to, made once.
type tlsFiles struct {
	cert, key   string // a pair for files.example.com
	otherKey    string // a key of another pair
	garbage     string // a file with no PEM in it
	missing     string // a path that does not exist
	dir         string // a directory
	regularFile string
}

func makeTLSFiles(t *testing.T) tlsFiles {
	dir := t.TempDir()
	var f tlsFiles
	f.cert, f.key = writeCertPair(t, dir, "site", "files.example.com")
	_, f.otherKey = writeCertPair(t, dir, "other", "other.example.com")
	f.garbage = filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(f.garbage, []byte("not a PEM file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.missing = filepath.Join(dir, "missing.pem")
	f.dir = filepath.Join(dir, "storage")
	f.regularFile = f.garbage
	return f
}

// sub replaces {cert}, {key}, ... in s with f's paths.
func (f tlsFiles) sub(s string) string {
	return strings.NewReplacer("{cert}", f.cert, "{key}", f.key, "{otherkey}", f.otherKey,
		"{garbage}", f.garbage, "{missing}", f.missing, "{dir}", f.dir, "{file}", f.regularFile).Replace(s)
}

const tlsRoute = "\troute {\n\t\tto a:1\n\t}\n"

// tlsSite is a site block with addresses addr, extra lines (starting on
// line 2) and a route.
func tlsSite(addr string, lines ...string) string {
	s := addr + " {\n"
	for _, l := range lines {
		s += "\t" + l + "\n"
	}
	return s + tlsRoute + "}\n"
}

func TestParseTLS(t *testing.T) {
	t.Parallel()
	f := makeTLSFiles(t)
	at := func(line int) Pos { return Pos{File: testFile, Line: line} }
	first := func(c *Config) any { return c.Sites[0].Addresses[0] }
	siteTLS := func(c *Config) any { return c.Sites[0].TLS }
	for _, tt := range []struct {
		name string
		body string
		get  func(*Config) any
		want any
	}{
		// Addresses: which are TLS, and their ports.
		{"name is https on 443", tlsSite("Example.com"), first, Address{Scheme: "https", Host: "example.com", Port: 443}},
		{"name gets ACME", tlsSite("example.com"), siteTLS, &SiteTLS{Pos: at(1), Policy: wstls.Policy{Mode: wstls.ModeACME}}},
		{"https scheme", tlsSite("https://example.com"), first, Address{Scheme: "https", Host: "example.com", Port: 443}},
		{"https scheme and port", tlsSite("https://example.com:8443"), first, Address{Scheme: "https", Host: "example.com", Port: 8443}},
		{"https any host", tlsSite("https://:8443"), first, Address{Scheme: "https", Port: 8443}},
		{"ip without port", tlsSite("127.0.0.1"), first, Address{Scheme: "https", Host: "127.0.0.1", Port: 443}},
		{"port 443 is https", tlsSite("example.com:443"), first, Address{Scheme: "https", Host: "example.com", Port: 443}},
		{"name with port stays plain", tlsSite("example.com:8080"), first, Address{Scheme: "http", Host: "example.com", Port: 8080}},
		{"plain site has no TLS", tlsSite("example.com:8080"), siteTLS, (*SiteTLS)(nil)},
		{"http scheme stays plain", tlsSite("http://example.com"), first, Address{Scheme: "http", Host: "example.com", Port: 80}},
		{"port with tls directive", tlsSite(":8443", "tls internal"), first, Address{Scheme: "https", Port: 8443}},
		{"http scheme in a tls site", tlsSite("http://a.com:8080, a.com:8443", "tls internal"), func(c *Config) any { return c.Sites[0].Addresses },
			[]Address{{Scheme: "http", Host: "a.com", Port: 8080}, {Scheme: "https", Host: "a.com", Port: 8443}}},
		{"https_port moves names", "{\n\thttps_port 8443\n\thttp_port 8080\n}\n" + tlsSite("a.com, http://a.com, a.com:9000, a.com:443"),
			func(c *Config) any { return c.Sites[0].Addresses },
			[]Address{{Scheme: "https", Host: "a.com", Port: 8443}, {Scheme: "http", Host: "a.com", Port: 8080}, {Scheme: "http", Host: "a.com", Port: 9000}, {Scheme: "http", Host: "a.com", Port: 443}}},
		{"tls on http_port stays plain", tlsSite("a.com:80, a.com:8443", "tls internal"), func(c *Config) any { return c.Sites[0].Addresses },
			[]Address{{Scheme: "http", Host: "a.com", Port: 80}, {Scheme: "https", Host: "a.com", Port: 8443}}},
		{"route name says https", tlsSite("a.com"), func(c *Config) any { return c.Sites[0].Routes[0].Name }, "https://a.com:443*"},
		{"plain and TLS sites on 80 and 443", tlsSite("http://a.com") + tlsSite("a.com"), func(c *Config) any {
			return []Address{c.Sites[0].Addresses[0], c.Sites[1].Addresses[0]}
		}, []Address{{Scheme: "http", Host: "a.com", Port: 80}, {Scheme: "https", Host: "a.com", Port: 443}}},

		// The tls directive.
		{"internal", tlsSite("localhost", "tls internal"), siteTLS, &SiteTLS{Pos: at(2), Policy: wstls.Policy{Mode: wstls.ModeInternal}}},
		{"files", f.sub(tlsSite("files.example.com", "tls {cert} {key}")), siteTLS, &SiteTLS{Pos: at(2), Policy: wstls.Policy{Mode: wstls.ModeFiles, CertFile: f.cert, KeyFile: f.key}}},
		{"email", tlsSite("a.com", "tls ops@a.com"), siteTLS, &SiteTLS{Pos: at(2), Policy: wstls.Policy{Mode: wstls.ModeACME, Email: "ops@a.com"}}},
		{"acme options", f.sub(tlsSite("a.com", "tls ops@a.com {", "\tca https://ca.internal/dir", "\tca_root {cert}", "}")), siteTLS,
			&SiteTLS{Pos: at(2), Policy: wstls.Policy{Mode: wstls.ModeACME, Email: "ops@a.com", CA: "https://ca.internal/dir", CARoot: f.cert}}},
		{"on demand", tlsSite("https://:8443", "tls {", "\ton_demand", "\task http://127.0.0.1:9999/check?x=1", "\trate_limit 5 30s", "}"), siteTLS,
			&SiteTLS{Pos: at(2), Policy: wstls.Policy{Mode: wstls.ModeOnDemand, Ask: "http://127.0.0.1:9999/check?x=1", RateLimit: wstls.RateLimit{Burst: 5, Interval: 30 * time.Second}}}},
		{"on demand default rate", tlsSite("*.a.com", "tls {", "\ton_demand", "\task https://auth.a.com/ok", "}"), siteTLS,
			&SiteTLS{Pos: at(2), Policy: wstls.Policy{Mode: wstls.ModeOnDemand, Ask: "https://auth.a.com/ok"}}},

		// Global options.
		{"globals", f.sub("{\n\temail ops@a.com\n\tacme_ca https://ca.internal/dir\n\tacme_ca_root {cert}\n\tstorage {dir}\n\thttp_port 8080\n\thttps_port 8443\n}\n" + tlsSite("a.com")),
			func(c *Config) any { return c.Global.TLS },
			TLSOptions{Email: "ops@a.com", CA: "https://ca.internal/dir", CARoot: f.cert, StorageDir: f.dir, HTTPPort: 8080, HTTPSPort: 8443}},
		{"storage file_system", f.sub("{\n\tstorage file_system {dir}\n}\n" + tlsSite("a.com")), func(c *Config) any { return c.Global.TLS.StorageDir }, f.dir},
		{"storage block", f.sub("{\n\tstorage file_system {\n\t\troot {dir}\n\t}\n}\n" + tlsSite("a.com")), func(c *Config) any { return c.Global.TLS.StorageDir }, f.dir},
		{"default ports", tlsSite("a.com"), func(c *Config) any { return c.Global.TLS }, TLSOptions{HTTPPort: 80, HTTPSPort: 443}},
		{"storage consul", "{\n\tstorage consul\n\trenew_interval 30s\n}\n" + tlsSite("a.com"), func(c *Config) any { return c.Global.TLS },
			TLSOptions{StorageConsul: true, StoragePrefix: "wsproxy", RenewInterval: 30 * time.Second, HTTPPort: 80, HTTPSPort: 443}},
		{"storage consul prefix", "{\n\tstorage consul /edge/certs/\n}\n" + tlsSite("a.com"), func(c *Config) any { return c.Global.TLS.StoragePrefix }, "edge/certs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := mustParse(t, testFile, tt.body)
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v\nconfig:\n%s", got, tt.want, tt.body)
			}
		})
	}
}

func TestParseTLSErrors(t *testing.T) {
	t.Parallel()
	f := makeTLSFiles(t)
	global := func(lines ...string) string {
		return "{\n\t" + strings.Join(lines, "\n\t") + "\n}\n" + tlsSite("a.com")
	}
	for _, tt := range []struct {
		name string
		body string
		want []wantErr
	}{
		// tls CERT KEY: the files are read and checked at the tls line.
		{"missing certificate", tlsSite("a.com", "tls {missing} {key}"), []wantErr{{2, "tls: certificate file: open " + f.missing + ": no such file or directory"}}},
		{"missing key", tlsSite("a.com", "tls {cert} {missing}"), []wantErr{{2, "tls: key file: open " + f.missing + ": no such file or directory"}}},
		{"key not PEM", tlsSite("a.com", "tls {cert} {garbage}"), []wantErr{{2, "tls: certificate " + f.cert + " with key " + f.garbage + ": tls: failed to find any PEM data in key input"}}},
		{"certificate not PEM", tlsSite("a.com", "tls {garbage} {key}"), []wantErr{{2, "failed to find any PEM data in certificate input"}}},
		{"key of another certificate", tlsSite("a.com", "tls {cert} {otherkey}"), []wantErr{{2, "tls: private key does not match public key"}}},
		{"key is a directory", tlsSite("a.com", "tls {cert} "+filepath.Dir(f.cert)), []wantErr{{2, "tls: key file: read " + filepath.Dir(f.cert) + ": is a directory"}}},

		// The directive's shapes.
		{"unknown word", tlsSite("a.com", "tls on"), []wantErr{{2, `tls "on": want internal, an email address or CERT_FILE KEY_FILE`}}},
		{"bad email", tlsSite("a.com", "tls a@"), []wantErr{{2, `tls: "a@" is not an email address`}}},
		{"too many", tlsSite("a.com", "tls a b c"), []wantErr{{2, "tls: too many arguments"}}},
		{"twice", tlsSite("a.com", "tls internal", "tls internal"), []wantErr{{3, "tls already set at test.Caddyfile:2"}}},
		{"internal with block", tlsSite("a.com", "tls internal {", "\ton_demand", "}"), []wantErr{{2, "tls internal takes no block"}}},
		{"files with block", tlsSite("a.com", "tls {cert} {key} {", "\tca https://x/", "}"), []wantErr{{2, "tls files takes no block"}}},
		{"on demand without ask", tlsSite("a.com", "tls {", "\ton_demand", "}"), []wantErr{{2, `tls on_demand needs "ask URL"`}}},
		{"ask without on demand", tlsSite("a.com", "tls {", "\task http://x/", "}"), []wantErr{{3, "ask applies to on_demand only"}}},
		{"rate without on demand", tlsSite("a.com", "tls {", "\trate_limit 1 1m", "}"), []wantErr{{3, "rate_limit applies to on_demand only"}}},
		{"bad ask", tlsSite("a.com", "tls {", "\ton_demand", "\task ftp://x/", "}"), []wantErr{{4, `ask: "ftp://x/": want an http:// or https:// URL`}}},
		{"bad rate", tlsSite("a.com", "tls {", "\ton_demand", "\task http://x/", "\trate_limit 0 1m", "}"), []wantErr{{5, `rate_limit "0": want a whole number`}}},
		{"bad rate interval", tlsSite("a.com", "tls {", "\ton_demand", "\task http://x/", "\trate_limit 1 soon", "}"), []wantErr{{5, `rate_limit interval "soon"`}}},
		{"unknown option", tlsSite("a.com", "tls {", "\tissuer zerossl", "}"), []wantErr{{3, `unknown option "issuer" in tls; known: ask, ca, ca_root, on_demand, rate_limit`}}},
		{"option twice", tlsSite("a.com", "tls {", "\ton_demand", "\ton_demand", "\task http://x/", "}"), []wantErr{{4, "on_demand already set at test.Caddyfile:3"}}},
		{"missing ca_root", tlsSite("a.com", "tls {", "\tca_root {missing}", "}"), []wantErr{{3, "ca_root: open " + f.missing}}},
		{"no TLS address", tlsSite("http://a.com", "tls internal"), []wantErr{{2, "tls: the site has no TLS address"}}},

		// Ports.
		{"TLS on http_port", tlsSite("https://a.com:80"), []wantErr{{1, "site address https://a.com:80: port 80 is the http_port"}}},
		{"TLS and plain on one port", tlsSite(":8443", "tls internal") + tlsSite("http://:8443"),
			[]wantErr{{7, "site address http://:8443: port 8443 is already TLS for https://:8443 at test.Caddyfile:1; a port serves either TLS or plain HTTP"}}},
		{"plain and TLS on one port", tlsSite("b.com:8443") + tlsSite("https://a.com:8443"),
			[]wantErr{{6, "port 8443 is already plain HTTP for http://b.com:8443 at test.Caddyfile:1"}}},
		{"duplicate name", tlsSite("a.com") + tlsSite("https://A.com:443"), []wantErr{{6, "site address https://a.com:443 is already used at test.Caddyfile:1"}}},

		// Global options.
		{"ports equal", global("https_port 80"), []wantErr{{2, "https_port 80 is also the http_port"}}},
		{"http_port 443", global("http_port 443"), []wantErr{{2, "http_port 443 is also the https_port"}}},
		{"bad port", global("http_port 0"), []wantErr{{2, `http_port: port "0" must be a number from 1 to 65535`}}},
		{"email", global("email nobody"), []wantErr{{2, `email: "nobody" is not an email address`}}},
		{"acme_ca", global("acme_ca letsencrypt"), []wantErr{{2, `acme_ca: "letsencrypt": want an http:// or https:// URL`}}},
		{"acme_ca_root missing", f.sub(global("acme_ca_root {missing}")), []wantErr{{2, "acme_ca_root: open " + f.missing}}},
		{"acme_ca_root not PEM", f.sub(global("acme_ca_root {garbage}")), []wantErr{{2, "acme_ca_root: " + f.garbage + " holds no PEM certificate"}}},
		{"storage is a file", f.sub(global("storage {file}")), []wantErr{{2, "storage " + f.regularFile + " is a file, not a directory"}}},
		{"storage kind", global("storage redis x"), []wantErr{{2, `storage "redis": the storages are file_system and consul`}}},
		{"storage consul empty prefix", global("storage consul /"), []wantErr{{2, `storage consul "/": want a KV path`}}},
		{"storage consul block", global("storage consul {", "}"), []wantErr{{2, "storage does not take a block"}}},
		{"storage consul arguments", global("storage consul a b"), []wantErr{{2, "storage"}}},
		{"renew_interval", global("renew_interval soon"), []wantErr{{2, `renew_interval "soon": want a duration`}}},
		{"storage block without root", global("storage file_system {", "}"), []wantErr{{2, "storage file_system: missing root DIR"}}},
		{"storage block option", global("storage file_system {", "\tpath /x", "}"), []wantErr{{2, "missing root DIR"}, {3, `unknown storage option "path"`}}},
		{"email twice", global("email a@b.c", "email a@b.c"), []wantErr{{3, "email already set at test.Caddyfile:2"}}},
		{"email with block", global("email a@b.c {", "}"), []wantErr{{2, "email does not take a block"}}},
		{"unknown global lists TLS options", global("acme_dns x"), []wantErr{{2, "acme_ca, acme_ca_root, admin, client_ip_header, consul, email, grace_period, handshake_rate_per_ip, handshake_timeout, http_port, https_port, log_level"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := f.sub(tt.body)
			_, err := Parse(testFile, []byte(body))
			checkErrors(t, testFile, err, tt.want)
		})
	}
}

// TestParseTLSFilesReadAgain: a certificate file replaced between two
// parses (a reload) is read again: a broken pair is an error at once, a
// fixed one is accepted.
func TestParseTLSFilesReadAgain(t *testing.T) {
	t.Parallel()
	f := makeTLSFiles(t)
	body := f.sub(tlsSite("files.example.com", "tls {cert} {key}"))
	mustParse(t, testFile, body)
	good, err := os.ReadFile(f.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.key, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Parse(testFile, []byte(body))
	checkErrors(t, testFile, err, []wantErr{{2, "tls: certificate " + f.cert + " with key " + f.key + ": tls: failed to parse private key"}})
	if err := os.WriteFile(f.key, good, 0o600); err != nil {
		t.Fatal(err)
	}
	mustParse(t, testFile, body)
}
