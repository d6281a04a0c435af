package main

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/discovery/consultest"
	"github.com/wsproxy/wsproxy/examples/echoserver"
	"github.com/wsproxy/wsproxy/internal/testnet"
	"github.com/wsproxy/wsproxy/tls/pebbletest"
)

// The fleet tests run three `wsproxy run` processes that share a real
// Consul agent: certificates and the local CA in its KV store, the proxies
// registered in its catalog.

// fleetSize is how many proxies a fleet test runs.
const fleetSize = 3

// subst replaces each {key} of tmpl.
func subst(tmpl string, kv map[string]string) string {
	for k, v := range kv {
		tmpl = strings.ReplaceAll(tmpl, "{"+k+"}", v)
	}
	return tmpl
}

// waitFor polls cond every 100ms until it holds or d passes; it returns
// whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holdPorts returns n ports held until the processes that take them
// start (see testnet; Pebble picks its ports the same way).
func holdPorts(t *testing.T, n int) (ports []int, release func()) {
	return testnet.HoldPorts(t, n)
}

// exited reports whether the process has ended, keeping its result for
// exitCode and Cleanup.
func (p *proc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// waitLogFor is waitLog with a deadline of one's own; a process that exits
// fails it at once.
func (p *proc) waitLogFor(t *testing.T, re string, d time.Duration) {
	t.Helper()
	rx := regexp.MustCompile(re)
	if !waitFor(d, func() bool {
		if p.exited() {
			return true
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return rx.MatchString(p.logs.String())
	}) || !rx.MatchString(p.log()) {
		p.mu.Lock()
		defer p.mu.Unlock()
		t.Fatalf("no log line matching %q within %v in:\n%s", re, d, p.logs.String())
	}
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// handshake returns the certificate chain a proxy serves for name at addr,
// verified against roots.
func handshake(addr, name string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := cryptotls.DialWithDialer(d, "tcp", addr, &cryptotls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates, nil
}

// TestFleetACME: three proxies started together with `storage consul` and
// Pebble as the CA, for one site. Exactly one order reaches Pebble and all
// three serve its certificate. Pebble's certificates live 45s, so renewal
// comes within the test (renew_interval 1s): the fleet renews once, as
// Pebble's log of orders shows (one order replacing the certificate, by
// ARI), and all three serve the renewed certificate.
func TestFleetACME(t *testing.T) {
	t.Parallel()
	const validity = 45 * time.Second
	var (
		f     *acmeFleet
		first []string
	)
	for try := 1; ; try++ {
		f = startACMEFleet(t, validity)
		if !waitFor(10*time.Second, func() bool {
			first = f.serials()
			return first[0] == first[1] && first[1] == first[2] && !strings.HasPrefix(first[0], "error")
		}) {
			t.Fatalf("the proxies serve %q, want one certificate", first)
		}
		// Pebble (2.10) indexes a certificate by its serial's minimal bytes,
		// while an ARI certificate ID carries the DER integer, which has a
		// leading zero byte when the top bit is set. Such a certificate
		// (about 1 in 256 of Pebble's serials) cannot be replaced by ARI
		// there: every renewal order gets a 500 until certmagic's third
		// attempt, minutes later, leaves ARI out. Start over with another.
		if serial, _ := new(big.Int).SetString(first[0], 16); serial == nil || serial.Bytes()[0] < 0x80 || try == 3 {
			break
		}
		t.Logf("Pebble cannot match an ARI replacement of serial %s; starting the fleet again", first[0])
		f.stop()
	}
	pebble, procs := f.pebble, f.procs

	// Renewal.
	issued := pebble.Issued()
	if !waitFor(validity+30*time.Second, func() bool { return pebble.Issued() > issued }) {
		t.Fatalf("no renewal within %v of a %v certificate", validity+30*time.Second, validity)
	}
	renewedAt := time.Now()
	var now []string
	if !waitFor(20*time.Second, func() bool {
		now = f.serials()
		return now[0] != first[0] && now[0] == now[1] && now[1] == now[2]
	}) {
		t.Fatalf("20s after the renewal the proxies serve %q (before it: %s)", now, first[0])
	}
	t.Logf("renewed certificate served by all 3 proxies %v after Pebble issued it", time.Since(renewedAt).Round(time.Millisecond))
	checkOrders(t, pebble)
	for i, p := range procs {
		l := p.log()
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("proxy %d logged errors:\n%s", i, l)
		}
		t.Logf("proxy %d: obtained %d, renewed %d, reloaded a renewal from Consul %d", i,
			strings.Count(l, `msg="certificate obtained successfully"`), strings.Count(l, `msg="renewing certificate"`),
			strings.Count(l, "already renewed in storage; reloading stored certificate")+strings.Count(l, `msg="certificate appears to have been renewed already"`))
	}
}

// checkOrders checks Pebble's log: exactly one order that is not a
// renewal (the fleet's first certificate), every other order an ARI
// replacement of an earlier certificate, no certificate replaced twice, one
// certificate per order. Two instances renewing the same certificate would
// show as a second replacement of it or (certmagic's retry without ARI
// after a refusal) a second order that replaces nothing.
func checkOrders(t *testing.T, pebble *pebbletest.Server) {
	t.Helper()
	log := pebble.Log()
	orders, issued := strings.Count(log, "Added order"), pebble.Issued()
	replaced := map[string]int{}
	for _, m := range regexp.MustCompile(`ARI: order "[^"]+" is a replacement of "([^"]+)"`).FindAllStringSubmatch(log, -1) {
		replaced[m[1]]++
	}
	replacements := 0
	for orig, n := range replaced {
		replacements += n
		if n > 1 {
			t.Errorf("certificate of order %s replaced %d times", orig, n)
		}
	}
	t.Logf("Pebble: %d orders, %d of them renewals (ARI replacements), %d certificates issued", orders, replacements, issued)
	if orders-replacements != 1 || issued != orders {
		t.Fatalf("%d orders (%d renewals) and %d certificates: want one first order for the fleet, each renewal one order\n%s", orders, replacements, issued, log)
	}
}

// acmeFleet is TestFleetACME's fleet: a Consul agent, Pebble, and three
// proxies for one site with their certificates ready.
type acmeFleet struct {
	pebble *pebbletest.Server
	procs  [fleetSize]*proc
	https  [fleetSize]int
}

func startACMEFleet(t *testing.T, validity time.Duration) *acmeFleet {
	t.Helper()
	agent := consultest.Start(t)
	echo, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	type ports struct{ http, https int }
	var ps [fleetSize]ports
	free, release := holdPorts(t, 2*fleetSize)
	for i := range ps {
		ps[i] = ports{free[2*i], free[2*i+1]}
	}
	// Pebble validates challenges on proxy 0's ports: when another proxy
	// orders, proxy 0 answers from the challenge data in Consul.
	pebble := pebbletest.StartWith(t, pebbletest.Options{HTTPPort: ps[0].http, TLSPort: ps[0].https, Validity: validity})
	release()

	const tmpl = `{
	consul {
		address {agent}
	}
	storage consul fleet-acme
	acme_ca {dir}
	acme_ca_root {minica}
	email ops@wsproxy.test
	http_port {http}
	https_port {https}
	renew_interval 1s
}
fleet.wsproxy.test {
	route /ws {
		to {echo}
	}
}
`
	f := &acmeFleet{pebble: pebble}
	started := time.Now()
	for i := range f.procs {
		conf := writeFile(t, fmt.Sprintf("fleet-%d.Caddyfile", i), subst(tmpl, map[string]string{
			"agent": agent.Addr(), "dir": pebble.Directory, "minica": pebble.MiniCA, "echo": echo.Addr(),
			"http": strconv.Itoa(ps[i].http), "https": strconv.Itoa(ps[i].https),
		}))
		f.procs[i] = startProc(t, "run", "-config", conf)
		f.https[i] = ps[i].https
	}
	for _, p := range f.procs {
		p.waitLogFor(t, `msg="certificates ready"`, 2*time.Minute)
	}
	t.Logf("3 proxies have their certificate %v after they started", time.Since(started).Round(time.Millisecond))
	// One order for the three; a renewal may follow at once (Pebble's ARI
	// window for a 45s certificate is its whole life, and certmagic renews
	// at a random time in it), as one order replacing the first.
	checkOrders(t, pebble)
	return f
}

// serials returns the serial of the certificate each proxy serves, or the
// error its handshake got.
func (f *acmeFleet) serials() []string {
	serials := make([]string, fleetSize)
	for i, port := range f.https {
		chain, err := handshake("127.0.0.1:"+strconv.Itoa(port), "fleet.wsproxy.test", f.pebble.Roots)
		if err != nil {
			serials[i] = "error: " + err.Error()
			continue
		}
		serials[i] = chain[0].SerialNumber.Text(16)
	}
	return serials
}

// stop kills the proxies; the rest stops with the test.
func (f *acmeFleet) stop() {
	for _, p := range f.procs {
		p.cmd.Process.Kill()
	}
}

// TestFleetInternalCA: three proxies with `tls internal` and `storage
// consul` started at once make one local root between them, in Consul,
// and each serves a chain from it.
func TestFleetInternalCA(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	echo, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "internal"})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	const tmpl = `{
	consul {
		address {agent}
	}
	storage consul fleet-internal
}
localhost:{port} {
	tls internal
	route /ws {
		to {echo}
	}
}
`
	free, release := holdPorts(t, fleetSize)
	release()
	var ports [fleetSize]int
	var procs [fleetSize]*proc
	for i := range procs {
		ports[i] = free[i]
		conf := writeFile(t, fmt.Sprintf("internal-%d.Caddyfile", i), subst(tmpl, map[string]string{
			"agent": agent.Addr(), "echo": echo.Addr(), "port": strconv.Itoa(ports[i]),
		}))
		procs[i] = startProc(t, "run", "-config", conf)
	}
	for _, p := range procs {
		p.waitLogFor(t, `msg="certificates ready"`, time.Minute)
		p.waitLogFor(t, `root=consul:fleet-internal/data/pki/root.crt`, time.Second)
	}
	kv := agent.Client(t).KV()
	keys, _, err := kv.Keys("fleet-internal/data/pki/", "", nil)
	if err != nil || strings.Join(keys, " ") != "fleet-internal/data/pki/root.crt fleet-internal/data/pki/root.key" {
		t.Fatalf("local CA in Consul: %q, %v", keys, err)
	}
	p, _, err := kv.Get("fleet-internal/data/pki/root.crt", nil)
	if err != nil || p == nil {
		t.Fatalf("root: %v", err)
	}
	block, _ := pem.Decode(p.Value)
	if block == nil {
		t.Fatalf("root in Consul is not PEM: %q", p.Value)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	for i, port := range ports {
		chain, err := handshake("127.0.0.1:"+strconv.Itoa(port), "localhost", pool)
		if err != nil {
			t.Fatalf("proxy %d: %v (its chain is not from the root in Consul)\n%s", i, err, procs[i].log())
		}
		if err := chain[0].CheckSignatureFrom(root); err != nil {
			t.Fatalf("proxy %d: leaf not signed by the root: %v", i, err)
		}
	}
	t.Logf("3 proxies serve chains from the one root %q", root.Subject.CommonName)
}

// fleetRegistration is a fleet of proxies registered in Consul as service
// "wsproxy-fleet", each with its own site port and admin port, over
// shared backends with sticky routing.
type fleetRegistration struct {
	agent   *consultest.Agent
	client  *api.Client
	confs   [fleetSize]string
	ports   [fleetSize]int
	procs   [fleetSize]*proc
	service string
}

const registerTmpl = `{
	consul {
		address {agent}
		register {service} {
			check_interval 1s
			check_timeout 1s
			deregister_after 1m
		}
	}
	admin 127.0.0.1:{admin}
	grace_period 2s
}
127.0.0.1:{port} {
	route /chat {
		to {backends}
		lb_policy hash query:room
	}
}
`

// checks returns the status of each registered instance of the service's
// check, by service ID.
func (f *fleetRegistration) checks(t *testing.T) map[string]string {
	t.Helper()
	cs, _, err := f.client.Health().Checks(f.service, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range cs {
		out[c.ServiceID] = c.Status
	}
	return out
}

// passing returns the service's instances whose checks pass.
func (f *fleetRegistration) passing(t *testing.T) []*api.ServiceEntry {
	t.Helper()
	es, _, err := f.client.Health().Service(f.service, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestFleetRegistration: three proxies register themselves in Consul, one
// instance per site port with an HTTP check of /health/ready; a client
// finds them there (passing only) and a room's connections through each of
// the three land on the same backend. A SIGKILLed proxy turns critical
// within its check interval plus timeout and is removed by Consul after
// deregister_after (1m, Consul's minimum; its reaper runs every 30s, so up
// to 90s); started again, it is registered and passing. A proxy stopped by
// SIGTERM deregisters at once.
func TestFleetRegistration(t *testing.T) {
	t.Parallel()
	f := &fleetRegistration{agent: consultest.Start(t), service: "wsproxy-fleet"}
	f.client = f.agent.Client(t)
	var backends []string
	for i := range 3 {
		b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: fmt.Sprintf("backend-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		backends = append(backends, b.Addr())
	}
	free, release := holdPorts(t, 2*fleetSize)
	release()
	for i := range f.procs {
		f.ports[i] = free[2*i]
		f.confs[i] = writeFile(t, fmt.Sprintf("register-%d.Caddyfile", i), subst(registerTmpl, map[string]string{
			"agent": f.agent.Addr(), "service": f.service, "admin": strconv.Itoa(free[2*i+1]),
			"port": strconv.Itoa(f.ports[i]), "backends": strings.Join(backends, " "),
		}))
		f.procs[i] = startProc(t, "run", "-config", f.confs[i])
	}
	var found []*api.ServiceEntry
	if !waitFor(30*time.Second, func() bool { found = f.passing(t); return len(found) == fleetSize }) {
		t.Fatalf("%d passing instances of %s, want %d; checks %v", len(found), f.service, fleetSize, f.checks(t))
	}

	// Clients find the proxies in Consul; a room lands on one backend
	// through each of them.
	var addrs []string
	for _, e := range found {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		if e.Service.Meta["scheme"] != "http" || e.Service.Meta["wsproxy_port"] != strconv.Itoa(e.Service.Port) {
			t.Errorf("instance %s meta %v", e.Service.ID, e.Service.Meta)
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
	}
	used := map[string]bool{}
	for room := range 20 {
		var got []string
		for _, a := range addrs {
			c, id := echoID(t, fmt.Sprintf("ws://%s/chat?room=r%d", a, room))
			c.Close()
			got = append(got, id)
		}
		if got[0] != got[1] || got[1] != got[2] {
			t.Fatalf("room r%d: backends %q through proxies %q, want one", room, got, addrs)
		}
		used[got[0]] = true
	}
	t.Logf("20 rooms through the %d proxies found in Consul: each on one backend, %d backends used", len(addrs), len(used))

	// SIGKILL proxy 0: critical within interval + timeout, then reaped.
	id := "" // proxy 0's instance
	for _, e := range found {
		if e.Service.Port == f.ports[0] {
			id = e.Service.ID
		}
	}
	if err := f.procs[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-f.procs[0].done
	f.procs[0].done <- nil // for its Cleanup
	killed := time.Now()
	if !waitFor(10*time.Second, func() bool { return f.checks(t)[id] == api.HealthCritical }) {
		t.Fatalf("instance %s not critical 10s after SIGKILL: %v", id, f.checks(t))
	}
	critical := time.Since(killed)
	t.Logf("SIGKILLed proxy critical in Consul after %v (check interval 1s, timeout 1s)", critical.Round(100*time.Millisecond))
	if critical > 2*time.Second+time.Second {
		t.Errorf("critical after %v, more than interval + timeout (2s) and 1s of slack", critical)
	}
	if n := len(f.passing(t)); n != fleetSize-1 {
		t.Errorf("%d passing instances after a kill, want %d", n, fleetSize-1)
	}
	gone := func() bool {
		svcs, err := f.client.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		_, ok := svcs[id]
		return !ok
	}
	if !waitFor(100*time.Second, gone) {
		t.Fatalf("instance %s still registered 100s after SIGKILL (deregister_after 1m, reaper every 30s)", id)
	}
	reaped := time.Since(killed)
	t.Logf("SIGKILLed proxy deregistered by Consul %v after the kill (deregister_after 1m; Consul reaps every 30s)", reaped.Round(time.Second))
	if reaped < time.Minute {
		t.Errorf("deregistered after %v, before deregister_after (1m)", reaped)
	}

	// Started again: registered and passing.
	f.procs[0] = startProc(t, "run", "-config", f.confs[0])
	restarted := time.Now()
	if !waitFor(30*time.Second, func() bool { return len(f.passing(t)) == fleetSize }) {
		t.Fatalf("restarted proxy not passing after 30s: %v", f.checks(t))
	}
	t.Logf("restarted proxy registered and passing %v after its start", time.Since(restarted).Round(100*time.Millisecond))

	// SIGTERM: deregistered before it drains.
	f.procs[1].cmd.Process.Signal(syscall.SIGTERM)
	if !waitFor(5*time.Second, func() bool { return len(f.checks(t)) == fleetSize-1 }) {
		t.Fatalf("SIGTERMed proxy still registered after 5s: %v", f.checks(t))
	}
	if code := f.procs[1].exitCode(t); code != 0 {
		t.Fatalf("SIGTERMed proxy exited %d", code)
	}
}
