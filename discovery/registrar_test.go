package discovery

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/discovery/consultest"
)

// agentServices returns the services the agent holds, by ID.
func agentServices(t *testing.T, c *api.Client) map[string]*api.AgentService {
	t.Helper()
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	return svcs
}

// eventually polls cond every 50ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRegistrar runs a Registrar against an agent of its own that it stops
// and restarts: registrations wait for an unreachable agent (retried with
// backoff), come back after an agent restart lost them, follow Set (a
// changed one replaced, a removed one deregistered), carry their HTTP
// check, and are removed by Close.
func TestRegistrar(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	admin := a.Client(t)
	cfg := fastConfig(a.Addr())
	cfg.RequestTimeout = time.Second
	c := newConsul(t, cfg)
	r := c.NewRegistrar(RegistrarOptions{VerifyInterval: 300 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	defer r.Close(t.Context())

	reg := func(port int, tags ...string) Registration {
		return Registration{Name: "edge", ID: "edge-" + strconv.Itoa(port), Port: port, Tags: tags,
			CheckHTTP: "http://127.0.0.1:1/health/ready", CheckInterval: time.Second, CheckTimeout: time.Second,
			DeregisterCriticalAfter: 90 * time.Second}
	}

	// Consul down: Set is accepted, and the Registrar keeps trying.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Set([]Registration{reg(8080), reg(8081, "v1")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a failed round reported", func() bool { return r.Err() != nil })
	if got := r.Registered(); len(got) != 0 {
		t.Fatalf("registered %v with the agent down", got)
	}
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "both registered once the agent is back", func() bool {
		svcs := agentServices(t, admin)
		return svcs["edge-8080"] != nil && svcs["edge-8081"] != nil
	})
	checks, err := admin.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	chk := checks["service:edge-8080"]
	// The agent does not report a check's definition; the fleet test of
	// cmd/wsproxy shows the interval, timeout and reaping at work.
	if chk == nil || chk.Type != "http" || chk.ServiceID != "edge-8080" {
		t.Fatalf("check of edge-8080: %+v", chk)
	}

	// The agent restarts and forgets everything (-dev keeps no state).
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	eventually(t, 5*time.Second, "registered again after an agent restart", func() bool {
		svcs := agentServices(t, admin)
		return svcs["edge-8080"] != nil && svcs["edge-8081"] != nil
	})
	t.Logf("registrations back %v after the agent restarted empty (verify interval 300ms)", time.Since(restarted).Round(time.Millisecond))

	// A new set: 8081 changes its tags, 8080 goes, 8082 comes.
	if err := r.Set([]Registration{reg(8081, "v2"), reg(8082)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the new set applied", func() bool {
		svcs := agentServices(t, admin)
		return svcs["edge-8080"] == nil && svcs["edge-8081"] != nil && slices.Equal(svcs["edge-8081"].Tags, []string{"v2"}) && svcs["edge-8082"] != nil
	})
	// Registered is what the Registrar stored when its round ended, which
	// can be a moment after the agent shows the new set (and a round that
	// met an agent error ends with the next one).
	eventually(t, 5*time.Second, "Registered() is the new set", func() bool {
		return slices.Equal(r.Registered(), []string{"edge-8081", "edge-8082"})
	})

	// Invalid registrations are reported and left out.
	if err := r.Set([]Registration{reg(8081, "v2"), reg(8082), {Name: "edge", Port: 0}}); err == nil {
		t.Fatal("Set with a port 0 registration: no error")
	}

	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if svcs := agentServices(t, admin); svcs["edge-8081"] != nil || svcs["edge-8082"] != nil {
		t.Fatalf("still registered after Close: %v", svcs)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
