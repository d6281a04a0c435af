package discovery

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/wsproxy/wsproxy/discovery/consultest"
)

// Integration tests against a real Consul agent in -dev mode.

func TestConsulRegisterDeregister(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	r := watchRec(t, c, Query{Service: svc})
	r.waitFor(t, "no instance yet", fresh())

	register(t, cl, svc, svc+"-1", 20001)
	register(t, cl, svc, svc+"-2", 20002)
	u := r.waitFor(t, "both instances", fresh(addr(20001), addr(20002)))
	in := u.Instances[0]
	if in.ID != svc+"-1" || in.Node != a.Node() || in.Status != StatusPassing || in.Weight != 1 || u.Index == 0 || u.At.IsZero() {
		t.Fatalf("instance: %+v (index %d)", in, u.Index)
	}

	deregister(t, cl, svc+"-2")
	r.waitFor(t, "instance 2 gone", fresh(addr(20001)))
}

func TestConsulCriticalCheckLeaves(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	register(t, cl, svc, svc+"-1", 20011, ttl(api.HealthPassing))
	register(t, cl, svc, svc+"-2", 20012, ttl(api.HealthPassing))
	r := watchRec(t, c, Query{Service: svc})
	r.waitFor(t, "both passing", fresh(addr(20011), addr(20012)))

	setCheck(t, cl, svc+"-2", api.HealthCritical)
	r.waitFor(t, "critical instance gone", fresh(addr(20011)))

	setCheck(t, cl, svc+"-2", api.HealthPassing)
	r.waitFor(t, "instance back when passing", fresh(addr(20011), addr(20012)))

	// Maintenance mode takes an instance out too.
	if err := cl.Agent().EnableServiceMaintenance(svc+"-1", "test"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "instance in maintenance gone", fresh(addr(20012)))
}

func TestConsulWarning(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	register(t, cl, svc, svc+"-1", 20021, ttl(api.HealthPassing), weights(5, 2))
	register(t, cl, svc, svc+"-2", 20022, ttl(api.HealthWarning), weights(5, 2))
	strict := watchRec(t, c, Query{Service: svc})
	lax := watchRec(t, c, Query{Service: svc, AllowWarning: true})

	strict.waitFor(t, "passing only", fresh(addr(20021)))
	u := lax.waitFor(t, "passing and warning", fresh(addr(20021), addr(20022)))
	if p, w := u.Instances[0], u.Instances[1]; p.Status != StatusPassing || p.Weight != 5 || w.Status != StatusWarning || w.Weight != 2 {
		t.Fatalf("statuses and weights: %+v", u.Instances)
	}

	setCheck(t, cl, svc+"-2", api.HealthCritical)
	lax.waitFor(t, "critical gone even with AllowWarning", fresh(addr(20021)))
}

func TestConsulTagFilter(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	register(t, cl, svc, svc+"-1", 20031, tags("v1", "blue"))
	register(t, cl, svc, svc+"-2", 20032, tags("v2", "blue"))
	v1 := watchRec(t, c, Query{Service: svc, Tags: []string{"v1"}})
	both := watchRec(t, c, Query{Service: svc, Tags: []string{"blue", "v1"}})
	v1.waitFor(t, "tag v1", fresh(addr(20031)))
	both.waitFor(t, "tags v1 and blue", fresh(addr(20031)))

	// Re-registering with other tags applies the filter again.
	register(t, cl, svc, svc+"-2", 20032, tags("v1"))
	u := v1.waitFor(t, "instance 2 now tagged v1", fresh(addr(20031), addr(20032)))
	if !slices.Equal(u.Instances[1].Tags, []string{"v1"}) {
		t.Fatalf("tags: %+v", u.Instances[1])
	}
	register(t, cl, svc, svc+"-1", 20031, tags("v2", "blue"))
	v1.waitFor(t, "instance 1 no longer tagged v1", fresh(addr(20032)))
	both.waitFor(t, "nothing has both tags", fresh())
}

