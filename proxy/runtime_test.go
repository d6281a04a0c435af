package proxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/internal/testnet"
)

// TestReloadAppliesServerSettings: handshake_timeout and max_header_bytes
// changed by a reload apply to the next connection on a port both configs
// keep (the port gets a new fasthttp.Server; the old one finishes what it
// serves).
func TestReloadAppliesServerSettings(t *testing.T) {
	t.Parallel()
	backend := "{b0}"
	conf := func(global string) string {
		return "{\n" + global + "\n}\n:{port} {\n\troute /* {\n\t\tto " + backend + "\n\t}\n}"
	}
	tp := startProxy(t, conf("\thandshake_timeout 10s\n\tmax_header_bytes 16KB"), 1)
	backend = tp.backends[0].Addr()
	big := wsHead("/ws", "X-Big: "+strings.Repeat("a", 6000))
	rc := rawRequest(t, tp.addr, big)
	rc.conn.Close()
	if rc.Status != 101 {
		t.Fatalf("6 KB header under max_header_bytes 16KB: %d", rc.Status)
	}

	for i := 0; i < 2; i++ { // and again, past the server the first reload retired
		tp.reload(t, conf("\thandshake_timeout 300ms\n\tmax_header_bytes 4KB"))
		rc = rawRequest(t, tp.addr, big)
		rc.conn.Close()
		if rc.Status != 431 {
			t.Fatalf("6 KB header after a reload to max_header_bytes 4KB: %d, want 431", rc.Status)
		}
		if d := stallHandshake(t, tp.addr); d < 250*time.Millisecond || d > 3*time.Second {
			t.Fatalf("stalled handshake cut after %v, want about 300ms after the reload", d)
		}
		tp.reload(t, conf("\thandshake_timeout 10s\n\tmax_header_bytes 16KB"))
		rc = rawRequest(t, tp.addr, big)
		rc.conn.Close()
		if rc.Status != 101 {
			t.Fatalf("6 KB header after a reload back to 16KB: %d", rc.Status)
		}
	}
}

// stallHandshake sends half a request and returns how long the proxy
// takes to close the connection.
func stallHandshake(t *testing.T, addr string) time.Duration {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, c)
	return time.Since(start)
}

