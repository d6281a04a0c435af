package limit

import (
	"net/netip"
	"sync"
	"unsafe"
)

// PerIP counts the live connections of each client group (see Options) and
// caps them at a maximum. Create one with NewPerIP; an empty PerIP is not
// valid.
//
// A PerIP is safe for concurrent use. Its state is split into 64 shards,
// each with its own lock, so concurrent handshakes from different clients
// rarely wait on each other. An entry exists only while its group has a live
// connection, so memory is bounded by the live connections.
//
// The counts are kept even when there is no limit, so that WithMax can give
// a reloaded config a new cap over the connections that are already live.
type PerIP struct {
	max int
	c   *perIPCounts // shared by every PerIP made from this one by WithMax
}

type perIPCounts struct {
	g      grouping
	shards [numShards]perIPShard
}

type perIPShardData struct {
	mu sync.Mutex
	m  map[key]int // group -> live connections, never 0
}

type perIPShard struct {
	perIPShardData
	_ [cacheLine - unsafe.Sizeof(perIPShardData{})%cacheLine]byte
}

// NewPerIP returns a PerIP that lets each client group hold at most max live
// connections. If max <= 0 there is no limit: Acquire always succeeds, but
// still counts the connection (see WithMax).
//
// opts is optional; the zero Options (or none) groups IPv4 by /32 and IPv6
// by /64. NewPerIP panics if more than one Options is given or if it fails
// Validate.
func NewPerIP(max int, opts ...Options) *PerIP {
	o := withDefaults(opts)
	c := &perIPCounts{g: newGrouping(o)}
	for i := range c.shards {
		c.shards[i].m = make(map[key]int)
	}
	return &PerIP{max: max, c: c}
}

// WithMax returns a PerIP with cap max that shares p's live counts: a
// connection acquired on either is counted against both caps and may be
// released on either. A config reload uses it so that changing the cap, up
// or down, does not forget the connections already open (a fresh PerIP
// would start every client at zero). p itself is not changed, so a reload
// that fails later leaves the running limit as it was.
func (p *PerIP) WithMax(max int) *PerIP { return &PerIP{max: max, c: p.c} }

// Max returns the cap given to NewPerIP or WithMax; 0 or less means
// unlimited.
func (p *PerIP) Max() int { return p.max }

// Acquire counts a new connection for ip's group and reports true if the
// group held fewer than the maximum. Otherwise it reports false and changes
// nothing. Each successful Acquire must be matched by one Release.
//
// Acquire does not allocate when the group already has live connections; a
// new group costs one map insert.
func (p *PerIP) Acquire(ip netip.Addr) bool {
	k := p.c.g.key(ip)
	s := &p.c.shards[p.c.g.shard(k)]
	s.mu.Lock()
	n := s.m[k]
	if p.max > 0 && n >= p.max {
		s.mu.Unlock()
		return false
	}
	s.m[k] = n + 1
	s.mu.Unlock()
	return true
}

// Release ends a connection counted by a successful Acquire for ip (or for
// any address in the same group). The group's entry is deleted when its
// count reaches zero. Release of a group with no live connections does
// nothing, so a count never goes negative.
func (p *PerIP) Release(ip netip.Addr) {
	k := p.c.g.key(ip)
	s := &p.c.shards[p.c.g.shard(k)]
	s.mu.Lock()
	switch n := s.m[k]; {
	case n > 1:
		s.m[k] = n - 1
	case n == 1:
		delete(s.m, k)
	}
	s.mu.Unlock()
}

// Count returns the live connections of ip's group, limited or not.
func (p *PerIP) Count(ip netip.Addr) int {
	k := p.c.g.key(ip)
	s := &p.c.shards[p.c.g.shard(k)]
	s.mu.Lock()
	n := s.m[k]
	s.mu.Unlock()
	return n
}

// Len returns how many groups have live connections. It locks each shard in
// turn, so under concurrent use it is a close estimate, not a snapshot.
func (p *PerIP) Len() int {
	n := 0
	for i := range p.c.shards {
		s := &p.c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
