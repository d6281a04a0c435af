package balancer

import (
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// request builds a RequestCtx for uri from peer with the given headers
// (name, value pairs; a name may repeat).
func request(t testing.TB, uri, peer string, headers ...string) *fasthttp.RequestCtx {
	t.Helper()
	var req fasthttp.Request
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	ap := netip.MustParseAddrPort(peer)
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, net.TCPAddrFromAddrPort(ap), nil)
	return ctx
}

func mustSources(t *testing.T, specs ...string) []KeySource {
	t.Helper()
	out := make([]KeySource, len(specs))
	for i, s := range specs {
		k, err := ParseKeySource(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = k
	}
	return out
}

func TestKeySources(t *testing.T) {
	t.Parallel()
	spec := &KeySpec{Sources: mustSources(t, "query:room", "header:X-User", "cookie:sid", "ip")}
	for _, tc := range []struct {
		name    string
		ctx     *fasthttp.RequestCtx
		want    string
		wantOK  bool
		comment string
	}{
		{"query", request(t, "/ws?room=lobby&x=1", "192.0.2.1:5000", "X-User", "u1"), "lobby", true, "first source wins"},
		{"query decoded", request(t, "/ws?room=a%20b&room=second", "192.0.2.1:5000"), "a b", true, "first value, URL-decoded"},
		{"empty query falls through", request(t, "/ws?room=", "192.0.2.1:5000", "x-user", "u1"), "u1", true, "header names are case-insensitive"},
		{"cookie", request(t, "/ws", "192.0.2.1:5000", "Cookie", "a=1; sid=s3cr3t"), "s3cr3t", true, ""},
		{"ip", request(t, "/ws", "192.0.2.1:5000"), "192.0.2.1", true, ""},
		{"ipv6", request(t, "/ws", "[2001:db8::1]:5000"), "2001:db8::1", true, ""},
		{"mapped", request(t, "/ws", "[::ffff:192.0.2.9]:5000"), "192.0.2.9", true, "v4-mapped peers are unmapped"},
	} {
		key, ok := spec.Key(tc.ctx, make([]byte, 0, 64))
		if string(key) != tc.want || ok != tc.wantOK {
			t.Errorf("%s: Key = %q, %v; want %q, %v (%s)", tc.name, key, ok, tc.want, tc.wantOK, tc.comment)
		}
	}

	path := &KeySpec{Sources: mustSources(t, "header:X-Missing", "path")}
	if key, ok := path.Key(request(t, "/chat/room%201?x=y", "192.0.2.1:1"), nil); string(key) != "/chat/room 1" || !ok {
		t.Errorf("path key = %q, %v", key, ok)
	}
	none := &KeySpec{Sources: mustSources(t, "header:X-Missing")}
	if key, ok := none.Key(request(t, "/", "192.0.2.1:1"), make([]byte, 5)); key != nil || ok {
		t.Errorf("no key: got %q, %v; want nil, false", key, ok)
	}
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	xff := &KeySpec{Sources: mustSources(t, "ip"), TrustedProxies: trusted}
	fwd := &KeySpec{Sources: mustSources(t, "ip"), TrustedProxies: trusted, ClientIPHeader: HeaderForwarded}
	for _, tc := range []struct {
		name    string
		spec    *KeySpec
		peer    string
		headers []string
		want    string // "" for no client IP
	}{
		{"untrusted peer ignores XFF", xff, "192.0.2.1:1", []string{"X-Forwarded-For", "198.51.100.1"}, "192.0.2.1"},
		{"trusted peer, one hop", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "198.51.100.1"}, "198.51.100.1"},
		{"spoofed left entries skipped", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4, 198.51.100.1, 10.0.0.5"}, "198.51.100.1"},
		{"several header lines", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4, 198.51.100.1", "X-Forwarded-For", "10.1.1.1"}, "198.51.100.1"},
		{"all trusted: leftmost", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "10.9.9.9, 10.0.0.5"}, "10.9.9.9"},
		{"no header: the peer", xff, "10.0.0.1:1", nil, "10.0.0.1"},
		{"ports and brackets", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "[2001:db8::7]:443, 10.0.0.2:80"}, "2001:db8::7"},
		{"ipv4 with port", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "198.51.100.3:5555"}, "198.51.100.3"},
		{"mapped entry", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "::ffff:198.51.100.4"}, "198.51.100.4"},
		{"trusted v6 peer", xff, "[fd00::1]:1", []string{"X-Forwarded-For", "2001:db8::9"}, "2001:db8::9"},
		{"garbage stops the walk", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "198.51.100.1, nonsense"}, ""},
		{"zone refused", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "fe80::1%eth0"}, ""},
		{"empty elements skipped", xff, "10.0.0.1:1", []string{"X-Forwarded-For", "198.51.100.1, , "}, "198.51.100.1"},
		{"XFF spec ignores Forwarded", xff, "10.0.0.1:1", []string{"Forwarded", "for=1.2.3.4"}, "10.0.0.1"},
		{"Forwarded", fwd, "10.0.0.1:1", []string{"Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43"}, "192.0.2.60"},
		{"Forwarded quoted v6", fwd, "10.0.0.1:1", []string{"Forwarded", `For="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::17"},
		{"Forwarded chain", fwd, "10.0.0.1:1", []string{"Forwarded", `for=1.2.3.4, for=198.51.100.8;by="a,b", for=10.2.2.2`}, "198.51.100.8"},
		{"Forwarded unknown", fwd, "10.0.0.1:1", []string{"Forwarded", "for=unknown"}, ""},
		{"Forwarded obfuscated", fwd, "10.0.0.1:1", []string{"Forwarded", "for=_hidden"}, ""},
		{"Forwarded without for", fwd, "10.0.0.1:1", []string{"Forwarded", "proto=https"}, ""},
		{"Forwarded spec ignores XFF", fwd, "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4"}, "10.0.0.1"},
	} {
		key, ok := tc.spec.Key(request(t, "/", tc.peer, tc.headers...), nil)
		if string(key) != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: Key = %q, %v; want %q", tc.name, key, ok, tc.want)
		}
	}

	// With no client IP, the next source is tried.
	spec := &KeySpec{Sources: mustSources(t, "ip", "query:u"), TrustedProxies: trusted}
	if key, _ := spec.Key(request(t, "/?u=bob", "10.0.0.1:1", "X-Forwarded-For", "junk"), nil); string(key) != "bob" {
		t.Errorf("fallback after a broken chain: %q, want bob", key)
	}
}

func TestParseKeySource(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"query:room", "header:X-User-Id", "cookie:sid", "ip", "path"} {
		k, err := ParseKeySource(s)
		if err != nil || k.String() != s {
			t.Errorf("ParseKeySource(%q) = %v, %v", s, k, err)
		}
	}
	for _, s := range []string{"", "query", "query:", "ip:x", "path:/", "body:x", "Header:x"} {
		if k, err := ParseKeySource(s); err == nil {
			t.Errorf("ParseKeySource(%q) = %v, want an error", s, k)
		}
	}
}

func TestKeySpecValidate(t *testing.T) {
	t.Parallel()
	good := KeySpec{Sources: mustSources(t, "ip", "cookie:c"), TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
	bad := KeySpec{
		Sources:        []KeySource{{Kind: KeyHeader}, {Kind: 99}},
		TrustedProxies: []netip.Prefix{{}},
		ClientIPHeader: "X-Real-IP",
	}
	if err := bad.Validate(); err == nil {
		t.Error("invalid KeySpec accepted")
	} else {
		t.Log(err)
	}
}

func FuzzForwardedHeaders(f *testing.F) {
	for _, s := range []string{"1.2.3.4, 10.0.0.1", `for="[::1]:80";by=x, for=10.0.0.2`, `"`, ",,,", "for=", "[", "[::1", "1.2.3.4:"} {
		f.Add(s)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	specs := []*KeySpec{
		{TrustedProxies: trusted},
		{TrustedProxies: trusted, ClientIPHeader: HeaderForwarded},
	}
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, v string) {
		var h fasthttp.RequestHeader
		h.Set(HeaderXForwardedFor, v)
		h.Set(HeaderForwarded, v)
		for _, spec := range specs {
			ip := spec.ClientIP(&h, peer)
			if ip.IsValid() && (ip.Zone() != "" || ip.Is4In6()) {
				t.Errorf("%q gave %v", v, ip)
			}
		}
	})
}