func TestConsulMetaFilters(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	// Service meta, through the agent.
	register(t, cl, svc, svc+"-1", 20041, meta("zone", "a", "version", "2"))
	register(t, cl, svc, svc+"-2", 20042, meta("zone", "b", "version", "2"))
	zoneA := watchRec(t, c, Query{Service: svc, ServiceMeta: map[string]string{"zone": "a", "version": "2"}})
	zoneA.waitFor(t, "service meta zone=a", fresh(addr(20041)))
	register(t, cl, svc, svc+"-2", 20042, meta("zone", "a", "version", "2"))
	zoneA.waitFor(t, "instance 2 moved to zone a", fresh(addr(20041), addr(20042)))

	// Node meta: external nodes registered in the catalog, each with its own
	// meta (the dev agent's own node has none).
	ext := serviceName(t, "ext")
	for i, rack := range []string{"r1", "r2"} {
		reg := &api.CatalogRegistration{
			Node:     ext + "-node-" + rack,
			Address:  "10.77.0." + strconv.Itoa(i+1),
			NodeMeta: map[string]string{"rack": rack},
			Service:  &api.AgentService{ID: ext + "-" + rack, Service: ext, Port: 8080},
		}
		if _, err := cl.Catalog().Register(reg, nil); err != nil {
			t.Fatal(err)
		}
	}
	r1 := watchRec(t, c, Query{Service: ext, NodeMeta: map[string]string{"rack": "r1"}})
	u := r1.waitFor(t, "node meta rack=r1", fresh("10.77.0.1:8080"))
	if u.Instances[0].Node != ext+"-node-r1" {
		t.Fatalf("node: %+v", u.Instances[0])
	}
}

func TestConsulWeights(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	register(t, cl, svc, svc+"-1", 20051, meta("weight", "7"), weights(3, 1))
	register(t, cl, svc, svc+"-2", 20052, weights(4, 1))
	register(t, cl, svc, svc+"-3", 20053, meta("weight", "nonsense"))

	byMeta := watchRec(t, c, Query{Service: svc, WeightMetaKey: "weight"})
	byConsul := watchRec(t, c, Query{Service: svc})
	w := func(u Update) []int {
		var out []int
		for _, in := range u.Instances {
			out = append(out, in.Weight)
		}
		return out
	}
	all := fresh(addr(20051), addr(20052), addr(20053))
	if got := w(byMeta.waitFor(t, "three instances", all)); !slices.Equal(got, []int{7, 4, 1}) {
		t.Errorf("weights from meta: %v, want [7 4 1]", got)
	}
	if got := w(byConsul.waitFor(t, "three instances", all)); !slices.Equal(got, []int{3, 4, 1}) {
		t.Errorf("weights from Consul: %v, want [3 4 1]", got)
	}

	// A weight change is an update.
	register(t, cl, svc, svc+"-2", 20052, weights(9, 1))
	byConsul.waitFor(t, "new weight", func(u Update) bool { return all(u) && slices.Equal(w(u), []int{3, 9, 1}) })
}

func TestConsulSharedWatch(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))
	register(t, cl, svc, svc+"-1", 20061, tags("x", "y"))

	r1 := watchRec(t, c, Query{Service: svc, Tags: []string{"x", "y"}})
	u1 := r1.waitFor(t, "instance", fresh(addr(20061)))
	// Same query, tags in another order: the same watch, and the current
	// state at once, without waiting for a change.
	r2 := watchRec(t, c, Query{Service: svc, Tags: []string{"y", "x", "x"}})
	u2 := r2.waitFor(t, "current state", fresh(addr(20061)))
	if u2.Index != u1.Index {
		t.Fatalf("second subscriber got index %d, first %d", u2.Index, u1.Index)
	}
	st, n := stateOf(c, svc)
	if n != 1 || st.Subscribers != 2 || !st.Healthy || st.Instances != 1 || st.Updates != 1 || st.LastSuccess.IsZero() {
		t.Fatalf("%d watches, state %+v", n, st)
	}

	// Another query is another watch.
	r3 := watchRec(t, c, Query{Service: svc, Tags: []string{"x"}})
	r3.waitFor(t, "instance", fresh(addr(20061)))
	if _, n := stateOf(c, svc); n != 2 {
		t.Fatalf("%d watches, want 2", n)
	}

	// Both subscribers see a change through the one loop.
	register(t, cl, svc, svc+"-2", 20062, tags("x", "y"))
	r1.waitFor(t, "both", fresh(addr(20061), addr(20062)))
	r2.waitFor(t, "both", fresh(addr(20061), addr(20062)))

	r1.stop()
	r1.stop() // twice is fine
	if st, _ := stateOf(c, svc); st.Subscribers != 1 {
		t.Fatalf("after one stop: %+v", st)
	}
	r2.stop()
	r3.stop()
	if _, n := stateOf(c, svc); n != 0 {
		t.Fatalf("%d watches left after the last stop", n)
	}
}

