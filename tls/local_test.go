package tls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pipeHandshake runs a TLS handshake between a client trusting roots (SNI
// sni, none if empty) and a server using cfg, over loopback TCP (the server's
// local address is 127.0.0.1).
func pipeHandshake(cfg *tls.Config, sni string, roots *x509.CertPool, opts ...func(*tls.Config)) (tls.ConnectionState, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		errc <- tls.Server(s, cfg).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	ccfg := &tls.Config{ServerName: sni, RootCAs: roots, NextProtos: []string{"http/1.1"},
		InsecureSkipVerify: sni == "", // verified below against the IP
		VerifyConnection: func(cs tls.ConnectionState) error {
			if sni != "" {
				return nil
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"})
			return err
		}}
	for _, o := range opts {
		o(ccfg)
	}
	cl := tls.Client(c, ccfg)
	err = cl.Handshake()
	c.Close()
	if serr := <-errc; err == nil && serr != nil {
		err = serr
	}
	return cl.ConnectionState(), err
}

func rootPool(t testing.TB, file string) *x509.CertPool {
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

// TestInternal: `tls internal` issues from a local CA whose root, at the
// printed path, is all a client needs to trust; a second Manager over the
// same storage reuses root and certificates.
func TestInternal(t *testing.T) {
	checkLeaks := noLeaks(t)
	dir := t.TempDir()
	g := Global{StorageDir: dir, Logger: testLogger(t)}
	sites := []Site{{Names: []string{"localhost", "127.0.0.1", "*.dev.test"}, Policy: Policy{Mode: ModeInternal}}}
	m, err := New(g, sites)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "pki", "root.crt"); m.LocalRoot() != want {
		t.Errorf("LocalRoot() = %q, want %q", m.LocalRoot(), want)
	}
	if err := m.Start(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	roots := rootPool(t, m.LocalRoot())
	for _, sni := range []string{"localhost", "a.dev.test", ""} {
		state, err := pipeHandshake(m.TLSConfig(), sni, roots)
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		if state.NegotiatedProtocol != "http/1.1" || state.Version != tls.VersionTLS13 {
			t.Errorf("SNI %q: ALPN %q version %x", sni, state.NegotiatedProtocol, state.Version)
		}
		leaf := state.PeerCertificates[0]
		if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("SNI %q: key %T, want ECDSA P-256", sni, leaf.PublicKey)
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 8*24*time.Hour {
			t.Errorf("SNI %q: leaf valid for %v", sni, life)
		}
	}
	tls11 := func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }
	if _, err := pipeHandshake(m.TLSConfig(), "localhost", roots, tls11); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("TLS 1.1 handshake: %v, want a protocol version error", err)
	}
	if _, err := pipeHandshake(m.TLSConfig(), "example.com", roots); err == nil {
		t.Error("handshake for a name no site serves succeeded")
	}
	exp := m.Expiry()
	for _, n := range []string{"localhost", "127.0.0.1", "*.dev.test"} {
		if exp[n].Before(time.Now().Add(6 * 24 * time.Hour)) {
			t.Errorf("Expiry()[%s] = %v", n, exp[n])
		}
	}
	m.Stop()

	rootPEM, _ := os.ReadFile(m.LocalRoot())
	m2, err := New(g, sites)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(m2.LocalRoot()); string(again) != string(rootPEM) {
		t.Error("second Manager made a new root")
	}
	if !m2.Expiry()["localhost"].Equal(exp["localhost"]) {
		t.Error("second Manager issued a new certificate instead of loading it")
	}
	m2.Stop()
	checkLeaks()
}

// writeCert writes a certificate for names signed by a fresh CA, and its key,
// into dir; it returns the files and the CA pool.
func writeCert(t testing.TB, dir, prefix string, names ...string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, prefix+".crt"), filepath.Join(dir, prefix+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return certFile, keyFile, roots
}

// TestFiles: `tls CERT KEY` serves the files, for its names or (without
// names) any host, and a new Manager reads them again.
func TestFiles(t *testing.T) {
	checkLeaks := noLeaks(t)
	dir := t.TempDir()
	certA, keyA, rootsA := writeCert(t, dir, "a", "files.test", "*.files.test")
	certB, keyB, rootsB := writeCert(t, dir, "b", "other.test")
	g := Global{StorageDir: t.TempDir(), Logger: testLogger(t)}
	sites := []Site{
		{Names: []string{"files.test", "*.files.test"}, Policy: Policy{Mode: ModeFiles, CertFile: certA, KeyFile: keyA}},
		{Policy: Policy{Mode: ModeFiles, CertFile: certB, KeyFile: keyB}}, // any other host
	}
	m, err := New(g, sites)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	for _, c := range []struct {
		sni   string
		roots *x509.CertPool
		name  string
	}{{"files.test", rootsA, "files.test"}, {"x.files.test", rootsA, "x.files.test"}, {"other.test", rootsB, "other.test"}} {
		state, err := pipeHandshake(m.TLSConfig(), c.sni, c.roots)
		if err != nil {
			t.Fatalf("SNI %s: %v", c.sni, err)
		}
		if err := state.PeerCertificates[0].VerifyHostname(c.name); err != nil {
			t.Error(err)
		}
	}
	// Any other SNI gets the catch-all site's certificate (which a client
	// then rejects for the name).
	if _, err := pipeHandshake(m.TLSConfig(), "unknown.test", rootsB); err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Errorf("unknown SNI: %v, want other.test's certificate", err)
	}
	if exp := m.Expiry(); exp["files.test"].IsZero() || exp["other.test"].IsZero() {
		t.Errorf("Expiry() = %v", exp)
	}

	// Reload after the files changed: the new Manager serves the new pair.
	certA2, keyA2, rootsA2 := writeCert(t, dir, "a2", "files.test")
	for _, f := range [][2]string{{certA2, certA}, {keyA2, keyA}} {
		if err := os.Rename(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	m2, err := New(g, sites[:1])
	if err == nil || !strings.Contains(err.Error(), "does not cover *.files.test") {
		t.Fatalf("new pair without the wildcard: %v", err)
	}
	m2, err = New(g, []Site{{Names: []string{"files.test"}, Policy: sites[0].Policy}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeHandshake(m2.TLSConfig(), "files.test", rootsA2); err != nil {
		t.Errorf("after reload: %v", err)
	}
	m2.Stop()
	m.Stop()
	checkLeaks()
}

// TestFilesErrors: unreadable, broken or mismatched files are refused by New
// with the site and the file.
func TestFilesErrors(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := writeCert(t, dir, "a", "files.test")
	_, otherKey, _ := writeCert(t, dir, "b", "files.test")
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("not a key\n"), 0o600)
	missing := filepath.Join(dir, "missing.key")
	for _, c := range []struct {
		name      string
		cert, key string
		want      []string
	}{
		{"missing key", cert, missing, []string{"key file", missing, "no such file"}},
		{"key is a directory", cert, dir, []string{"key file", dir, "is a directory"}},
		{"missing cert", filepath.Join(dir, "nope.crt"), key, []string{"certificate file", "nope.crt"}},
		{"garbage key", cert, garbage, []string{cert, garbage, "failed to find any PEM data in key input"}},
		{"mismatched pair", cert, otherKey, []string{cert, otherKey, "private key does not match public key"}},
		{"no key given", cert, "", []string{"needs a certificate file and a key file"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(Global{StorageDir: t.TempDir()}, []Site{
				{Names: []string{"ok.test"}, Policy: Policy{Mode: ModeInternal}},
				{Names: []string{"files.test"}, Policy: Policy{Mode: ModeFiles, CertFile: c.cert, KeyFile: c.key}},
			})
			var se *SiteError
			if !errors.As(err, &se) || se.Index != 1 || se.Site != "files.test" {
				t.Fatalf("got %v, want a SiteError for site 1", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "tls: site files.test: ") {
				t.Errorf("%q does not start with the site", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not contain %q", msg, w)
				}
			}
		})
	}
}
