package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
)

func TestBalancingDirectives(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `{
	trusted_proxies 10.1.0.0/16 192.168.1.7 private_ranges
	client_ip_header forwarded
	admin 127.0.0.1:2019
}
:8080 {
	route /ws {
		to a:1 b:2 c:3
		weights 1 2 3
		lb_policy hash query:room header:X-User cookie:sid ip path
		lb_load_factor 1.25
		lb_key_missing reject
	}
	route /rr {
		to a:1
		lb_policy round_robin
	}
}`)
	g := cfg.Global
	if g.ClientIPHeader != balancer.HeaderForwarded || g.Admin != "127.0.0.1:2019" || g.AdminAllowRemote {
		t.Fatalf("global: %+v", g)
	}
	if len(g.TrustedProxies) != 8 || g.TrustedProxies[1] != netip.MustParsePrefix("192.168.1.7/32") {
		t.Fatalf("trusted proxies: %v", g.TrustedProxies)
	}
	r := cfg.Sites[0].Routes[0]
	if r.LBPolicy != "hash" || r.LBArgs.LoadFactor != 1.25 || r.LBKeyMissing != "reject" {
		t.Fatalf("route: %+v", r)
	}
	var keys []string
	for _, k := range r.LBArgs.Keys {
		keys = append(keys, k.String())
	}
	if strings.Join(keys, " ") != "query:room header:X-User cookie:sid ip path" {
		t.Fatalf("keys %v", keys)
	}
	for i, w := range []int{1, 2, 3} {
		if r.Upstreams[i].Weight != w {
			t.Fatalf("weights %+v", r.Upstreams)
		}
	}
	if rr := cfg.Sites[0].Routes[1]; rr.LBPolicy != "round_robin" || rr.Upstreams[0].Weight != 1 {
		t.Fatalf("rr route: %+v", rr)
	}
}

func TestBalancingErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body string
		want       []wantErr
	}{
		{"hash without key", ":1 {\n route {\n  to a:1\n  lb_policy hash\n }\n}", []wantErr{{4, "name at least one key"}}},
		{"bad key", ":1 {\n route {\n  to a:1\n  lb_policy hash query: bogus:x\n }\n}", []wantErr{{4, "lb_policy hash"}, {4, "lb_policy hash"}}},
		{"unknown policy", ":1 {\n route {\n  to a:1\n  lb_policy sticky\n }\n}", []wantErr{{4, `lb_policy: unknown policy "sticky"`}}},
		{"keys on least_conn", ":1 {\n route {\n  to a:1\n  lb_policy least_conn query:x\n }\n}", []wantErr{{4, "takes no keys"}}},
		{"load factor without hash", ":1 {\n route {\n  to a:1\n  lb_load_factor 1.5\n }\n}", []wantErr{{4, "hash only"}}},
		{"load factor range", ":1 {\n route {\n  to a:1\n  lb_policy hash ip\n  lb_load_factor 0.5\n }\n}", []wantErr{{5, "from 1 to"}}},
		{"key missing without hash", ":1 {\n route {\n  to a:1\n  lb_key_missing reject\n }\n}", []wantErr{{4, "hash only"}}},
		{"key missing value", ":1 {\n route {\n  to a:1\n  lb_policy hash ip\n  lb_key_missing drop\n }\n}", []wantErr{{5, "want reject"}}},
		{"weights count", ":1 {\n route {\n  to a:1 b:2\n  weights 1\n }\n}", []wantErr{{4, "1 given for 2 upstreams"}}},
		{"weights value", ":1 {\n route {\n  to a:1 b:2\n  weights 1 zero\n }\n}", []wantErr{{4, `"zero" is not a whole number`}}},
		{"trusted proxy", "{\n trusted_proxies 10.0.0.0/33\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "neither a CIDR"}}},
		{"client ip header", "{\n client_ip_header X-Real-IP\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "want X-Forwarded-For or Forwarded"}}},
		{"admin remote", "{\n admin 0.0.0.0:2019\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "not a loopback address"}}},
		{"admin bad", "{\n admin nowhere\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "want HOST:PORT"}}},
		{"admin on a site's port", "{\n admin 127.0.0.1:8080\n}\n:8080 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "port 8080 is site"}}},
		{"admin on the http_port", "{\n admin 127.0.0.1:8081\n http_port 8081\n}\nhttps://a.example:8443 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "is the http_port"}}},
		{"admin remote without token", "{\n admin 0.0.0.0:2019 allow_remote\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "allow_remote requires a token"}}},
		{"admin empty token", "{\n admin 0.0.0.0:2019 allow_remote {\n  token {$WSPROXY_TEST_UNSET_TOKEN}\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "requires a token"}, {3, "token is missing or empty"}}},
		{"admin unknown option", "{\n admin 127.0.0.1:2019 {\n  user bob\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{3, "known: token"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(testFile, []byte(c.body))
			checkErrors(t, testFile, err, c.want)
		})
	}
	cfg := mustParse(t, testFile, "{\n admin 0.0.0.0:2019 allow_remote {\n  token s3cret\n }\n}\n:1 {\n route {\n  to a:1\n }\n}")
	if !cfg.Global.AdminAllowRemote || cfg.Global.Admin != "0.0.0.0:2019" || cfg.Global.AdminToken != "s3cret" {
		t.Fatalf("allow_remote: %+v", cfg.Global)
	}
	if cfg := mustParse(t, testFile, "{\n admin off\n}\n:1 {\n route {\n  to a:1\n }\n}"); cfg.Global.Admin != "" {
		t.Fatalf("admin off: %q", cfg.Global.Admin)
	}
}

func TestHardeningDirectives(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `{
 request_body_timeout off
}
:1 {
 route /files/* {
  to a:1
  allow_encoded_slash
  response_timeout 5s
  max_conns_per_backend 64 2s
 }
 route {
  to a:1
  response_timeout off
  max_conns_per_backend 8
  allow_encoded_slash false
 }
}`)
	if cfg.Global.RequestBodyTimeout != 0 {
		t.Errorf("request_body_timeout off: %v", cfg.Global.RequestBodyTimeout)
	}
	r := cfg.Sites[0].Routes[0]
	if !r.AllowEncodedSlash || r.ResponseTimeout != 5*time.Second || r.MaxConnsPerBackend != 64 || r.MaxConnsWait != 2*time.Second {
		t.Errorf("first route: %+v", r)
	}
	r = cfg.Sites[0].Routes[1]
	if r.AllowEncodedSlash || r.ResponseTimeout != 0 || r.MaxConnsPerBackend != 8 || r.MaxConnsWait != 30*time.Second {
		t.Errorf("second route: %+v", r)
	}
	for _, c := range []struct {
		name, body string
		want       []wantErr
	}{
		{"body timeout", "{\n request_body_timeout soon\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "want a duration"}}},
		{"response timeout", ":1 {\n route {\n  to a:1\n  response_timeout -1s\n }\n}", []wantErr{{4, "greater than zero"}}},
		{"conns", ":1 {\n route {\n  to a:1\n  max_conns_per_backend 0\n }\n}", []wantErr{{4, "at least 1"}}},
		{"conns wait", ":1 {\n route {\n  to a:1\n  max_conns_per_backend 4 later\n }\n}", []wantErr{{4, "wait"}}},
		{"encoded slash", ":1 {\n route {\n  to a:1\n  allow_encoded_slash yes\n }\n}", []wantErr{{4, "want true or false"}}},
	} {
		_, err := Parse(testFile, []byte(c.body))
		t.Run(c.name, func(t *testing.T) { checkErrors(t, testFile, err, c.want) })
	}
}

// TestUnknownNamesSuggest: an unknown directive, option or policy is
// reported at its file:line with the closest known name when it looks
// like a typo of one, and without a guess when it does not.
func TestUnknownNamesSuggest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, conf string
		want       wantErr
	}{
		{"route directive", ":1 {\n route {\n  to a:1\n  lb_polcy hash ip\n }\n}", wantErr{4, `unknown directive "lb_polcy" in route; did you mean "lb_policy"?`}},
		{"health directive", ":1 {\n route {\n  to a:1\n  helth_uri /x\n }\n}", wantErr{4, `did you mean "health_uri"?`}},
		{"global option", "{\n handshake_timout 5s\n}\n:1 {\n route {\n  to a:1\n }\n}", wantErr{2, `did you mean "handshake_timeout"?`}},
		{"site directive", ":1 {\n rute {\n  to a:1\n }\n route {\n  to a:1\n }\n}", wantErr{2, `did you mean "route"?`}},
		{"policy", ":1 {\n route {\n  to a:1\n  lb_policy round_robbin\n }\n}", wantErr{4, `unknown policy "round_robbin"; did you mean "round_robin"?`}},
		{"no guess", ":1 {\n route {\n  to a:1\n  frobnicate 3\n }\n}", wantErr{4, `unknown directive "frobnicate" in route; known: `}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(testFile, []byte(tc.conf))
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("got %v, want an ErrorList", err)
			}
			e := list[0]
			if e.Pos.Line != tc.want.line || !strings.Contains(e.Msg, tc.want.msg) {
				t.Fatalf("got %v, want line %d with %q", e, tc.want.line, tc.want.msg)
			}
		})
	}
}

// TestLBArgsWhole: the policy's parsed arguments reach the route whole,
// and lb_load_factor holds whichever of the two lines comes first.
func TestLBArgsWhole(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `:8080 {
	route /a {
		to a:1
		lb_load_factor 1.5
		lb_policy hash query:room
	}
	route /b {
		to a:1
		lb_policy hash ip
		lb_load_factor 2
	}
}`)
	for i, want := range []struct {
		lf  float64
		key string
	}{{1.5, "query:room"}, {2, "ip"}} {
		a := cfg.Sites[0].Routes[i].LBArgs
		if a.LoadFactor != want.lf || len(a.Keys) != 1 || a.Keys[0].String() != want.key {
			t.Errorf("route %d: %+v, want load factor %v and key %s", i, a, want.lf, want.key)
		}
	}
}