func TestConsulEmptySet(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	register(t, cl, svc, svc+"-1", 20071, ttl(api.HealthPassing))
	plain := watchRec(t, c, Query{Service: svc})
	keep := watchRec(t, c, Query{Service: svc, KeepStaleOnEmpty: true})
	plain.waitFor(t, "instance", fresh(addr(20071)))
	keep.waitFor(t, "instance", fresh(addr(20071)))

	setCheck(t, cl, svc+"-1", api.HealthCritical)
	// An empty passing set is a real state...
	plain.waitFor(t, "empty, not stale", fresh())
	// ...unless KeepStaleOnEmpty.
	u := keep.waitFor(t, "kept set", func(u Update) bool { return u.Stale })
	if !errors.Is(u.Err, ErrNoInstances) || !slices.Equal(addrsOf(u), []string{addr(20071)}) {
		t.Fatalf("kept: %+v", u)
	}

	register(t, cl, svc, svc+"-2", 20072)
	keep.waitFor(t, "fresh set again", fresh(addr(20072)))
	plain.waitFor(t, "fresh set again", fresh(addr(20072)))
}

func TestConsulRateLimit(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	cfg := fastConfig(a.Addr())
	cfg.MinInterval = 100 * time.Millisecond
	c := newConsul(t, cfg)

	register(t, cl, svc, svc+"-1", 20081)
	register(t, cl, svc, svc+"-2", 20082, ttl(api.HealthPassing))
	r := watchRec(t, c, Query{Service: svc})
	r.waitFor(t, "both", fresh(addr(20081), addr(20082)))
	before, _ := stateOf(c, svc)

	// Flap instance 2 as fast as the agent takes it for a second.
	const flapping = time.Second
	start := time.Now()
	flaps := 0
	for time.Since(start) < flapping {
		status := api.HealthCritical
		if flaps%2 == 1 {
			status = api.HealthPassing
		}
		setCheck(t, cl, svc+"-2", status)
		flaps++
	}
	setCheck(t, cl, svc+"-2", api.HealthPassing)
	elapsed := time.Since(start)
	r.waitLatest(t, "both after flapping", fresh(addr(20081), addr(20082)))
	after, _ := stateOf(c, svc)

	queries := after.Queries - before.Queries
	limit := uint64(elapsed/cfg.MinInterval) + 3
	t.Logf("%d flaps in %v: %d queries, %d updates (limit %d queries)", flaps, elapsed.Round(time.Millisecond), queries, after.Updates-before.Updates, limit)
	if flaps < 20 {
		t.Fatalf("only %d flaps: the test did not flap", flaps)
	}
	if queries > limit {
		t.Fatalf("%d queries in %v with MinInterval %v: not rate limited", queries, elapsed, cfg.MinInterval)
	}
}