// TestHTTPClientsPerSettingsAndRetired: plain-HTTP clients are per backend
// and per the settings that shape them (two routes to one backend with
// different dial timeouts get two), belong to the runtime, and a reload
// that drops one's settings closes its idle connections.
func TestHTTPClientsPerSettingsAndRetired(t *testing.T) {
	t.Parallel()
	var open atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		},
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	addr := ln.Addr().String()
	route := func(name, dial string) string {
		return "\troute /" + name + " {\n\t\tname " + name + "\n\t\tto " + addr + "\n\t\tdial_timeout " + dial + "\n\t}\n"
	}
	tp := startProxy(t, ":{port} {\n"+route("a", "1s")+route("b", "2s")+"}", 0)
	get := func(path string) {
		t.Helper()
		resp, err := http.Get("http://" + tp.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
	get("/a")
	get("/b")
	rt := tp.srv.rt.Load()
	if n := rt.clients.count(); n != 2 {
		t.Fatalf("%d HTTP clients for two routes with different dial timeouts to one backend, want 2", n)
	}
	waitFor(t, func() bool { return open.Load() == 2 }) // one idle connection each

	tp.reload(t, ":{port} {\n"+route("a", "1s")+"}")
	if n := tp.srv.rt.Load().clients.count(); n != 1 || tp.srv.rt.Load().clients.get(rt.byName["a"].clientKey(addr)) == nil {
		t.Fatalf("after dropping route /b: %d clients, want /a's only", n)
	}
	waitFor(t, func() bool { return open.Load() == 1 }) // /b's idle connection closed, /a's kept
	get("/a")
	if open.Load() != 1 {
		t.Fatalf("%d backend connections, want /a's idle one reused", open.Load())
	}
}

func (c *httpClients) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// TestReloadReleasesRetiredConsul: a reload that changes the consul block
// closes the old Consul client when the old runtime retires (not at
// shutdown), and one that keeps the block keeps the client.
func TestReloadReleasesRetiredConsul(t *testing.T) {
	t.Parallel()
	agent := consulAgent(t)
	svc := uniqueService(t)
	conf := func(token string) string {
		return "{\n\tconsul {\n\t\taddress " + agent.Addr() + "\n\t\ttoken " + token + "\n\t}\n}\n:{port} {\n\troute /* {\n\t\tconsul " + svc + "\n\t}\n}"
	}
	tp := startProxy(t, conf("a"), 0)
	first := tp.srv.rt.Load().consul
	tp.reload(t, conf("a"))
	if c := tp.srv.rt.Load().consul; c != first || c.Closed() {
		t.Fatalf("a reload with the same consul block made a new client (%v) or closed it (%v)", c != first, c.Closed())
	}
	tp.reload(t, conf("b"))
	if c := tp.srv.rt.Load().consul; c == first || c.Closed() {
		t.Fatal("a reload with a new consul block kept the old client, or closed the new one")
	}
	if !first.Closed() {
		t.Fatal("the retired runtime's Consul client is still open")
	}
	tp.reload(t, strings.Replace(conf("b"), "consul "+svc, "to 127.0.0.1:9", 1)) // no route uses Consul
	if tp.srv.rt.Load().consul != nil {
		t.Fatal("a runtime without Consul routes holds a client")
	}
}

// TestHTTPClientsOfDepartedInstancesDropped: a Consul route's plain-HTTP
// clients follow its instances. When one leaves the service its client is
// dropped and its idle connection closed, so a service whose instances
// come and go does not leave a client per address it ever had.
func TestHTTPClientsOfDepartedInstancesDropped(t *testing.T) {
	t.Parallel()
	agent := consulAgent(t)
	c := agent.Client(t)
	svc := uniqueService(t)
	type backend struct {
		addr string
		open atomic.Int64
	}
	var bs [2]*backend
	for i := range bs {
		b := &backend{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b.addr = ln.Addr().String()
		id := strconv.Itoa(i)
		hs := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, id) }),
			ConnState: func(_ net.Conn, st http.ConnState) {
				switch st {
				case http.StateNew:
					b.open.Add(1)
				case http.StateClosed, http.StateHijacked:
					b.open.Add(-1)
				}
			},
		}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		_, port, _ := net.SplitHostPort(b.addr)
		p, _ := strconv.Atoi(port)
		err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: svc + "-" + id, Name: svc, Address: "127.0.0.1", Port: p,
			Check: &api.AgentServiceCheck{CheckID: "check-" + svc + "-" + id, TTL: "1h", Status: api.HealthPassing}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Agent().ServiceDeregister(svc + "-" + id) })
		bs[i] = b
	}
	tp := startProxy(t, consulConf(agent, svc, "\n\t\tlb_policy round_robin"), 0)
	seen := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for len(seen) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("reached %v of two instances", seen)
		}
		resp, err := http.Get("http://" + tp.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			seen[string(body)] = true
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n := tp.srv.rt.Load().clients.count(); n != 2 {
		t.Fatalf("%d HTTP clients for two instances, want 2", n)
	}
	waitFor(t, func() bool { return bs[0].open.Load() == 1 && bs[1].open.Load() == 1 }) // one idle connection each
	if err := c.Agent().ServiceDeregister(svc + "-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return tp.srv.rt.Load().clients.count() == 1 })
	waitFor(t, func() bool { return bs[1].open.Load() == 0 }) // the departed instance's idle connection closed
	if bs[0].open.Load() != 1 {
		t.Fatalf("%d connections to the instance that stayed, want its idle one kept", bs[0].open.Load())
	}
}

// TestConsulRouteWithoutGlobalBlock: a route's consul without a global
// consul block uses the client's defaults; building it used to dereference
// the missing block (a panic at start, and in validate).
func TestConsulRouteWithoutGlobalBlock(t *testing.T) {
	t.Parallel()
	conf := "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t)) + " {\n\troute /chat {\n\t\tconsul chat\n\t}\n}\n"
	cfg, err := config.Parse("test.Caddyfile", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(cfg); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	srv, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv.Shutdown(t.Context())
}
