package balancer

import (
	"fmt"
	"math/rand/v2"
)

// Policy chooses a backend for a new connection.
//
// Pick returns a backend of s for the connection whose key is key, skipping
// unhealthy backends and those in tried, and counts the connection on it
// (Backend.Acquire) before returning, so that concurrent picks see it at
// once. The caller must call Release on the returned backend exactly once:
// when the proxied connection ends, or when the upstream handshake fails.
// Pick returns nil when no backend of s is eligible; the proxy answers 502
// or 503.
//
// Retrying: when the upstream handshake fails, the proxy releases the
// backend, adds it to tried and calls Pick again with the same Set and key.
// Hash then returns the key's next choice, the others another backend. A
// Tried holds at most MaxTries backends, which bounds the retries.
//
// key is the connection's sticky key (see KeySpec.Key), empty when the
// request has none; only Hash reads it, and no policy keeps it. Pick does
// not allocate, and is safe for concurrent use.
//
// Peek answers what Pick would return now for a first attempt with key,
// without counting a connection on the backend or moving the policy's state
// (RoundRobin's position), so that asking (the admin /lookup) does not
// change the answers given to real connections. Nothing is to be released.
// A random policy may answer differently from the Pick that follows.
type Policy interface {
	Pick(s *Set, key []byte, tried Tried) *Backend
	Peek(s *Set, key []byte) *Backend
}

// MaxTries is the most backends a Tried holds: a connection whose every
// attempt fails makes at most MaxTries+1 attempts.
const MaxTries = 8

// Tried is the small set of backends a connection has already tried. It is
// a value (passed by copy, no allocation); the zero Tried is empty. It
// matches backends by live state (Backend.Same), so it still recognises a
// backend after its weight changed.
type Tried struct {
	n int
	b [MaxTries]*Backend
}

// Add records b as tried. It returns false, and records nothing, when t
// already holds MaxTries backends: the caller should stop retrying.
func (t *Tried) Add(b *Backend) bool {
	if t.n == MaxTries {
		return false
	}
	t.b[t.n] = b
	t.n++
	return true
}

// Len returns the number of backends in t.
func (t *Tried) Len() int { return t.n }

// Contains reports whether t holds b.
func (t *Tried) Contains(b *Backend) bool {
	for i := 0; i < t.n; i++ {
		if t.b[i].live == b.live {
			return true
		}
	}
	return false
}

// eligible reports whether a policy may pick b.
func eligible(b *Backend, tried *Tried) bool {
	return !b.live.down.Load() && (tried.n == 0 || !tried.Contains(b))
}

// Policy names, as the configuration spells them.
const (
	NameHash       = "hash"
	NameLeastConn  = "least_conn"
	NameRoundRobin = "round_robin"
	NameRandomTwo  = "random_two"
)

// New returns the policy called name. loadFactor is Hash's bounded-load
// factor (see NewHash) and is ignored by the other policies. A Hash made by
// New falls back to LeastConn for connections without a key.
func New(name string, loadFactor float64) (Policy, error) {
	switch name {
	case NameHash:
		return NewHash(loadFactor, nil)
	case NameLeastConn:
		return NewLeastConn(), nil
	case NameRoundRobin:
		return NewRoundRobin(), nil
	case NameRandomTwo:
		return NewRandomTwo(), nil
	}
	return nil, fmt.Errorf("unknown balancing policy %q; want %s, %s, %s or %s",
		name, NameHash, NameLeastConn, NameRoundRobin, NameRandomTwo)
}

// rng is a splitmix64 generator on the stack, seeded once per pick from
// math/rand/v2 (whose global source is per-thread and takes no lock), for
// the few extra random numbers a pick may need.
type rng uint64

func newRNG() rng { return rng(rand.Uint64()) }

func (r *rng) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	return mix(uint64(*r), 0)
}
