package discovery

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/wsproxy/wsproxy/discovery/consultest"
)

// The tests that do not stop Consul share one agent, started on first use
// and stopped by TestMain; each uses service names of its own. The tests
// that stop Consul start their own.
var shared struct {
	once  sync.Once
	agent *consultest.Agent
	err   error
}

func sharedAgent(t testing.TB) *consultest.Agent {
	t.Helper()
	shared.once.Do(func() { shared.agent, shared.err = consultest.New() })
	if shared.err != nil {
		t.Fatalf("consultest: %v", shared.err)
	}
	return shared.agent
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.agent != nil {
		if err := shared.agent.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

// fastConfig polls quickly, so that tests of failures and rate limits run in
// milliseconds.
func fastConfig(addr string) ConsulConfig {
	return ConsulConfig{
		Address:     addr,
		WaitTime:    time.Minute,
		MinInterval: 10 * time.Millisecond,
		BackoffMin:  20 * time.Millisecond,
		BackoffMax:  200 * time.Millisecond,
	}
}

// newConsul returns a Consul client closed when t ends.
func newConsul(t testing.TB, cfg ConsulConfig) *Consul {
	t.Helper()
	c, err := NewConsul(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var serviceSeq atomic.Int64

// serviceName returns a service name unique to this run of t (tests share
// an agent, and -count reruns them against it).
func serviceName(t testing.TB, suffix string) string {
	n := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	if suffix != "" {
		n += "-" + suffix
	}
	return strings.ToLower(n) + "-" + strconv.FormatInt(serviceSeq.Add(1), 10)
}

// recorder keeps every Update a subscriber got.
type recorder struct {
	mu     sync.Mutex
	all    []Update
	next   int // first Update waitFor has not looked at
	notify chan struct{}
	stop   func()
}

func watchRec(t testing.TB, c *Consul, q Query) *recorder {
	t.Helper()
	r := &recorder{notify: make(chan struct{}, 1)}
	r.stop = c.Watch(q, func(u Update) {
		r.mu.Lock()
		r.all = append(r.all, u)
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	})
	t.Cleanup(r.stop)
	return r
}

// waitFor returns the first Update not yet looked at that satisfies ok,
// failing t if none comes within 15s.
func (r *recorder) waitFor(t testing.TB, what string, ok func(Update) bool) Update {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for r.next < len(r.all) {
			u := r.all[r.next]
			r.next++
			if ok(u) {
				r.mu.Unlock()
				return u
			}
		}
		last := "none"
		if len(r.all) > 0 {
			last = fmt.Sprintf("%+v", r.all[len(r.all)-1])
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("no update with %s within 15s; last update: %s", what, last)
		}
	}
}

// waitLatest waits until the latest Update satisfies ok, whether or not it
// arrived after the last wait: a subscriber only ever sees the latest
// state, so a change that was undone before the watch looked may never
// show as an Update of its own.
func (r *recorder) waitLatest(t testing.TB, what string, ok func(Update) bool) Update {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r.mu.Lock()
		var last *Update
		if len(r.all) > 0 {
			last = &r.all[len(r.all)-1]
		}
		if last != nil && ok(*last) {
			u := *last
			r.next = len(r.all)
			r.mu.Unlock()
			return u
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("the latest update never had %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// count returns how many Updates r has received.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

// fresh matches an Update from a successful query with exactly addrs.
func fresh(addrs ...string) func(Update) bool {
	return func(u Update) bool { return u.Err == nil && !u.Stale && slices.Equal(addrsOf(u), addrs) }
}

func addrsOf(u Update) []string {
	out := make([]string, 0, len(u.Instances))
	for _, in := range u.Instances {
		out = append(out, in.Addr)
	}
	return out
}

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

type regOpt func(*api.AgentServiceRegistration)

func tags(t ...string) regOpt { return func(r *api.AgentServiceRegistration) { r.Tags = t } }

func meta(kv ...string) regOpt {
	return func(r *api.AgentServiceRegistration) {
		r.Meta = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			r.Meta[kv[i]] = kv[i+1]
		}
	}
}

func weights(passing, warning int) regOpt {
	return func(r *api.AgentServiceRegistration) {
		r.Weights = &api.AgentWeights{Passing: passing, Warning: warning}
	}
}

// ttl gives the instance a TTL check, "ttl:<id>", in the given status; the
// test moves it with setCheck. The TTL is long enough never to expire.
func ttl(status string) regOpt {
	return func(r *api.AgentServiceRegistration) {
		r.Check = &api.AgentServiceCheck{CheckID: "ttl:" + r.ID, TTL: "10m", Status: status}
	}
}

// register registers an instance of svc at 127.0.0.1:port with the agent.
func register(t testing.TB, cl *api.Client, svc, id string, port int, opts ...regOpt) {
	t.Helper()
	reg := &api.AgentServiceRegistration{ID: id, Name: svc, Address: "127.0.0.1", Port: port}
	for _, o := range opts {
		o(reg)
	}
	if err := cl.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func deregister(t testing.TB, cl *api.Client, id string) {
	t.Helper()
	if err := cl.Agent().ServiceDeregister(id); err != nil {
		t.Fatalf("deregister %s: %v", id, err)
	}
}

func setCheck(t testing.TB, cl *api.Client, id, status string) {
	t.Helper()
	if err := cl.Agent().UpdateTTL("ttl:"+id, "set by test", status); err != nil {
		t.Fatalf("update check of %s: %v", id, err)
	}
}

func stateOf(c *Consul, service string) (WatchState, int) {
	n := 0
	var ws WatchState
	for _, s := range c.State() {
		if s.Service == service {
			ws = s
			n++
		}
	}
	return ws, n
}
