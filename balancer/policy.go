package balancer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
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

// PolicyArgs is a policy's configuration: what follows its name on the
// lb_policy line, parsed, and the route's options that fit it.
type PolicyArgs struct {
	// Keys are the hash key sources (hash only).
	Keys []KeySource
	// LoadFactor is Hash's bounded-load factor (see NewHash); 0: off.
	LoadFactor float64
	// Fallback is the policy for connections without a key (hash only);
	// nil: LeastConn.
	Fallback Policy
}

// PolicyKind is one selection policy as the configuration knows it. To add
// a policy, write its type and add an entry to Policies: the config's
// lb_policy and lb_key_missing, their errors and usage, and the proxy
// take it from there.
type PolicyKind struct {
	// Usage is the arguments after the name on the lb_policy line, as
	// errors show them ("" for none).
	Usage string
	// Keyed says the policy hashes a key: it takes key sources, and
	// lb_load_factor and lb_key_missing apply to it; a policy that is
	// not keyed can be lb_key_missing's fallback.
	Keyed bool
	// Parse checks the arguments after the name and returns them parsed,
	// or what is wrong with them (without the directive's name), each
	// error with the index of the argument to blame, if one is.
	Parse func(args []string) (PolicyArgs, []ArgError)
	// New builds the policy.
	New func(PolicyArgs) (Policy, error)
}

// ArgError is an error about one argument of a directive (Index), or the
// directive as a whole (Index -1).
type ArgError struct {
	Index int
	Err   error
}

func (e *ArgError) Error() string { return e.Err.Error() }

// noArgs is Parse for a policy that takes no arguments.
func noArgs(args []string) (PolicyArgs, []ArgError) {
	if len(args) > 0 {
		return PolicyArgs{}, []ArgError{{Index: -1, Err: fmt.Errorf("takes no keys; keys are for lb_policy %s", NameHash)}}
	}
	return PolicyArgs{}, nil
}

// Policies are the selection policies by name, as the configuration
// spells them.
var Policies = map[string]PolicyKind{
	NameHash: {
		Usage: "KEY...",
		Keyed: true,
		Parse: func(args []string) (PolicyArgs, []ArgError) {
			if len(args) == 0 {
				return PolicyArgs{}, []ArgError{{Index: -1, Err: fmt.Errorf("name at least one key: query:NAME, header:NAME, cookie:NAME, ip or path")}}
			}
			var a PolicyArgs
			var errs []ArgError
			for i, arg := range args {
				k, err := ParseKeySource(arg)
				if err != nil {
					errs = append(errs, ArgError{Index: i, Err: err})
					continue
				}
				a.Keys = append(a.Keys, k)
			}
			return a, errs
		},
		New: func(a PolicyArgs) (Policy, error) { return NewHash(a.LoadFactor, a.Fallback) },
	},
	NameLeastConn:  {Parse: noArgs, New: func(PolicyArgs) (Policy, error) { return NewLeastConn(), nil }},
	NameRoundRobin: {Parse: noArgs, New: func(PolicyArgs) (Policy, error) { return NewRoundRobin(), nil }},
	NameRandomTwo:  {Parse: noArgs, New: func(PolicyArgs) (Policy, error) { return NewRandomTwo(), nil }},
}

// PolicyNames returns the names of Policies, sorted; with keyed false,
// only those that are not keyed.
func PolicyNames(keyed bool) []string {
	names := make([]string, 0, len(Policies))
	for name, k := range Policies {
		if keyed || !k.Keyed {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// New returns the policy called name, with no arguments beyond loadFactor
// (Hash's bounded-load factor, ignored by the others). A Hash made by New
// falls back to LeastConn for connections without a key.
func New(name string, loadFactor float64) (Policy, error) {
	k, ok := Policies[name]
	if !ok {
		return nil, fmt.Errorf("unknown balancing policy %q; want one of %s", name, strings.Join(PolicyNames(true), ", "))
	}
	return k.New(PolicyArgs{LoadFactor: loadFactor})
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
