package proxy

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/discovery/consultest"
	"github.com/wsproxy/wsproxy/examples/echoserver"
)

// sharedConsul is one real agent for the tests that do not stop it.
var sharedConsul = sync.OnceValues(consultest.New)

func TestMain(m *testing.M) {
	code := m.Run()
	if a, err := sharedConsul(); err == nil {
		a.Stop()
	}
	os.Exit(code)
}

func consulAgent(t *testing.T) *consultest.Agent {
	t.Helper()
	a, err := sharedConsul()
	if err != nil {
		t.Fatalf("consul agent: %v", err)
	}
	return a
}

var serviceSeq struct {
	sync.Mutex
	n int
}

// uniqueService names a service no other test uses.
func uniqueService(t *testing.T) string {
	serviceSeq.Lock()
	defer serviceSeq.Unlock()
	serviceSeq.n++
	return fmt.Sprintf("%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), serviceSeq.n)
}

// register registers an echo backend as an instance of service, with a TTL
// check in the given state; it returns the instance ID.
func register(t *testing.T, c *api.Client, service string, b *echoserver.Server, status string, tags ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(b.Addr())
	p, _ := strconv.Atoi(port)
	id := service + "-" + b.ID()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Address: host, Port: p, Tags: tags,
		Check: &api.AgentServiceCheck{CheckID: "check-" + id, TTL: "1h", Status: status},
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// backendsSeen opens n connections at once (held open, so least_conn
// spreads them) and returns the backend IDs they reached, or "503".
func backendsSeen(t *testing.T, addr string, n int) []string {
	t.Helper()
	var ids []string
	var open []*websocket.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, resp, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial("ws://"+addr+"/ws", nil)
		if err != nil {
			if resp != nil {
				ids = append(ids, strconv.Itoa(resp.StatusCode))
				continue
			}
			t.Fatal(err)
		}
		open = append(open, c)
		c.WriteMessage(websocket.TextMessage, []byte("__id"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, p, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(p))
	}
	sort.Strings(ids)
	return ids
}

// eventually polls until the set of backends reached is want.
func eventually(t *testing.T, addr string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := backendsSeen(t, addr, 4)
		set := map[string]bool{}
		for _, g := range got {
			set[g] = true
		}
		ok := len(set) == len(want)
		for _, w := range want {
			ok = ok && set[w]
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backends reached %v, want exactly %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func consulConf(agent *consultest.Agent, service, extra string) string {
	return fmt.Sprintf("{\n\tconsul {\n\t\taddress %s\n\t}\n}\n:{port} {\n\troute /* {\n\t\tconsul %s %s\n\t}\n}", agent.Addr(), service, extra)
}

func TestConsulRouteFollowsService(t *testing.T) {
	t.Parallel()
	agent := consulAgent(t)
	c := agent.Client(t)
	svc := uniqueService(t)
	tp := startProxy(t, consulConf(agent, svc, ""), 3)
	b0, b1, b2 := tp.backends[0], tp.backends[1], tp.backends[2]

	// Nothing registered: a real empty set, 503.
	eventually(t, tp.addr, "503")
	id0 := register(t, c, svc, b0, api.HealthPassing)
	register(t, c, svc, b1, api.HealthPassing)
	eventually(t, tp.addr, "b0", "b1")

	// Deregistered: new connections stop going to it.
	if err := c.Agent().ServiceDeregister(id0); err != nil {
		t.Fatal(err)
	}
	eventually(t, tp.addr, "b1")

	// A critical check takes an instance out; warning too, by default.
	id2 := register(t, c, svc, b2, api.HealthPassing)
	eventually(t, tp.addr, "b1", "b2")
	c.Agent().UpdateTTL("check-"+id2, "", api.HealthCritical)
	eventually(t, tp.addr, "b1")
	c.Agent().UpdateTTL("check-"+id2, "", api.HealthWarning)
	eventually(t, tp.addr, "b1")
	c.Agent().UpdateTTL("check-"+id2, "", api.HealthPassing)
	eventually(t, tp.addr, "b1", "b2")
}

func TestConsulTagFilter(t *testing.T) {
	t.Parallel()
	agent := consulAgent(t)
	c := agent.Client(t)
	svc := uniqueService(t)
	tp := startProxy(t, consulConf(agent, svc, "{\n\t\t\ttags v2\n\t\t}"), 2)
	register(t, c, svc, tp.backends[0], api.HealthPassing, "v1")
	register(t, c, svc, tp.backends[1], api.HealthPassing, "v2", "primary")
	eventually(t, tp.addr, "b1")
	// Retagging moves instances in and out of the filter.
	register(t, c, svc, tp.backends[0], api.HealthPassing, "v2")
	register(t, c, svc, tp.backends[1], api.HealthPassing, "v1")
	eventually(t, tp.addr, "b0")
}

func TestConsulDownKeepsLastKnownSet(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	svc := uniqueService(t)
	tp := startProxy(t, consulConf(agent, svc, ""), 2)
	register(t, agent.Client(t), svc, tp.backends[0], api.HealthPassing)
	eventually(t, tp.addr, "b0")

	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	// Consul is gone: routing goes on with the last known instances.
	for i := 0; i < 3; i++ {
		eventually(t, tp.addr, "b0")
		time.Sleep(300 * time.Millisecond)
	}
	// Consul is back (a -dev agent starts empty): the new state is picked up.
	if err := agent.Restart(); err != nil {
		t.Fatal(err)
	}
	register(t, agent.Client(t), svc, tp.backends[1], api.HealthPassing)
	eventually(t, tp.addr, "b1")
}

// TestConsulBlockChangeWhileDown: a reload that changes the consul block
// (a new client, new watches) while the agent is down keeps routing to the
// instances known before it, rather than emptying the route (503) until
// the agent answers again.
func TestConsulBlockChangeWhileDown(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	svc := uniqueService(t)
	tp := startProxy(t, consulConf(agent, svc, ""), 1)
	register(t, agent.Client(t), svc, tp.backends[0], api.HealthPassing)
	eventually(t, tp.addr, "b0")
	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	// The same agent by another name: a changed block, a new client.
	_, port, _ := net.SplitHostPort(agent.Addr())
	tp.reload(t, fmt.Sprintf("{\n\tconsul {\n\t\taddress localhost:%s\n\t}\n}\n:{port} {\n\troute /* {\n\t\tconsul %s\n\t}\n}", port, svc))
	for i := 0; i < 3; i++ {
		eventually(t, tp.addr, "b0")
		time.Sleep(200 * time.Millisecond)
	}
}

func TestConsulDrainOnRemoval(t *testing.T) {
	t.Parallel()
	agent := consulAgent(t)
	c := agent.Client(t)
	svc := uniqueService(t)
	tp := startProxy(t, consulConf(agent, svc, "\n\t\tdrain_on_removal 1s"), 2)
	id0 := register(t, c, svc, tp.backends[0], api.HealthPassing)
	eventually(t, tp.addr, "b0")
	var clients []*websocket.Conn
	for i := 0; i < 5; i++ {
		cl, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
		clients = append(clients, cl)
	}
	register(t, c, svc, tp.backends[1], api.HealthPassing)
	// b0 holds five connections, so least_conn sends new ones to b1.
	eventually(t, tp.addr, "b1")
	start := time.Now()
	c.Agent().ServiceDeregister(id0)
	for _, cl := range clients {
		cl.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := cl.ReadMessage()
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 1012 {
			t.Fatalf("drained client got %v, want close 1012", err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("drain took %v for a 1s window", d)
	}
	eventually(t, tp.addr, "b1")
}

// TestConsulRegistrationToFirstConnection measures how long after a
// registration in Consul the first connection reaches the new instance.
func TestConsulRegistrationToFirstConnection(t *testing.T) {
	t.Parallel()
	agent := consulAgent(t)
	c := agent.Client(t)
	svc := uniqueService(t)
	tp := startProxy(t, consulConf(agent, svc, ""), 6)
	var times []time.Duration
	for i, b := range tp.backends {
		// Successive queries of one watch are at least 250ms apart (a
		// flapping service must not make the proxy spin): wait that out,
		// so this measures a registration into a quiet service.
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		id := register(t, c, svc, b, api.HealthPassing)
		for {
			got := backendsSeen(t, tp.addr, 1)
			if got[0] == b.ID() {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("try %d: instance never reached", i)
			}
		}
		times = append(times, time.Since(start))
		c.Agent().ServiceDeregister(id)
		eventually(t, tp.addr, "503")
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("registration to first routed connection over %d tries: median %v (min %v, max %v)",
		len(times), times[len(times)/2], times[0], times[len(times)-1])
}

func TestConsulSelfRegistration(t *testing.T) {
	t.Parallel()
	agent := consulAgent(t)
	c := agent.Client(t)
	name := uniqueService(t)
	conf := fmt.Sprintf("{\n\tadmin 127.0.0.1:2019\n\tconsul {\n\t\taddress %s\n\t\tregister %s edge\n\t}\n}\n:{port} {\n\troute /* {\n\t\tto {b0}\n\t}\n}", agent.Addr(), name)
	tp := startProxy(t, conf, 1)
	// Registration runs in the background (Consul must not hold up Start).
	var svcs []*api.CatalogService
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		svcs, _, err = c.Catalog().Service(name, "", nil)
		if err == nil && len(svcs) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || len(svcs) != 1 || svcs[0].ServicePort != tp.port || len(svcs[0].ServiceTags) != 1 {
		t.Fatalf("catalog: %+v %v", svcs, err)
	}
	tp.srv.Shutdown(t.Context())
	if svcs, _, _ := c.Catalog().Service(name, "", nil); len(svcs) != 0 {
		t.Fatalf("still registered after shutdown: %+v", svcs)
	}
}