func TestConsulRegisterSelf(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))

	var healthy atomic.Bool
	healthy.Store(true)
	hc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}
	}))
	defer hc.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(hc.URL, "http://"))
	p, _ := strconv.Atoi(port)

	if _, err := c.Register(context.Background(), Registration{Name: svc}); err == nil {
		t.Fatal("registration without a port accepted")
	}
	dereg, err := c.Register(context.Background(), Registration{
		Name: svc, ID: svc + "-self", Address: "127.0.0.1", Port: p,
		Tags: []string{"wsproxy"}, Meta: map[string]string{"version": "test"},
		CheckHTTP: hc.URL + "/healthz", CheckInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := watchRec(t, c, Query{Service: svc, Tags: []string{"wsproxy"}})
	// The HTTP check starts critical and passes on its first run.
	u := r.waitFor(t, "self registration passing", fresh(addr(p)))
	if in := u.Instances[0]; in.ID != svc+"-self" || in.Meta["version"] != "test" {
		t.Fatalf("instance: %+v", in)
	}
	healthy.Store(false)
	r.waitFor(t, "failing check", fresh())
	healthy.Store(true)
	r.waitFor(t, "passing again", fresh(addr(p)))

	if err := dereg(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := dereg(context.Background()); err != nil {
		t.Fatalf("second deregister: %v", err)
	}
	r.waitFor(t, "deregistered", fresh())
}

func TestConsulStopFromCallback(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	c := newConsul(t, fastConfig(a.Addr()))
	register(t, cl, svc, svc+"-1", 20091)

	called := make(chan struct{}, 10)
	var stop func()
	ready := make(chan struct{})
	stop = c.Watch(Query{Service: svc}, func(Update) {
		<-ready
		stop()
		called <- struct{}{}
	})
	close(ready)
	<-called
	register(t, cl, svc, svc+"-2", 20092)
	time.Sleep(200 * time.Millisecond)
	if len(called) != 0 {
		t.Fatal("fn called after stop")
	}
	if _, n := stateOf(c, svc); n != 0 {
		t.Fatal("watch still running after its only subscriber stopped")
	}
}

// TestConsulDown stops and restarts the agent (its own, not the shared one).
func TestConsulDown(t *testing.T) {
	t.Parallel()
	a := consultest.Start(t)
	cl := a.Client(t)
	svc := "down"
	cfg := fastConfig(a.Addr())
	cfg.BackoffMax = 100 * time.Millisecond
	c := newConsul(t, cfg)
	other := newConsul(t, cfg) // closed while Consul is down

	register(t, cl, svc, "down-1", 20101)
	register(t, cl, svc, "down-2", 20102)
	q := Query{Service: svc}
	r := watchRec(t, c, q)
	good := r.waitFor(t, "both", fresh(addr(20101), addr(20102)))
	or := watchRec(t, other, q)
	or.waitFor(t, "both", fresh(addr(20101), addr(20102)))

	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	u := r.waitFor(t, "stale", func(u Update) bool { return u.Stale })
	if u.Err == nil || !sameInstances(u.Instances, good.Instances) || u.Index != good.Index {
		t.Fatalf("while down: %+v, want the last known set %v with an error", u, addrsOf(good))
	}
	n := r.count()

	// Retries go on (backoff at most 100ms), with one update for the outage.
	waitUntil(t, "retries", func() bool { st, _ := stateOf(c, svc); return st.Errors >= 3 })
	if r.count() != n {
		t.Fatalf("%d updates during the outage, want 1", r.count()-n+1)
	}
	st, _ := stateOf(c, svc)
	if st.Healthy || !st.Stale || st.LastError == nil || st.Instances != 2 {
		t.Fatalf("state while down: %+v", st)
	}
	// A new subscriber gets the kept set at once.
	late := watchRec(t, c, q)
	late.waitFor(t, "kept set", func(u Update) bool { return u.Stale && len(u.Instances) == 2 })

	// Close does not wait for Consul.
	start := time.Now()
	other.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v while Consul was down", d)
	}

	// Consul comes back, empty (-dev keeps nothing): the services register
	// again, one of them changed, and the change arrives.
	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	cl = a.Client(t)
	register(t, cl, svc, "down-1", 20101)
	register(t, cl, svc, "down-3", 20103)
	r.waitFor(t, "fresh set after restart", fresh(addr(20101), addr(20103)))
	late.waitFor(t, "fresh set after restart", fresh(addr(20101), addr(20103)))
	st, _ = stateOf(c, svc)
	if !st.Healthy || st.Stale || st.LastError != nil {
		t.Fatalf("state after recovery: %+v", st)
	}
}

// TestConsulCloseLeavesNoGoroutine is not parallel: it counts the
// process's goroutines while no other test runs.
func TestConsulCloseLeavesNoGoroutine(t *testing.T) {
	a := sharedAgent(t)
	cl := a.Client(t)
	svc := serviceName(t, "")
	register(t, cl, svc, svc+"-1", 20111)
	conns := countGoroutines("net/http.(*persistConn)")

	c, err := NewConsul(fastConfig(a.Addr()), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var stops []func()
	got := make(chan struct{}, 10)
	for _, q := range []Query{{Service: svc}, {Service: svc}, {Service: svc, Tags: []string{"x"}}, {Service: svc + "-none"}} {
		stops = append(stops, c.Watch(q, func(Update) { got <- struct{}{} }))
	}
	for range 4 {
		<-got
	}
	stops[0]()
	if n := countGoroutines("discovery.(*"); n < 4 {
		t.Fatalf("only %d goroutines of the package running", n)
	}
	c.Close()
	c.Close() // idempotent
	// Close waits on a WaitGroup its goroutines leave with a deferred
	// Done, so one may still be on its way out for a moment (seen in CI);
	// one still there after that is a leak.
	deadline := time.Now().Add(2 * time.Second)
	for n := countGoroutines("discovery.(*"); n != 0; n = countGoroutines("discovery.(*") {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the package left after Close:\n%s", n, stacks())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Connections to Consul close too (their goroutines end asynchronously).
	waitUntil(t, "idle connections closed", func() bool { return countGoroutines("net/http.(*persistConn)") <= conns })
	// Watch and Register after Close do nothing.
	c.Watch(Query{Service: svc}, func(Update) { t.Error("fn called after Close") })()
	if _, err := c.Register(context.Background(), Registration{Name: svc, Port: 1}); err == nil {
		t.Fatal("Register after Close")
	}
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// countGoroutines counts the goroutines with a frame containing s.
func countGoroutines(s string) int {
	n := 0
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.Contains(g, s) {
			n++
		}
	}
	return n
}

// TestRegistrationToUpdateLatency measures the time from a registration in
// Consul (the agent API call) to the Update delivered to a subscriber, with
// the default config, over ten tries, and logs the median:
//
//	go test -run TestRegistrationToUpdateLatency -v ./discovery/
func TestRegistrationToUpdateLatency(t *testing.T) {
	t.Parallel()
	a := sharedAgent(t)
	c := newConsul(t, ConsulConfig{Address: a.Addr()})
	d := measureRegistrationToUpdate(t, a, c, serviceName(t, ""), 10)
	t.Logf("registration → update over %d tries: median %v, min %v, max %v", len(d), d[len(d)/2], d[0], d[len(d)-1])
	if d[len(d)/2] > 2*time.Second {
		t.Fatalf("median registration → update %v", d[len(d)/2])
	}
}

// BenchmarkRegistrationToUpdate reports the median time from a registration
// to the Update delivered, in ms/update:
//
//	go test -run '^$' -bench RegistrationToUpdate -benchtime 10x ./discovery/
func BenchmarkRegistrationToUpdate(b *testing.B) {
	a := sharedAgent(b)
	c := newConsul(b, ConsulConfig{Address: a.Addr()})
	d := measureRegistrationToUpdate(b, a, c, serviceName(b, ""), b.N)
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "ns/op") // not the loop's sleeps
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "ms/update")
	b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, "max-ms/update")
}

// measureRegistrationToUpdate registers n instances of svc one after the
// other, each when the watch is idle in a blocking query, and returns the
// sorted delays from each registration call to the Update that has it.
func measureRegistrationToUpdate(tb testing.TB, a *consultest.Agent, c *Consul, svc string, n int) []time.Duration {
	tb.Helper()
	cl := a.Client(tb)
	r := watchRec(tb, c, Query{Service: svc})
	r.waitFor(tb, "empty set", fresh())
	var want []string
	var d []time.Duration
	for i := range n {
		// Let the loop's rate limit (MinInterval) pass, as in steady state.
		time.Sleep(c.cfg.MinInterval + 50*time.Millisecond)
		port := 30000 + i
		want = append(want, addr(port))
		sort.Strings(want)
		start := time.Now()
		register(tb, cl, svc, svc+"-"+strconv.Itoa(i), port)
		r.waitFor(tb, "new instance", fresh(want...))
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	return d
}
