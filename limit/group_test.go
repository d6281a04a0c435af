package limit

import (
	"net/netip"
	"strings"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		o    Options
		want string // substring of the error; "" for valid
	}{
		{Options{}, ""},
		{Options{V4Prefix: 1, V6Prefix: 1, MaxEntries: 1}, ""},
		{Options{V4Prefix: 32, V6Prefix: 128}, ""},
		{Options{V4Prefix: -1}, "IPv4 prefix"},
		{Options{V4Prefix: 33}, "IPv4 prefix"},
		{Options{V6Prefix: -1}, "IPv6 prefix"},
		{Options{V6Prefix: 129}, "IPv6 prefix"},
		{Options{MaxEntries: -1}, "MaxEntries"},
	} {
		err := tc.o.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tc.o, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error about %s", tc.o, err, tc.want)
		}
	}
}

func TestConstructorsPanic(t *testing.T) {
	t.Parallel()
	for name, f := range map[string]func(){
		"PerIP two options":   func() { NewPerIP(1, Options{}, Options{}) },
		"PerIP invalid":       func() { NewPerIP(1, Options{V4Prefix: 40}) },
		"Rate two options":    func() { NewRate(1, 1, Options{}, Options{}) },
		"Rate invalid":        func() { NewRate(1, 1, Options{V6Prefix: 200}) },
		"Rate NaN":            func() { NewRate(nan(), 1) },
		"unlimited invalid":   func() { NewPerIP(0, Options{MaxEntries: -5}) },
		"unlimited Rate opts": func() { NewRate(0, 1, Options{V4Prefix: -1}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

// TestGrouping checks which addresses share a group, for the default and
// for other prefix lengths.
func TestGrouping(t *testing.T) {
	t.Parallel()
	m := netip.MustParseAddr
	for _, tc := range []struct {
		name   string
		o      Options
		a, b   string
		shared bool
	}{
		{"v4 default", Options{}, "192.0.2.1", "192.0.2.2", false},
		{"v4 same", Options{}, "192.0.2.1", "192.0.2.1", true},
		{"v4 mapped", Options{}, "192.0.2.1", "::ffff:192.0.2.1", true},
		{"v4 /24", Options{V4Prefix: 24}, "192.0.2.1", "192.0.2.254", true},
		{"v4 /24 other", Options{V4Prefix: 24}, "192.0.2.1", "192.0.3.1", false},
		{"v4 mapped /24", Options{V4Prefix: 24}, "::ffff:192.0.2.1", "192.0.2.9", true},
		{"v4 /1", Options{V4Prefix: 1}, "1.2.3.4", "100.0.0.1", true},
		{"v6 /64", Options{}, "2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", true},
		{"v6 /64 other", Options{}, "2001:db8::1", "2001:db8:0:1::1", false},
		{"v6 zone", Options{}, "fe80::1%eth0", "fe80::2%eth1", true},
		{"v6 /128", Options{V6Prefix: 128}, "2001:db8::1", "2001:db8::2", false},
		{"v6 /48", Options{V6Prefix: 48}, "2001:db8:1:1::1", "2001:db8:1:ffff::1", true},
		{"v6 /48 other", Options{V6Prefix: 48}, "2001:db8:1::1", "2001:db8:2::1", false},
		{"v6 /96", Options{V6Prefix: 96}, "2001:db8::1:0:1", "2001:db8::1:0:2", true},
		{"v6 /96 other", Options{V6Prefix: 96}, "2001:db8::1:0:1", "2001:db8::2:0:1", false},
		{"v6 /80 vs v4", Options{V6Prefix: 80}, "::fffe:0:1", "0.0.0.0", false},
		{"v6 vs v4 zero", Options{}, "::1", "0.0.0.0", false},
		{"invalid vs ::", Options{}, "", "::", false},
		{"invalid vs all ones /64", Options{}, "", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
	} {
		g := newGrouping(withDefaults([]Options{tc.o}))
		var a, b netip.Addr
		if tc.a != "" {
			a = m(tc.a)
		}
		if tc.b != "" {
			b = m(tc.b)
		}
		if got := g.key(a) == g.key(b); got != tc.shared {
			t.Errorf("%s: %s and %s share a group: %v, want %v", tc.name, tc.a, tc.b, got, tc.shared)
		}
	}
}

// TestShardSpread: a run of consecutive addresses, IPv4 or IPv6 /64s,
// spreads over all shards roughly evenly.
func TestShardSpread(t *testing.T) {
	t.Parallel()
	g := newGrouping(withDefaults(nil))
	const n = 64 * 1000
	for _, family := range []string{"v4", "v6"} {
		var counts [numShards]int
		for i := range n {
			ip := v4(i)
			if family == "v6" {
				ip = v6(i, 1)
			}
			counts[g.shard(g.key(ip))]++
		}
		for i, c := range counts {
			// Mean 1000, standard deviation about 31.
			if c < 800 || c > 1200 {
				t.Errorf("%s: shard %d got %d of %d addresses, want about %d", family, i, c, n, n/numShards)
			}
		}
	}
}
