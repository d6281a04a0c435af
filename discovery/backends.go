package discovery

import "github.com/wsproxy/wsproxy/balancer"

// NewSet returns the balancer Set of instances, with Backends from reg (so
// that connection counts and health carry over from earlier Sets). It is
// what a route's Watch callback stores:
//
//	stop := c.Watch(q, func(u discovery.Update) {
//		route.backends.Store(discovery.NewSet(reg, u.Instances))
//	})
//
// An empty instance list gives an empty Set (the route answers 503).
func NewSet(reg *balancer.Registry, instances []Instance) *balancer.Set {
	bs := make([]*balancer.Backend, len(instances))
	for i := range instances {
		bs[i] = reg.Backend(instances[i].Addr, instances[i].Weight)
	}
	return balancer.NewSet(bs)
}

// Gone returns the addresses in prev that are not in next, both sorted by
// Addr as in an Update: the instances that left, whose connections the proxy
// may drain (by default they stay until they end; new connections stop going
// there as soon as the new Set is stored).
func Gone(prev, next []Instance) []string {
	var out []string
	j := 0
	for i := range prev {
		for j < len(next) && next[j].Addr < prev[i].Addr {
			j++
		}
		if j == len(next) || next[j].Addr != prev[i].Addr {
			out = append(out, prev[i].Addr)
		}
	}
	return out
}
