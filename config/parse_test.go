package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

const testFile = "test.Caddyfile"

// testEnvBackend is set in TestMain (t.Setenv does not mix with t.Parallel).
const testEnvBackend = "WSPROXY_CONFIG_TEST_BACKEND"

func TestMain(m *testing.M) {
	os.Setenv(testEnvBackend, "10.9.8.7:6000")
	os.Exit(m.Run())
}

// wantErr is one expected error: its line in the file and a part of its message.
type wantErr struct {
	line int
	msg  string
}

// checkErrors asserts err is an ErrorList holding exactly want, in order.
func checkErrors(t *testing.T, file string, err error, want []wantErr) {
	t.Helper()
	if err == nil {
		t.Fatalf("Parse succeeded, want %d errors", len(want))
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, want ErrorList: %v", err, err)
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		e := list[i]
		if e.Pos.File != file || e.Pos.Line != w.line || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("error %d = %q\nwant %s:%d: ...%s...", i, e.Error(), file, w.line, w.msg)
		}
	}
}

func mustParse(t *testing.T, file, body string) *Config {
	t.Helper()
	cfg, err := Parse(file, []byte(body))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func defaultRoute() Route {
	return Route{
		LBRetries:                2,
		DialTimeout:              5 * time.Second,
		ResponseTimeout:          60 * time.Second,
		MaxConnsPerBackend:       1024,
		MaxConnsWait:             30 * time.Second,
		UpstreamHandshakeTimeout: 10 * time.Second,
		AllowEmptyOrigin:         true,
		LBPolicy:                 "least_conn",
		LBKeyMissing:             "least_conn",
		ClientPing:               Ping{Interval: 30 * time.Second, Timeout: 15 * time.Second},
		TCP:                      keepalive.DefaultTCP(),
		WriteTimeout:             30 * time.Second,
		MaxMessage:               [2]int64{64 << 20, 0},
		Passive:                  defaultPassive(),
	}
}

func TestParseValidFile(t *testing.T) {
	t.Parallel()
	const file = "testdata/valid.Caddyfile"
	cfg, err := Load(file)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	at := func(line int) Pos { return Pos{File: file, Line: line} }
	route := func(r Route) *Route {
		d := defaultRoute()
		d.Pos, d.Name, d.Paths, d.Query, d.Upstreams = r.Pos, r.Name, r.Paths, r.Query, r.Upstreams
		return &d
	}
	chat := route(Route{
		Pos:   at(15),
		Name:  "chat",
		Paths: []PathMatcher{{Kind: PathPrefix, Pattern: "/chat/"}},
		Query: []QueryMatcher{{Key: "room", Kind: QueryPresent}},
		Upstreams: []Upstream{
			{Pos: at(18), Addr: "10.0.0.1:9000", Weight: 1},
			{Pos: at(18), Addr: "10.0.0.2:9000", Weight: 1},
		},
	})
	chat.LBRetries = 3
	chat.DialTimeout = 2 * time.Second
	chat.UpstreamHandshakeTimeout = 3 * time.Second
	chat.Origins = []string{"https://example.com", "https://*.example.com", "http://localhost:*"}
	chat.AllowEmptyOrigin = false

	want := &Config{
		File: file,
		Global: Global{
			MaxHeaderBytes:     32 << 10,
			HandshakeTimeout:   5 * time.Second,
			RequestBodyTimeout: 60 * time.Second,
			LogLevel:           "warn",
			ClientIPHeader:     "X-Forwarded-For",
			GracePeriod:        30 * time.Second,
			ReloadDrain:        10 * time.Second,
			WriteTimeout:       30 * time.Second,
			AccessLog:          "stdout",
			AccessLogSample:    1,
			TLS:                TLSOptions{HTTPPort: 80, HTTPSPort: 443},
		},
		Sites: []*Site{
			{
				Pos: at(14),
				Addresses: []Address{
					{Scheme: "http", Host: "chat.example.com", Port: 8080},
					{Scheme: "http", Host: "chat.example.org", Port: 8080},
				},
				Routes: []*Route{
					chat,
					route(Route{
						Pos:  at(25),
						Name: "http://chat.example.com:8080/notify",
						Paths: []PathMatcher{
							{Kind: PathExact, Pattern: "/notify"},
							{Kind: PathGlob, Pattern: "/events/*/stream"},
						},
						Query: []QueryMatcher{
							{Key: "v", Kind: QueryEquals, Value: "2"},
							{Key: "client", Kind: QueryGlob, Value: "web*"},
						},
						Upstreams: []Upstream{{Pos: at(27), Addr: "notify.internal:7000", Weight: 1}},
					}),
					route(Route{
						Pos:       at(30),
						Name:      "http://chat.example.com:8080*",
						Upstreams: []Upstream{{Pos: at(31), Addr: "127.0.0.1:9999", Weight: 1}},
					}),
				},
			},
			{
				Pos: at(36),
				Addresses: []Address{
					{Scheme: "http", Host: "", Port: 8081},
					{Scheme: "http", Host: "::1", Port: 8082},
					{Scheme: "http", Host: "*.example.net", Port: 8083},
				},
				Routes: []*Route{route(Route{
					Pos:       at(37),
					Name:      "http://:8081*",
					Upstreams: []Upstream{{Pos: at(38), Addr: "[fd00::1]:9000", Weight: 1}},
				})},
			},
			{
				Pos:       at(42),
				Addresses: []Address{{Scheme: "http", Host: "plain.example.com", Port: 80}},
				Routes: []*Route{route(Route{
					Pos:  at(43),
					Name: "http://plain.example.com:80/a",
					Paths: []PathMatcher{
						{Kind: PathExact, Pattern: "/a"},
						{Kind: PathPrefix, Pattern: "/b"},
					},
					Upstreams: []Upstream{{Pos: at(45), Addr: "localhost:9001", Weight: 1}},
				})},
			},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(%s) mismatch\ngot:  %s\nwant: %s", file, dump(cfg), dump(want))
	}
}

// dump prints a Config with its pointers followed.
func dump(c *Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "File=%q Global=%+v\n", c.File, c.Global)
	for _, s := range c.Sites {
		fmt.Fprintf(&b, "  Site %v %+v\n", s.Pos, s.Addresses)
		for _, r := range s.Routes {
			fmt.Fprintf(&b, "    %+v\n", *r)
		}
	}
	return b.String()
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, ":8080 {\n\troute /chat/* {\n\t\tto 127.0.0.1:9000\n\t}\n}\n")
	r := defaultRoute()
	r.Pos = Pos{File: testFile, Line: 2}
	r.Name = "http://:8080/chat/*"
	r.Paths = []PathMatcher{{Kind: PathPrefix, Pattern: "/chat/"}}
	r.Upstreams = []Upstream{{Pos: Pos{File: testFile, Line: 3}, Addr: "127.0.0.1:9000", Weight: 1}}
	want := &Config{
		File:   testFile,
		Global: Global{MaxHeaderBytes: 16384, HandshakeTimeout: 10 * time.Second, RequestBodyTimeout: 60 * time.Second, LogLevel: "info", ClientIPHeader: "X-Forwarded-For", GracePeriod: 30 * time.Second, ReloadDrain: 10 * time.Second, WriteTimeout: 30 * time.Second, AccessLog: "stdout", AccessLogSample: 1, TLS: TLSOptions{HTTPPort: 80, HTTPSPort: 443}},
		Sites: []*Site{{
			Pos:       Pos{File: testFile, Line: 1},
			Addresses: []Address{{Scheme: "http", Port: 8080}},
			Routes:    []*Route{&r},
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %s\nwant %s", dump(cfg), dump(want))
	}
}

// site wraps route lines into a config; the first route line is line 3.
func site(routeLines string) string {
	return ":8080 {\n\troute /x {\n" + routeLines + "\n\t}\n}\n"
}

// global wraps option lines into a config; the first option is line 2.
func global(lines string) string {
	return "{\n" + lines + "\n}\n:8080 {\n\troute {\n\t\tto a:1\n\t}\n}\n"
}

// addr makes a config with one site at address a.
func addr(a string) string {
	return a + " {\n\troute {\n\t\tto a:1\n\t}\n}\n"
}

func TestParseValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		body  string
		check func(*Config) any // returns the value to compare
		want  any
	}{
		{"size bytes", global("max_header_bytes 1024"), func(c *Config) any { return c.Global.MaxHeaderBytes }, 1024},
		{"size KiB", global("max_header_bytes 16KiB"), func(c *Config) any { return c.Global.MaxHeaderBytes }, 16384},
		{"size KB", global("max_header_bytes 16KB"), func(c *Config) any { return c.Global.MaxHeaderBytes }, 16000},
		{"size MiB", global("max_header_bytes 1MiB"), func(c *Config) any { return c.Global.MaxHeaderBytes }, 1 << 20},
		{"size lower case", global("max_header_bytes 2kib"), func(c *Config) any { return c.Global.MaxHeaderBytes }, 2048},
		{"size B", global("max_header_bytes 4096B"), func(c *Config) any { return c.Global.MaxHeaderBytes }, 4096},
		{"handshake timeout", global("handshake_timeout 1m30s"), func(c *Config) any { return c.Global.HandshakeTimeout }, 90 * time.Second},
		{"log level", global("log_level DEBUG"), func(c *Config) any { return c.Global.LogLevel }, "debug"},
		{"http default port", addr("http://Example.COM"), func(c *Config) any { return c.Sites[0].Addresses[0] }, Address{Scheme: "http", Host: "example.com", Port: 80}},
		{"localhost port", addr("localhost:8080"), func(c *Config) any { return c.Sites[0].Addresses[0] }, Address{Scheme: "http", Host: "localhost", Port: 8080}},
		{"ipv4", addr("127.0.0.1:9000"), func(c *Config) any { return c.Sites[0].Addresses[0] }, Address{Scheme: "http", Host: "127.0.0.1", Port: 9000}},
		{"ipv6", addr("[::1]:8080"), func(c *Config) any { return c.Sites[0].Addresses[0].String() }, "http://[::1]:8080"},
		{"ipv6 http default port", addr("http://[0:0::1]"), func(c *Config) any { return c.Sites[0].Addresses[0] }, Address{Scheme: "http", Host: "::1", Port: 80}},
		{"wildcard", addr("*.Example.com:8080"), func(c *Config) any { return c.Sites[0].Addresses[0] }, Address{Scheme: "http", Host: "*.example.com", Port: 8080}},
		{"comma separated", addr(":8080, :8081"), func(c *Config) any { return len(c.Sites[0].Addresses) }, 2},
		{"exact path", site("\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].Paths }, []PathMatcher{{Kind: PathExact, Pattern: "/x"}}},
		{"glob path", ":1 {\n\troute /a/*.js /b/*/[ab] {\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[0].Paths },
			[]PathMatcher{{Kind: PathGlob, Pattern: "/a/*.js"}, {Kind: PathGlob, Pattern: "/b/*/[ab]"}}},
		{"brackets without star are exact", ":1 {\n\troute /b/[ab] {\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[0].Paths },
			[]PathMatcher{{Kind: PathExact, Pattern: "/b/[ab]"}}},
		{"prefix keeps other metacharacters", ":1 {\n\troute /b/[* {\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[0].Paths },
			[]PathMatcher{{Kind: PathPrefix, Pattern: "/b/["}}},
		{"two stars is a glob", ":1 {\n\troute /a/*/* {\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[0].Paths },
			[]PathMatcher{{Kind: PathGlob, Pattern: "/a/*/*"}}},
		{"path directive adds", ":1 {\n\troute /a {\n\t\tpath /b/* /c\n\t\tpath /d\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[0].Paths },
			[]PathMatcher{{Kind: PathExact, Pattern: "/a"}, {Kind: PathPrefix, Pattern: "/b/"}, {Kind: PathExact, Pattern: "/c"}, {Kind: PathExact, Pattern: "/d"}}},
		{"star means all", ":1 {\n\troute * {\n\t\tto a:1\n\t}\n}", func(c *Config) any { return len(c.Sites[0].Routes[0].Paths) }, 0},
		{"name from path directive", ":1 {\n\troute {\n\t\tpath /p/*\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[0].Name }, "http://:1/p/*"},
		{"name from ipv6 site", "[::1]:80 {\n\troute /p {\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[0].Name }, "http://[::1]:80/p"},
		{"name quoted", site("\t\tname \"chat room\"\n\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].Name }, "chat room"},
		{"query kinds", site("\t\tquery a b= c=d e=f?g\n\t\tquery h=[xy]\n\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].Query },
			[]QueryMatcher{
				{Key: "a", Kind: QueryPresent},
				{Key: "b", Kind: QueryEquals},
				{Key: "c", Kind: QueryEquals, Value: "d"},
				{Key: "e", Kind: QueryGlob, Value: "f?g"},
				{Key: "h", Kind: QueryGlob, Value: "[xy]"},
			}},
		{"query value with =", site("\t\tquery token=a=b\n\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].Query },
			[]QueryMatcher{{Key: "token", Kind: QueryEquals, Value: "a=b"}}},
		{"upstream schemes", site("\t\tto ws://A.internal:1 HTTP://b:2 c:3 [::1]:4 ws://[fd00::2]:5"), func(c *Config) any {
			var addrs []string
			for _, u := range c.Sites[0].Routes[0].Upstreams {
				addrs = append(addrs, u.Addr)
			}
			return addrs
		}, []string{"a.internal:1", "b:2", "c:3", "[::1]:4", "[fd00::2]:5"}},
		{"upstreams over several lines", site("\t\tto a:1\n\t\tto b:2"), func(c *Config) any { return c.Sites[0].Routes[0].Upstreams },
			[]Upstream{{Pos: Pos{File: testFile, Line: 3}, Addr: "a:1", Weight: 1}, {Pos: Pos{File: testFile, Line: 4}, Addr: "b:2", Weight: 1}}},
		{"lb_retries zero", site("\t\tlb_retries 0\n\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].LBRetries }, 0},
		{"lb_retries max", site("\t\tlb_retries 10\n\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].LBRetries }, 10},
		{"origins", site("\t\torigins * HTTPS://Example.com:8443 http://[::1]:* https://*.a.example.com\n\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].Origins },
			[]string{"*", "https://example.com:8443", "http://[::1]:*", "https://*.a.example.com"}},
		{"allow_empty_origin true", site("\t\tallow_empty_origin true\n\t\tto a:1"), func(c *Config) any { return c.Sites[0].Routes[0].AllowEmptyOrigin }, true},
		{"env placeholder", site("\t\tto {$" + testEnvBackend + "}"), func(c *Config) any { return c.Sites[0].Routes[0].Upstreams[0].Addr }, "10.9.8.7:6000"},
		{"env placeholder default", addr("{$WSPROXY_CONFIG_TEST_UNSET::7070}"), func(c *Config) any { return c.Sites[0].Addresses[0].Port }, 7070},
		{"snippet", "(up) {\n\tto a:1 b:2\n}\n:1 {\n\troute {\n\t\timport up\n\t}\n}", func(c *Config) any { return len(c.Sites[0].Routes[0].Upstreams) }, 2},
		{"snippet with args", "(r) {\n\troute {args[0]} {\n\t\tto {args[1]}\n\t}\n}\n:1 {\n\timport r /a a:1\n\timport r /b b:2\n}", func(c *Config) any {
			return c.Sites[0].Routes[1].Name + " " + c.Sites[0].Routes[1].Upstreams[0].Addr
		}, "http://:1/b b:2"},
		{"no braces single site", ":1\nroute {\n\tto a:1\n}", func(c *Config) any { return c.Sites[0].Routes[0].Upstreams[0].Addr }, "a:1"},
		{"empty global block", "{\n}\n" + addr(":1"), func(c *Config) any { return c.Global.LogLevel }, "info"},
		{"same host other port", addr("a.com:1") + addr("a.com:2"), func(c *Config) any { return len(c.Sites) }, 2},
		{"distinct names", ":1 {\n\troute /a {\n\t\tto a:1\n\t}\n\troute /a {\n\t\tname other\n\t\tto a:1\n\t}\n}", func(c *Config) any { return c.Sites[0].Routes[1].Name }, "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := mustParse(t, testFile, tt.body)
			if got := tt.check(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want []wantErr
	}{
		// global options
		{"size too small", global("max_header_bytes 512"), []wantErr{{2, `max_header_bytes: "512" is out of range; must be from 1KiB to 1MiB`}}},
		{"size too big", global("max_header_bytes 2MiB"), []wantErr{{2, "out of range"}}},
		{"size overflow", global("max_header_bytes 99999999999999999999KiB"), []wantErr{{2, "out of range"}}},
		{"size unit", global("max_header_bytes 16XB"), []wantErr{{2, "units B, KB, KiB, MB, MiB"}}},
		{"size no number", global("max_header_bytes KiB"), []wantErr{{2, "want a size"}}},
		{"size space", global("max_header_bytes 16 KiB"), []wantErr{{2, "max_header_bytes: too many arguments; usage: max_header_bytes SIZE"}}},
		{"size missing", global("max_header_bytes"), []wantErr{{2, "max_header_bytes: missing argument"}}},
		{"handshake zero", global("handshake_timeout 0s"), []wantErr{{2, `handshake_timeout "0s": must be greater than zero`}}},
		{"handshake negative", global("handshake_timeout -1s"), []wantErr{{2, "greater than zero"}}},
		{"handshake bad", global("handshake_timeout ten"), []wantErr{{2, `handshake_timeout "ten": want a duration`}}},
		{"handshake no unit", global("handshake_timeout 10"), []wantErr{{2, "want a duration"}}},
		{"log level", global("log_level trace"), []wantErr{{2, `log_level "trace": want debug, info, warn or error`}}},
		{"log level missing", global("log_level"), []wantErr{{2, "log_level: missing argument"}}},
		{"unknown global", global("\tdebug"), []wantErr{{2, `unknown global option "debug"; known: access_log, acme_ca, acme_ca_root, admin, client_ip_header, consul, `}}},
		{"global twice", global("log_level info\nlog_level warn"), []wantErr{{3, "log_level already set at test.Caddyfile:2"}}},
		{"global with block", global("log_level info {\n\tx\n}"), []wantErr{{2, "log_level does not take a block"}}},
		{"unknown global with block", global("servers {\n\tx\n}"), []wantErr{{2, `unknown global option "servers"`}}},
		{"global not first", addr(":1") + "{\n\tlog_level info\n}\n", []wantErr{{7, "the global options block { ... } must come first"}}},

		// site addresses
		{"bad scheme", addr("ws://a:1"), []wantErr{{1, `unsupported scheme "ws"; use http:// or https://`}}},
		{"address path", addr("a.com:1/chat"), []wantErr{{1, "has a path; match paths with route instead"}}},
		{"port zero", addr(":0"), []wantErr{{1, `port "0" must be a number from 1 to 65535`}}},
		{"port big", addr(":65536"), []wantErr{{1, "from 1 to 65535"}}},
		{"port word", addr("a.com:http"), []wantErr{{1, "from 1 to 65535"}}},
		{"port empty", addr("a.com:"), []wantErr{{1, "empty port"}}},
		{"ipv6 no brackets", addr("::1:8080"), []wantErr{{1, "needs brackets"}}},
		{"ipv6 unclosed", addr("[::1:8080"), []wantErr{{1, "missing ']'"}}},
		{"ipv6 junk", addr("[::1]8080"), []wantErr{{1, `unexpected "8080" after ']'`}}},
		{"ipv4 in brackets", addr("[127.0.0.1]:80"), []wantErr{{1, "is not an IPv6 address"}}},
		{"wildcard middle", addr("a.*.com:80"), []wantErr{{1, "a wildcard may only be the whole first label"}}},
		{"star host", addr("*:80"), []wantErr{{1, "wildcard may only be"}}},
		{"bad host char", addr("a!b.com:80"), []wantErr{{1, `invalid host "a!b.com"`}}},
		{"empty label", addr("a..com:80"), []wantErr{{1, "empty or overlong label"}}},
		{"duplicate address", addr(":8080") + addr("http://:8080"), []wantErr{{6, "site address http://:8080 is already used at test.Caddyfile:1"}}},
		{"duplicate host case", addr("A.com:80") + addr("http://a.COM"), []wantErr{{6, "site address http://a.com:80 is already used at test.Caddyfile:1"}}},
		{"duplicate in one site", addr(":1 :1"), []wantErr{{1, "already used at test.Caddyfile:1"}}},
		{"no routes", ":8080 {\n}\n", []wantErr{{1, "site has no routes"}}},
		{"unknown site directive", ":8080 {\n\treverse_proxy a:1\n\troute {\n\t\tto a:1\n\t}\n}", []wantErr{{2, `unknown directive "reverse_proxy" in site; known: route`}}},
		{"named route", "&(x) {\n\tto a:1\n}\n" + addr(":1"), []wantErr{{1, "named routes"}}},
		{"empty file", "", []wantErr{{0, "no site blocks"}}},
		{"only global", "{\n\tlog_level info\n}\n", []wantErr{{0, "no site blocks"}}},

		// route matchers
		{"no upstreams", ":8080 {\n\troute /a {\n\t}\n}", []wantErr{{2, `route has no upstreams; add "to HOST:PORT"`}}},
		{"no block", ":8080 {\n\troute /a\n}", []wantErr{{2, "route has no upstreams"}}},
		{"empty block", ":8080 {\n\troute /a {}\n}", []wantErr{{2, "Unexpected '{}' at end of line"}}},
		{"relative path", ":8080 {\n\troute chat/* {\n\t\tto a:1\n\t}\n}", []wantErr{{2, `path "chat/*" must start with "/"`}}},
		{"star and paths", ":8080 {\n\troute /a * {\n\t\tto a:1\n\t}\n}", []wantErr{{2, `path "*" matches every path`}}},
		{"star via path", site("\t\tpath *\n\t\tto a:1"), []wantErr{{3, `path "*" matches every path`}}},
		{"bad glob", site("\t\tpath /a/[*x\n\t\tto a:1"), []wantErr{{3, `path "/a/[*x" is not a valid pattern`}}},
		{"path missing", site("\t\tpath\n\t\tto a:1"), []wantErr{{3, "path: missing argument"}}},
		{"query no key", site("\t\tquery a=1 =v\n\t\tto a:1"), []wantErr{{3, `query: "=v" has no key`}}},
		{"query bad glob", site("\t\tquery k=[\n\t\tto a:1"), []wantErr{{3, `value "[" is not a valid pattern`}}},
		{"query missing", site("\t\tquery\n\t\tto a:1"), []wantErr{{3, "query: missing argument; usage: query KEY[=VALUE]..."}}},

		// upstreams
		{"to wss", site("\t\tto wss://a:1"), []wantErr{{2, "route has no upstreams"}, {3, "TLS to upstreams is not supported yet"}}},
		{"to https", site("\t\tto a:1 https://b:1"), []wantErr{{3, `to: upstream "https://b:1": TLS to upstreams is not supported yet`}}},
		{"to other scheme", site("\t\tto tcp://a:1 a:1"), []wantErr{{3, `unsupported scheme "tcp"`}}},
		{"to no port", site("\t\tto a:1 b"), []wantErr{{3, `upstream "b" has no port`}}},
		{"to twice", site("\t\tto a:1 b:2 ws://a:1"), []wantErr{{3, `to: upstream "ws://a:1" is already listed at test.Caddyfile:3; use weights`}}},
		{"to twice over lines", site("\t\tto a:1\n\t\tto b:2 a:1"), []wantErr{{4, `upstream "a:1" is already listed at test.Caddyfile:3`}}},
		{"to no host", site("\t\tto :9000 a:1"), []wantErr{{3, `upstream ":9000" has no host`}}},
		{"to bad port", site("\t\tto a:99999 a:1"), []wantErr{{3, "from 1 to 65535"}}},
		{"to path", site("\t\tto ws://a:1/ws a:1"), []wantErr{{3, "has a path"}}},
		{"to wildcard", site("\t\tto *.a:1 a:1"), []wantErr{{3, `unexpected '*'`}}},
		{"to missing", site("\t\tto\n\t\tto a:1"), []wantErr{{3, "to: missing argument; usage: to ADDR..."}}},
		{"to with block", site("\t\tto a:1 {\n\t\t\tx\n\t\t}"), []wantErr{{3, "to does not take a block"}}},

		// route options
		{"lb_retries big", site("\t\tlb_retries 11\n\t\tto a:1"), []wantErr{{3, `lb_retries "11": want a whole number from 0 to 10`}}},
		{"lb_retries negative", site("\t\tlb_retries -1\n\t\tto a:1"), []wantErr{{3, "from 0 to 10"}}},
		{"lb_retries word", site("\t\tlb_retries two\n\t\tto a:1"), []wantErr{{3, "from 0 to 10"}}},
		{"lb_retries missing", site("\t\tlb_retries\n\t\tto a:1"), []wantErr{{3, "lb_retries: missing argument"}}},
		{"lb_retries twice", site("\t\tlb_retries 1\n\t\tlb_retries 1\n\t\tto a:1"), []wantErr{{4, "lb_retries already set at test.Caddyfile:3"}}},
		{"dial_timeout zero", site("\t\tdial_timeout 0\n\t\tto a:1"), []wantErr{{3, `dial_timeout "0": must be greater than zero`}}},
		{"dial_timeout bad", site("\t\tdial_timeout soon\n\t\tto a:1"), []wantErr{{3, "want a duration"}}},
		{"dial_timeout extra", site("\t\tdial_timeout 1s 2s\n\t\tto a:1"), []wantErr{{3, "dial_timeout: too many arguments"}}},
		{"upstream_handshake_timeout bad", site("\t\tupstream_handshake_timeout -5s\n\t\tto a:1"), []wantErr{{3, "upstream_handshake_timeout \"-5s\": must be greater than zero"}}},
		{"origin no scheme", site("\t\torigins example.com\n\t\tto a:1"), []wantErr{{3, `origins: origin "example.com": want "*" or scheme://host[:port]`}}},
		{"origin scheme", site("\t\torigins 1ws://a.com\n\t\tto a:1"), []wantErr{{3, `want "*" or scheme://host[:port]`}}},
		{"origin path", site("\t\torigins https://a.com/\n\t\tto a:1"), []wantErr{{3, "without path"}}},
		{"origin port", site("\t\torigins https://a.com:x\n\t\tto a:1"), []wantErr{{3, "port"}}},
		{"origin no host", site("\t\torigins https://:80\n\t\tto a:1"), []wantErr{{3, "invalid host"}}},
		{"origin bad wildcard", site("\t\torigins https://a*.com\n\t\tto a:1"), []wantErr{{3, "wildcard may only be"}}},
		{"origins missing", site("\t\torigins\n\t\tto a:1"), []wantErr{{3, "origins: missing argument"}}},
		{"allow_empty_origin bad", site("\t\tallow_empty_origin yes\n\t\tto a:1"), []wantErr{{3, `allow_empty_origin "yes": want true or false`}}},
		{"name extra", site("\t\tname a b\n\t\tto a:1"), []wantErr{{3, "name: too many arguments; usage: name NAME"}}},
		{"name empty", site("\t\tname \"\"\n\t\tto a:1"), []wantErr{{3, "empty route name"}}},
		{"name twice", site("\t\tname a\n\t\tname b\n\t\tto a:1"), []wantErr{{4, "name already set at test.Caddyfile:3"}}},
		{"unknown route directive", site("\t\treverse_proxy a:1\n\t\tto a:1"), []wantErr{{3, `unknown directive "reverse_proxy" in route; known: allow_empty_origin, allow_encoded_slash, consul, dial_timeout, drain_on_removal, eject_duration, `}}},
		{"nested route", site("\t\troute /y {\n\t\t\tto a:1\n\t\t}\n\t\tto a:1"), []wantErr{{3, `unknown directive "route" in route`}}},

		// route names
		{"default names collide", ":1 {\n\troute /a {\n\t\tto a:1\n\t}\n\troute /a {\n\t\tquery v\n\t\tto a:1\n\t}\n}",
			[]wantErr{{5, `route name "http://:1/a" already used at test.Caddyfile:2; set a distinct "name"`}}},
		{"names collide across sites", addr(":1") + ":2 {\n\troute {\n\t\tname http://:1*\n\t\tto a:1\n\t}\n}",
			[]wantErr{{8, `route name "http://:1*" already used at test.Caddyfile:2; set a distinct "name"`}}},
		{"explicit names collide", ":1 {\n\troute /a {\n\t\tname x\n\t\tto a:1\n\t}\n}\n:2 {\n\troute /b {\n\t\tto a:1\n\t\tname x\n\t}\n}",
			[]wantErr{{10, `route name "x" already used at test.Caddyfile:3`}}},

		// structure and lexer errors from caddyfile
		{"unclosed block", ":8080 {\n\troute /a {\n\t\tto a:1\n\t}\n", []wantErr{{1, "'{' is never closed"}}},
		{"stray brace", addr(":1") + "}\n", []wantErr{{6, "unexpected '}' with no matching '{'"}}},
		{"brace on same line", ":8080 {\n\troute { to a:1 }\n}", []wantErr{{2, "Unexpected next token after '{' on same line"}}},
		{"missing import", ":8080 {\n\timport nope.conf\n}", []wantErr{{2, "File to import not found: nope.conf"}}},
		{"bad heredoc", ":8080 {\n\troute {\n\t\tto <<\n\t}\n}", []wantErr{{3, "missing opening heredoc marker on line #3"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(testFile, []byte(tt.body))
			checkErrors(t, testFile, err, tt.want)
		})
	}
}

// TestParseCollectsErrors checks that one run reports every problem, in
// file order.
func TestParseCollectsErrors(t *testing.T) {
	t.Parallel()
	const body = `{
	max_header_bytes 100
	log_level loud
	color on
}

https://example.com:80 {
	route /a {
		to a:1
	}
}

:8080 {
	route chat {
		lb_retries 99
		dial_timeout 0s
		origins nope
		to wss://b:1
	}
	route /ok {
		bogus
		to c:1
	}
	proxy
}

:8080 {
}
`
	_, err := Parse(testFile, []byte(body))
	checkErrors(t, testFile, err, []wantErr{
		{2, "max_header_bytes"},
		{3, "log_level"},
		{4, `unknown global option "color"`},
		{7, "port 80 is the http_port"},
		{14, `path "chat" must start with "/"`},
		{14, "route has no upstreams"},
		{15, "lb_retries"},
		{16, "dial_timeout"},
		{17, "origins"},
		{18, "TLS to upstreams is not supported yet"},
		{21, `unknown directive "bogus" in route`},
		{24, `unknown directive "proxy" in site`},
		{27, "site address http://:8080 is already used at test.Caddyfile:13"},
		{27, "site has no routes"},
	})
	if got, want := strings.Count(err.Error(), "\n"), 13; got != want {
		t.Errorf("Error() has %d newlines, want %d:\n%s", got, want, err)
	}
	if !strings.HasPrefix(err.Error(), "test.Caddyfile:2: max_header_bytes") {
		t.Errorf("Error() = %q, want it to start with file:line: message", err)
	}
}

func TestParseImport(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "import")
	main := filepath.Join(dir, "main.Caddyfile")

	t.Run("file", func(t *testing.T) {
		t.Parallel()
		cfg, err := Load(main)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		r := cfg.Sites[0].Routes[0]
		abs, _ := filepath.Abs(filepath.Join(dir, "upstreams.conf"))
		want := []Upstream{{Pos: Pos{File: abs, Line: 2}, Addr: "10.0.0.1:9000", Weight: 1}, {Pos: Pos{File: abs, Line: 2}, Addr: "10.0.0.2:9000", Weight: 1}}
		if !reflect.DeepEqual(r.Upstreams, want) {
			t.Errorf("Upstreams = %+v, want %+v", r.Upstreams, want)
		}
		if r.LBRetries != 4 {
			t.Errorf("LBRetries = %d, want 4 from the imported file", r.LBRetries)
		}
	})

	t.Run("error in imported file", func(t *testing.T) {
		t.Parallel()
		body := ":8080 {\n\troute {\n\t\timport bad.conf\n\t}\n}\n"
		_, err := Parse(main, []byte(body))
		abs, _ := filepath.Abs(filepath.Join(dir, "bad.conf"))
		checkErrors(t, abs, err, []wantErr{{2, `lb_retries "many"`}})
	})

	t.Run("error in snippet", func(t *testing.T) {
		t.Parallel()
		body := "(o) {\n\torigins ftp:/x\n}\n:8080 {\n\troute {\n\t\timport o\n\t\tto a:1\n\t}\n}\n"
		_, err := Parse(testFile, []byte(body))
		checkErrors(t, testFile, err, []wantErr{{2, `want "*" or scheme://host[:port]`}})
	})
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join("testdata", "does-not-exist.Caddyfile"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load error = %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{&Error{Pos: Pos{File: "a", Line: 3}, Msg: "bad"}, "a:3: bad"},
		{&Error{Pos: Pos{File: "a"}, Msg: "bad"}, "a: bad"},
		{&Error{Msg: "bad"}, "bad"},
		{ErrorList{{Pos: Pos{File: "a", Line: 1}, Msg: "x"}, {Pos: Pos{File: "b", Line: 2}, Msg: "y"}}, "a:1: x\nb:2: y"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	var e *Error
	if !errors.As(error(ErrorList{{Msg: "x"}}), &e) || e.Msg != "x" {
		t.Errorf("errors.As(ErrorList, *Error) failed")
	}
}

func TestFromCaddyfileError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
	}{
		{"Unexpected '}', at f.Caddyfile:7", "f.Caddyfile:7: Unexpected '}'"},
		{"syntax error: unexpected token 'x', expecting '}', at f.Caddyfile:2 import chain: ['']", "f.Caddyfile:2: syntax error: unexpected token 'x', expecting '}'"},
		{"bad, at /abs/s.conf:4 import chain ['f.Caddyfile:9 (import)']", "/abs/s.conf:4: bad (imported via f.Caddyfile:9 (import))"},
		{"incomplete heredoc <<EOF on line #12, expected ending marker EOF", "f.Caddyfile:12: incomplete heredoc <<EOF on line #12, expected ending marker EOF"},
		{"a cycle was detected", "f.Caddyfile: a cycle was detected"},
	}
	for _, tt := range tests {
		if got := fromCaddyfileError("f.Caddyfile", errors.New(tt.in)).Error(); got != tt.want {
			t.Errorf("fromCaddyfileError(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	t.Run("layout", func(t *testing.T) {
		t.Parallel()
		in := ":8080   {\nroute /chat/*  {\n        to a:1   b:2\n}\n}"
		want := ":8080 {\n\troute /chat/* {\n\t\tto a:1 b:2\n\t}\n}\n"
		if got := string(Format([]byte(in))); got != want {
			t.Errorf("Format = %q, want %q", got, want)
		}
	})
	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		const file = "testdata/valid.Caddyfile"
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		formatted := Format(body)
		if string(formatted) != string(body) {
			t.Errorf("testdata/valid.Caddyfile is not formatted; Format gives:\n%s", formatted)
		}
		if again := Format(formatted); string(again) != string(formatted) {
			t.Errorf("Format is not idempotent:\n%s", again)
		}
		messy := strings.NewReplacer("\t", "    ", " {", "   {").Replace(string(body))
		a, err := Parse(file, body)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Parse(file, Format([]byte(messy)))
		if err != nil {
			t.Fatalf("Parse(Format(messy)): %v", err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("formatted config parses differently:\n%s\n%s", dump(a), dump(b))
		}
	})
}

func TestAddressString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a    Address
		want string
	}{
		{Address{Scheme: "http", Port: 8080}, "http://:8080"},
		{Address{Scheme: "http", Host: "example.com", Port: 80}, "http://example.com:80"},
		{Address{Scheme: "http", Host: "::1", Port: 8080}, "http://[::1]:8080"},
	}
	for _, tt := range tests {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.a, got, tt.want)
		}
	}
}

// TestWriteTimeoutInheritsAndOverrides: routes take the global
// write_timeout unless they set their own; "off" is -1 either way.
func TestWriteTimeoutInheritsAndOverrides(t *testing.T) {
	cfg, err := Parse("t", []byte("{\n\twrite_timeout 5s\n}\n:1 {\n\troute /a {\n\t\tto 127.0.0.1:9\n\t}\n\troute /b {\n\t\tto 127.0.0.1:9\n\t\twrite_timeout off\n\t}\n\troute /c {\n\t\tto 127.0.0.1:9\n\t\twrite_timeout 1m\n\t}\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := []time.Duration{}
	for _, r := range cfg.Sites[0].Routes {
		got = append(got, r.WriteTimeout)
	}
	if want := []time.Duration{5 * time.Second, -1, time.Minute}; !reflect.DeepEqual(got, want) {
		t.Fatalf("write timeouts %v, want %v", got, want)
	}
	_, err = Parse("t", []byte(":1 {\n\troute /a {\n\t\tto 127.0.0.1:9\n\t\twrite_timeout soon\n\t}\n}\n"))
	if err == nil || !strings.Contains(err.Error(), "t:4: write_timeout \"soon\"") {
		t.Fatalf("bad duration: %v", err)
	}
}
