// Package pebbletest runs Pebble, a real ACME server, for tests: on
// loopback, on free ports of its own, with pebble-challtestsrv as its DNS
// server answering 127.0.0.1 for every name, stopped when the test ends.
//
// The binaries are $PEBBLE_BIN (and pebble-challtestsrv and certs/ beside
// it, as scripts/install-pebble.sh lays them out) if that is set, else what
// scripts/install-pebble.sh builds (or finds in its cache). If neither works
// the test fails with the reason: the ACME tests are never skipped.
package pebbletest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/installed"
)

// Version is the Pebble release the tests expect; it must match
// scripts/install-pebble.sh.
const Version = "v2.10.1"

// startTimeout bounds how long Pebble may take to answer its directory.
const startTimeout = 30 * time.Second

// Server is a running Pebble and its DNS server. Its methods are safe for
// concurrent use.
type Server struct {
	// Directory is the ACME directory URL.
	Directory string
	// MiniCA is the PEM file an ACME client trusts to reach Pebble (its
	// HTTPS certificate's root): a CA root setting, not a TLS client's.
	MiniCA string
	// Roots holds Pebble's issuance root: what a TLS client trusts to
	// trust the certificates Pebble issues.
	Roots *x509.CertPool

	log   syncBuffer
	mu    sync.Mutex
	procs []proc
}

// Start starts Pebble validating HTTP-01 challenges on httpPort and
// TLS-ALPN-01 challenges on tlsPort of 127.0.0.1, refusing orders for the
// blocked names. Every validation is real (no sleep, no fake success,
// authorizations never reused). Both processes are killed by PID when the
// test ends (or by Stop); Pebble's log is printed if the test failed. A
// port taken by someone else between its choice and Pebble's bind means a
// new try on other ports, three in all.
func Start(t testing.TB, httpPort, tlsPort int, blocked ...string) *Server {
	t.Helper()
	return StartWith(t, Options{HTTPPort: httpPort, TLSPort: tlsPort, Blocked: blocked})
}

// Options are Pebble's settings for StartWith.
type Options struct {
	// HTTPPort and TLSPort of 127.0.0.1 are where HTTP-01 and TLS-ALPN-01
	// challenges are validated.
	HTTPPort, TLSPort int
	// Blocked names are refused.
	Blocked []string
	// Validity is how long the certificates Pebble issues are valid, in
	// whole seconds; Pebble's default (about 90 days) if zero. A short one
	// makes renewals happen within a test.
	Validity time.Duration
}

// StartWith is Start with all of Pebble's settings.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	httpPort, tlsPort, blocked := o.HTTPPort, o.TLSPort, o.Blocked
	bin, certs := Binary(t)
	p := &Server{MiniCA: filepath.Join(certs, "pebble.minica.pem")}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("pebble:\n%s", p.Log())
		}
	})
	if blocked == nil {
		blocked = []string{}
	}
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = p.start(t.TempDir(), bin, certs, httpPort, tlsPort, blocked, o.Validity); err == nil {
			return p
		}
		p.Stop()
		fmt.Fprintf(&p.log, "pebbletest: attempt %d: %v\n", attempt, err)
	}
	t.Fatalf("pebbletest: %v", err)
	return nil
}

