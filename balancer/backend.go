package balancer

import (
	"sync"
	"sync/atomic"
)

// MaxWeight is the largest weight a Set honours; NewSet lowers larger
// weights to it. Weights below 1 count as 1.
const MaxWeight = 1 << 16

// Backend is one upstream server as a Set sees it: an address and a weight,
// both fixed for the Backend's life, and a pointer to live state (open
// connections, health) that is shared by every Backend the same Registry
// hands out for the same address.
//
// Because the live state is shared, rebuilding a Set after a discovery
// change, or changing a backend's weight, keeps its connection count and its
// health (a balancer whose counters reset on every rebuild skews traffic
// towards the backends it just forgot about).
//
// A Backend must come from Registry.Backend or NewBackend: a Backend literal
// has no live state and its methods panic. Addr and Weight are read once by
// NewSet; changing them afterwards has no effect on existing Sets and is a
// data race with any goroutine building one. All methods are safe for
// concurrent use.
type Backend struct {
	// Addr is the backend's identity, "host:port" as the dialer wants it.
	// Sets order backends by Addr and hash it, so two processes that know the
	// same addresses make the same choices.
	Addr string

	// Weight is the backend's relative share of keys and connections,
	// between 1 and MaxWeight.
	Weight int

	live *liveState
}

// liveState is what a Backend knows about itself at run time. It fills a
// cache line of its own, so that one backend's counter, written by every
// connection that opens or closes there, does not slow down reads of
// another's. The health flag shares the line: the policies that read every
// backend's health (LeastConn, bounded Hash) read its counter too.
type liveState struct {
	conns atomic.Int64
	down  atomic.Bool
	_     [64 - 8 - 4]byte
}

// NewBackend returns a Backend with live state of its own, shared with no
// other Backend. Use a Registry when Sets are rebuilt, so that live state
// carries over.
func NewBackend(addr string, weight int) *Backend {
	return &Backend{Addr: addr, Weight: weight, live: new(liveState)}
}

// Conns returns the number of live connections counted on b: those that a
// Policy picked (or that were Acquired) and not yet Released.
func (b *Backend) Conns() int64 { return b.live.conns.Load() }

// Acquire counts one more live connection on b. Policies call it for the
// backend they return; call it yourself only for connections made without a
// Policy.
func (b *Backend) Acquire() { b.live.conns.Add(1) }

// Release counts one live connection less on b. Call it exactly once for
// every backend a Policy returned (and every Acquire), when the proxied
// connection closes or when its upstream handshake fails.
func (b *Backend) Release() { b.live.conns.Add(-1) }

// tryAcquire counts one more connection on b if b has fewer than limit,
// atomically, and reports whether it did.
func (b *Backend) tryAcquire(limit int64) bool {
	for {
		n := b.live.conns.Load()
		if n >= limit {
			return false
		}
		if b.live.conns.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Healthy reports whether b may take new connections. A backend is healthy
// until SetHealthy(false). Policies never pick an unhealthy backend.
func (b *Backend) Healthy() bool { return !b.live.down.Load() }

// SetHealthy marks b (and every Backend sharing its live state) healthy or
// not. It is the hook for the health checkers; it does not touch existing
// connections.
func (b *Backend) SetHealthy(ok bool) { b.live.down.Store(!ok) }

// Same reports whether b and o share live state: the same address from the
// same Registry (possibly with different weights), or the same Backend.
func (b *Backend) Same(o *Backend) bool { return o != nil && b.live == o.live }

// Registry hands out Backends keyed by address so that live state survives
// Set rebuilds. Give each proxy runtime one Registry, shared by every route
// (a backend's connection count is then its total across routes), and
// carry it over reloads.
//
// The zero Registry is ready to use. Its methods are safe for concurrent
// use; they take a mutex, so call them when building a Set, never per pick.
type Registry struct {
	mu sync.Mutex
	m  map[string]*Backend
}

// Backend returns the Backend for addr with the given weight. Every Backend
// it returns for the same addr shares live state; if the weight is also the
// same as last time, it returns the very same *Backend.
func (r *Registry) Backend(addr string, weight int) *Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]*Backend)
	}
	old := r.m[addr]
	if old != nil && old.Weight == weight {
		return old
	}
	b := &Backend{Addr: addr, Weight: weight}
	if old != nil {
		b.live = old.live
	} else {
		b.live = new(liveState)
	}
	r.m[addr] = b
	return b
}

// Prune forgets the addresses for which keep returns false and that have no
// live connection left, and returns how many it forgot. A forgotten address
// that comes back later starts with fresh live state. Call it after
// installing new Sets, with keep reporting whether an address is in any of
// them.
func (r *Registry) Prune(keep func(addr string) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for addr, b := range r.m {
		if !keep(addr) && b.Conns() <= 0 {
			delete(r.m, addr)
			n++
		}
	}
	return n
}

// Len returns the number of addresses r remembers.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
