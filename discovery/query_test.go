package discovery

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestQueryKeyCanonical(t *testing.T) {
	t.Parallel()
	a := Query{Service: "chat", Tags: []string{"b", "a", "a"}, ServiceMeta: map[string]string{"x": "1", "y": "2"}}
	b := Query{Service: "chat", Tags: []string{"a", "b"}, ServiceMeta: map[string]string{"y": "2", "x": "1"}}
	if a.Key() != b.Key() {
		t.Fatalf("same query, different keys:\n%s\n%s", a.Key(), b.Key())
	}
	empty := Query{Service: "chat", Tags: []string{}, ServiceMeta: map[string]string{}}
	if got, want := empty.Key(), (Query{Service: "chat"}).Key(); got != want {
		t.Fatalf("empty vs nil filters: %s != %s", got, want)
	}
	differ := []Query{
		{Service: "chat2"},
		{Service: "chat", Tags: []string{"a"}},
		{Service: "chat", ServiceMeta: map[string]string{"a": "b"}},
		{Service: "chat", NodeMeta: map[string]string{"a": "b"}},
		{Service: "chat", Datacenter: "dc2"},
		{Service: "chat", AllowWarning: true},
		{Service: "chat", WeightMetaKey: "weight"},
		{Service: "chat", KeepStaleOnEmpty: true},
		// No ambiguity between fields or inside values.
		{Service: "chat", Tags: []string{"a,b"}},
		{Service: "chat", Tags: []string{"a", "b"}},
	}
	seen := map[string]int{(Query{Service: "chat"}).Key(): -1}
	for i, q := range differ {
		k := q.Key()
		if j, ok := seen[k]; ok {
			t.Errorf("queries %d and %d share key %s", i, j, k)
		}
		seen[k] = i
	}
}

func TestQueryValidate(t *testing.T) {
	t.Parallel()
	for _, q := range []Query{{}, {Service: "a/b"}, {Service: "a b"}, {Service: "a", Tags: []string{""}}, {Service: "a", Datacenter: "x/y"}} {
		if q.Validate() == nil {
			t.Errorf("%+v: no error", q)
		}
	}
	if err := (Query{Service: "chat-v2.eu_west", Tags: []string{"x"}}).Validate(); err != nil {
		t.Errorf("valid query: %v", err)
	}
}

func TestNextIndex(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ prev, got, want uint64 }{
		{0, 10, 10},  // first answer
		{10, 10, 10}, // timeout, no change
		{10, 12, 12}, // change
		{10, 3, 0},   // went backwards: reset, next query does not block
		{0, 0, 1},    // an index of 0 is never waited on
		{5, 0, 0},    // backwards to 0: reset first (then 1 on the next 0)
	} {
		if got := nextIndex(c.prev, c.got); got != c.want {
			t.Errorf("nextIndex(%d, %d) = %d, want %d", c.prev, c.got, got, c.want)
		}
	}
}

func check(id, status string) *api.HealthCheck {
	return &api.HealthCheck{CheckID: id, Status: status}
}

func TestCheckStatus(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		checks api.HealthChecks
		want   string
	}{
		{nil, StatusPassing},
		{api.HealthChecks{check("serfHealth", "passing"), check("s", "passing")}, StatusPassing},
		{api.HealthChecks{check("serfHealth", "passing"), check("s", "warning")}, StatusWarning},
		{api.HealthChecks{check("serfHealth", "critical"), check("s", "passing")}, StatusCritical}, // node check counts
		{api.HealthChecks{check("s", "warning"), check("t", "critical")}, StatusCritical},
		{api.HealthChecks{check(api.NodeMaint, "critical")}, StatusCritical},
		{api.HealthChecks{check(api.ServiceMaintPrefix+"x", "passing")}, StatusCritical},
		{api.HealthChecks{check("s", "bogus")}, StatusCritical},
	} {
		if got := checkStatus(c.checks); got != c.want {
			t.Errorf("%v: %s, want %s", c.checks, got, c.want)
		}
	}
}