// start runs pebble-challtestsrv and Pebble on fresh ports and waits for
// Pebble's directory.
func (p *Server) start(dir, bin, certs string, httpPort, tlsPort int, blocked []string, validity time.Duration) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	dnsAddr, challMgmt, listen, mgmt := addr(0), addr(1), addr(2), addr(3)
	if err := p.run(filepath.Join(filepath.Dir(bin), "pebble-challtestsrv"), nil,
		"-dnsserver", dnsAddr,
		"-management", challMgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""); err != nil {
		return err
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    filepath.Join(certs, "cert.pem"),
		"privateKey":                     filepath.Join(certs, "key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"domainBlocklist":                blocked,
		"retryAfter":                     map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm":                   "ecdsa",
	}}
	if validity > 0 {
		cfg["pebble"].(map[string]any)["profiles"] = map[string]any{
			"default": map[string]any{"description": "short-lived, for tests", "validityPeriod": int64(validity / time.Second)},
		}
	}
	data, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		return err
	}
	if err := p.run(bin, []string{
		"PEBBLE_VA_NOSLEEP=1",      // validate at once
		"PEBBLE_VA_ALWAYS_VALID=0", // really validate
		"PEBBLE_WFE_NONCEREJECT=0", // no random badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order is validated
	}, "-config", cfgFile, "-dnsserver", dnsAddr); err != nil {
		return err
	}

	minica, err := os.ReadFile(p.MiniCA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(minica)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()

	directory := "https://" + listen + "/dir"
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if p.exited() {
			return fmt.Errorf("pebble or its DNS server exited at start (a port taken?): %v", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pebble did not come up within %v: %v", startTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := client.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		return err
	}
	root, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pebble root: %v %d", err, resp.StatusCode)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(root) {
		return fmt.Errorf("pebble root is not PEM: %q", root)
	}
	p.mu.Lock()
	p.Directory, p.Roots = directory, roots
	p.mu.Unlock()
	return nil
}

// proc is one started process and a channel closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *Server) run(bin string, env []string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = &p.log
	cmd.Stderr = &p.log
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	pr := proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(pr.done)
	}()
	p.mu.Lock()
	p.procs = append(p.procs, pr)
	p.mu.Unlock()
	return nil
}

// exited reports whether a process has ended.
func (p *Server) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.procs {
		select {
		case <-pr.done:
			return true
		default:
		}
	}
	return false
}

// Stop kills Pebble and its DNS server by PID and waits for them. Stopping
// a stopped Server does nothing.
func (p *Server) Stop() {
	p.mu.Lock()
	procs := p.procs
	p.procs = nil
	p.mu.Unlock()
	for _, pr := range procs {
		_ = pr.cmd.Process.Kill()
		<-pr.done
	}
}

// Log returns what Pebble and its DNS server wrote.
func (p *Server) Log() string { return p.log.String() }

// Orders counts the orders Pebble has taken (new-order requests it
// accepted).
func (p *Server) Orders() int { return strings.Count(p.log.String(), "Added order") }

// Issued counts the certificates Pebble has issued.
func (p *Server) Issued() int { return strings.Count(p.log.String(), "Issued certificate serial") }

var install struct {
	once sync.Once
	bin  string
	err  error
}

// Binary returns the pebble binary and the directory of its test
// certificates, running scripts/install-pebble.sh (found in the working
// directory or a parent) if PEBBLE_BIN is not set. It fails t if neither
// gives a complete install.
func Binary(t testing.TB) (bin, certs string) {
	t.Helper()
	install.once.Do(func() { install.bin, install.err = findBinary() })
	if install.err != nil {
		t.Fatalf("pebbletest: %v", install.err)
	}
	return install.bin, filepath.Join(filepath.Dir(install.bin), "certs")
}

func findBinary() (string, error) {
	return installed.Binary("PEBBLE_BIN", "install-pebble.sh", "PEBBLE_VERSION="+Version)
}

// FreePort returns a loopback TCP port that was free a moment ago; with
// udp, one free for UDP too.
func FreePort(t testing.TB, udp bool) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if udp {
			pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				ln.Close()
				continue
			}
			pc.Close()
		}
		ln.Close()
		return port
	}
	t.Fatal("pebbletest: no free port")
	return 0
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// the first one for UDP too (a DNS server's). All are held until all are
// chosen, so none is returned twice.
func freePorts(n int) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100 {
			return nil, errors.New("no free ports on loopback")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		if len(ports) == 0 {
			pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				continue // keep the TCP one held, try another
			}
			held = append(held, pc)
		}
		ports = append(ports, port)
	}
	return ports, nil
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
