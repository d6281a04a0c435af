package limit

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
)

// Defaults used when an Options field is zero.
const (
	// DefaultV4Prefix groups every IPv4 address by itself.
	DefaultV4Prefix = 32
	// DefaultV6Prefix groups IPv6 addresses by /64, the block one
	// customer usually holds.
	DefaultV6Prefix = 64
	// DefaultMaxEntries is how many groups a Rate tracks at most: 1,024
	// per shard, about 6 MiB of maps when full (some 100 bytes a group).
	DefaultMaxEntries = 1 << 16
)

// Options configures how clients are grouped and, for Rate, how many groups
// are tracked. The zero value selects every default. Check values from
// configuration with Validate: the constructors panic on invalid Options.
type Options struct {
	// V4Prefix is the prefix length, 1 to 32, by which IPv4 clients are
	// grouped: all addresses in one V4Prefix-bit block share one count and
	// one bucket. If 0, DefaultV4Prefix (32) is used.
	V4Prefix int

	// V6Prefix is the prefix length, 1 to 128, by which IPv6 clients are
	// grouped. If 0, DefaultV6Prefix (64) is used.
	V6Prefix int

	// MaxEntries caps the groups a Rate tracks at once, rounded up to a
	// multiple of the 64 shards (each shard holds MaxEntries/64). If 0,
	// DefaultMaxEntries (65,536) is used. PerIP ignores it: its entries are
	// bounded by the live connections.
	MaxEntries int
}

// Validate reports whether o can be used: prefix lengths within their
// family's bounds (0 meaning the default) and MaxEntries not negative.
func (o Options) Validate() error {
	if o.V4Prefix < 0 || o.V4Prefix > 32 {
		return fmt.Errorf("limit: IPv4 prefix length %d out of range 1-32", o.V4Prefix)
	}
	if o.V6Prefix < 0 || o.V6Prefix > 128 {
		return fmt.Errorf("limit: IPv6 prefix length %d out of range 1-128", o.V6Prefix)
	}
	if o.MaxEntries < 0 {
		return fmt.Errorf("limit: negative MaxEntries %d", o.MaxEntries)
	}
	return nil
}

// withDefaults returns the single Options of a constructor's variadic
// argument, defaults filled in. It panics on more than one Options or on
// invalid ones.
func withDefaults(opts []Options) Options {
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		panic("limit: more than one Options")
	}
	if err := o.Validate(); err != nil {
		panic(err)
	}
	if o.V4Prefix == 0 {
		o.V4Prefix = DefaultV4Prefix
	}
	if o.V6Prefix == 0 {
		o.V6Prefix = DefaultV6Prefix
	}
	if o.MaxEntries == 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	return o
}

// numShards is the number of shards, a power of two; shardShift selects the
// top log2(numShards) bits of a 64-bit hash.
const (
	numShards  = 64
	shardShift = 64 - 6
)

// cacheLine is what each shard is padded to, so that neighbouring shards'
// locks do not share a cache line (128 covers adjacent-line prefetching).
const cacheLine = 128

// key is a client group: the masked address as 128 bits. IPv4 groups use
// the IPv4-mapped form (::ffff:a.b.c.d masked); IPv6 groups never produce
// that form, since a mapped address is treated as IPv4 and a shorter IPv6
// mask cannot keep the ffff bits without keeping the leading zeros too.
type key struct{ hi, lo uint64 }

// invalidKey is the group of every invalid address. It is all ones, which
// only the multicast address ff..ff with V6Prefix 128 could also produce,
// and that is never a client's source address.
func invalidKey() key { return key{^uint64(0), ^uint64(0)} }

// grouping turns addresses into keys and keys into shard indexes. It never
// changes after it is built.
type grouping struct {
	v4mask              uint32
	v6hi, v6lo          uint64
	seed0, seed1, seed2 uint64
}

func newGrouping(o Options) grouping {
	g := grouping{
		v4mask: ^uint32(0) << (32 - o.V4Prefix),
		// Odd seeds: never zero, so the multiplications below cannot
		// collapse for lack of one.
		seed0: rand.Uint64() | 1,
		seed1: rand.Uint64() | 1,
		seed2: rand.Uint64() | 1,
	}
	if o.V6Prefix <= 64 {
		g.v6hi = ^uint64(0) << (64 - o.V6Prefix)
	} else {
		g.v6hi = ^uint64(0)
		g.v6lo = ^uint64(0) << (128 - o.V6Prefix)
	}
	return g
}

// key returns ip's group.
func (g *grouping) key(ip netip.Addr) key {
	if ip.Is4In6() {
		ip = ip.Unmap()
	}
	if ip.Is4() {
		a := ip.As4()
		return key{lo: 0xffff<<32 | uint64(binary.BigEndian.Uint32(a[:])&g.v4mask)}
	}
	if !ip.IsValid() {
		return invalidKey()
	}
	a := ip.As16()
	return key{
		hi: binary.BigEndian.Uint64(a[:8]) & g.v6hi,
		lo: binary.BigEndian.Uint64(a[8:]) & g.v6lo,
	}
}

// shard returns k's shard index in [0, numShards): the top bits of a
// seeded multiply-fold hash, so that which addresses share a shard differs
// between instances and cannot be predicted by a client.
func (g *grouping) shard(k key) int {
	return int(mix(mix(k.hi^g.seed0, k.lo^g.seed1), g.seed2) >> shardShift)
}

// mix folds the 128-bit product of a and b into 64 bits.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