func entry(node, nodeAddr, id, addr string, port int, tags []string, meta map[string]string, w api.AgentWeights, checks ...*api.HealthCheck) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node, Address: nodeAddr, Meta: map[string]string{"rack": node}},
		Service: &api.AgentService{ID: id, Service: "svc", Address: addr, Port: port, Tags: tags, Meta: meta, Weights: w},
		Checks:  checks,
	}
}

func TestInstances(t *testing.T) {
	t.Parallel()
	w := api.AgentWeights{Passing: 3, Warning: 1}
	entries := []*api.ServiceEntry{
		entry("n2", "10.0.0.2", "b", "", 80, []string{"v1"}, nil, w),
		entry("n1", "10.0.0.1", "a", "192.168.0.1", 80, []string{"v1", "x"}, map[string]string{"weight": "7"}, w),
		entry("n1", "10.0.0.1", "c", "", 81, []string{"v1"}, nil, w, check("s", "warning")),
		entry("n1", "10.0.0.1", "d", "", 82, []string{"v1"}, nil, w, check("s", "critical")),
		entry("n3", "10.0.0.3", "e", "", 80, []string{"v2"}, nil, w),
		entry("n1", "10.0.0.1", "f", "", 0, []string{"v1"}, nil, w), // no port
		entry("n1", "", "g", "", 90, []string{"v1"}, nil, w),        // no address
		// Same address as b, in warning: b (passing) wins.
		entry("n4", "10.0.0.4", "h", "10.0.0.2", 80, []string{"v1"}, nil, w, check("s", "warning")),
		{Node: &api.Node{Node: "n5"}}, // no service
		nil,
	}

	got := instances(entries, &Query{Service: "svc", Tags: []string{"v1"}, WeightMetaKey: "weight"})
	want := []Instance{
		{Addr: "10.0.0.2:80", Weight: 3, ID: "b", Node: "n2", Tags: []string{"v1"}, Status: StatusPassing},
		{Addr: "192.168.0.1:80", Weight: 7, ID: "a", Node: "n1", Tags: []string{"v1", "x"}, Meta: map[string]string{"weight": "7"}, Status: StatusPassing},
	}
	if !sameInstances(got, want) {
		t.Fatalf("passing only:\n got %+v\nwant %+v", got, want)
	}

	got = instances(entries, &Query{Service: "svc", Tags: []string{"v1"}, AllowWarning: true})
	var addrs []string
	for _, in := range got {
		addrs = append(addrs, in.Addr+"/"+in.Status)
	}
	if want := "[10.0.0.1:81/warning 10.0.0.2:80/passing 192.168.0.1:80/passing]"; fmtSlice(addrs) != want {
		t.Fatalf("with warning: %s, want %s", fmtSlice(addrs), want)
	}
	if got[0].Weight != 1 || got[2].Weight != 3 {
		t.Fatalf("weights without meta key: %+v", got)
	}

	got = instances(entries, &Query{Service: "svc", NodeMeta: map[string]string{"rack": "n3"}})
	if len(got) != 1 || got[0].ID != "e" {
		t.Fatalf("node meta filter: %+v", got)
	}
	got = instances(entries, &Query{Service: "svc", ServiceMeta: map[string]string{"weight": "7"}})
	if len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("service meta filter: %+v", got)
	}
}

func TestWeight(t *testing.T) {
	t.Parallel()
	s := &api.AgentService{Meta: map[string]string{"w": " 12 ", "bad": "x", "zero": "0"}, Weights: api.AgentWeights{Passing: 4, Warning: 0}}
	for _, c := range []struct {
		status, key string
		want        int
	}{
		{StatusPassing, "w", 12},
		{StatusWarning, "w", 12},
		{StatusPassing, "bad", 4},
		{StatusPassing, "zero", 4},
		{StatusPassing, "missing", 4},
		{StatusPassing, "", 4},
		{StatusWarning, "", 1}, // Weights.Warning 0 counts as 1
	} {
		if got := weight(s, c.status, c.key); got != c.want {
			t.Errorf("weight(%s, %q) = %d, want %d", c.status, c.key, got, c.want)
		}
	}
}

func fmtSlice(s []string) string {
	out := "["
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}
