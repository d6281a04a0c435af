package proxy

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/discovery/consultest"
	"github.com/wsproxy/wsproxy/internal/testnet"
)

// instances returns the agent's instances of service, by port, with the
// output of each one's HTTP check.
func instances(t *testing.T, c *api.Client, service string) map[int]string {
	t.Helper()
	svcs, err := c.Agent().ServicesWithFilter(fmt.Sprintf("Service == %q", service))
	if err != nil {
		t.Fatal(err)
	}
	// Consul reports no check definition; the output of an HTTP check
	// that has run names its URL.
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for id, s := range svcs {
		out[s.Port] = ""
		if chk := checks["service:"+id]; chk != nil && chk.Type == "http" {
			out[s.Port] = chk.Output
		}
	}
	return out
}

// TestSelfRegistrationFollowsConfig: a proxy is not Ready before Start; once
// started it registers one instance per site port, with the admin API's
// readiness URL of that port as its check; a reload that adds and removes
// site ports, or drops `register`, is followed in Consul; Shutdown
// deregisters first of all.
func TestSelfRegistrationFollowsConfig(t *testing.T) {
	t.Parallel()
	a := consulAgent(t)
	c := a.Client(t)
	svc := uniqueService(t)
	other := freeTestPort(t)
	conf := func(register bool, sites ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:2019\n\tconsul {\n\t\taddress %s\n", a.Addr())
		if register {
			fmt.Fprintf(&b, "\t\tregister %s edge {\n\t\t\tcheck_interval 200ms\n\t\t}\n", svc)
		}
		b.WriteString("\t}\n}\n")
		for _, s := range sites {
			fmt.Fprintf(&b, "%s {\n\troute /* {\n\t\tto {b0}\n\t}\n}\n", s)
		}
		return b.String()
	}

	// Not started: not ready.
	cfg, err := config.Parse("test.Caddyfile", []byte(strings.ReplaceAll(conf(true, "127.0.0.1:1"), "{b0}", "127.0.0.1:2")))
	if err != nil {
		t.Fatal(err)
	}
	unstarted, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Ready(0); err == nil || !strings.Contains(err.Error(), "starting") {
		t.Errorf("Ready before Start: %v", err)
	}
	unstarted.Shutdown(t.Context())

	tp := startProxy(t, conf(true, "127.0.0.1:{port}"), 1)
	if err := tp.srv.Ready(0); err != nil {
		t.Fatalf("Ready after Start: %v", err)
	}
	if err := tp.srv.Ready(other); err == nil {
		t.Fatalf("Ready(%d), a port it does not listen on: nil", other)
	}
	want := func(what string, ports ...int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := instances(t, c, svc)
			ok := len(got) == len(ports)
			for _, p := range ports {
				if !strings.Contains(got[p], "http://127.0.0.1:2019/health/ready?port="+strconv.Itoa(p)) {
					ok = false
				}
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: instances %v, want ports %v", what, got, ports)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	want("after Start", tp.port)

	reload := func(body string) {
		t.Helper()
		cfg, err := config.Parse("test.Caddyfile", []byte(strings.ReplaceAll(body, "{b0}", tp.backends[0].Addr())))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.srv.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	sites := []string{"127.0.0.1:" + strconv.Itoa(tp.port), "127.0.0.1:" + strconv.Itoa(other)}
	reload(conf(true, sites...))
	want("a reload adding a port", tp.port, other)
	reload(conf(true, sites[1]))
	want("a reload removing a port", other)
	reload(conf(false, sites[1]))
	want("a reload without register")
	reload(conf(true, sites...))
	want("register again", tp.port, other)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tp.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := instances(t, c, svc); len(got) != 0 {
		t.Fatalf("after Shutdown: instances %v", got)
	}
	if err := tp.srv.Ready(0); err == nil {
		t.Fatal("Ready after Shutdown: nil")
	}
}

// freeTestPort returns a port to listen on (see testnet).
func freeTestPort(t *testing.T) int { return testnet.FreePort(t) }

// TestConsulDownKeepsServing: a proxy with its certificates in Consul
// (storage consul, tls internal) and registered there goes on serving
// wss:// and answering ready while the agent is stopped; when the agent
// comes back empty (-dev keeps nothing) the proxy registers itself again.
func TestConsulDownKeepsServing(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	c := a.Client(t)
	tp := newTLSProxy(t, 0, 0)
	tp.vars["agent"] = a.Addr()
	const conf = `{
	consul {
		address {agent}
		register down-test {
			check_url http://127.0.0.1:1/
		}
	}
	storage consul down-test
}
localhost:{port} {
	tls internal
	route /ws {
		to {b0}
	}
}`
	if err := tp.start(t, conf); err != nil {
		t.Fatal(err)
	}
	p, _, err := c.KV().Get("down-test/data/pki/root.crt", nil)
	if err != nil || p == nil {
		t.Fatalf("root in Consul: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.Value)
	registered := func() bool {
		svcs, err := c.Agent().ServicesWithFilter(`Service == "down-test"`)
		return err == nil && len(svcs) == 1
	}
	waitUntil(t, 10*time.Second, "registered", registered)

	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c, _ := wssEcho(t, tp.addr, "localhost:"+strconv.Itoa(tp.port), roots)
		c.Close()
	}
	if err := tp.srv.Ready(0); err != nil {
		t.Fatalf("not ready with Consul down: %v", err)
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitUntil(t, 60*time.Second, "registered again after the agent came back", registered)
	t.Logf("registered again %v after the agent came back empty", time.Since(back).Round(100*time.Millisecond))
}

// waitUntil polls cond every 100ms for up to d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
