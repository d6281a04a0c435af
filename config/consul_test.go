package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/discovery"
)

func TestConsulDirectives(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `{
	consul {
		address 127.0.0.1:8501
		scheme https
		token secret
		datacenter dc1
		tls_ca_file /etc/consul/ca.pem
		tls_server_name consul.internal
		register wsproxy edge eu
	}
	admin 127.0.0.1:2019
}
:8080 {
	route /chat {
		consul chat {
			tags v2 primary
			service_meta tier=gold
			node_meta rack=a
			datacenter dc2
			allow_warning
			weight_meta weight
			keep_stale_on_empty
		}
		drain_on_removal 30s
		lb_policy hash query:room
	}
	route /feed {
		consul feed
	}
}`)
	c := cfg.Global.Consul
	want := &Consul{Pos: Pos{testFile, 2}, Client: discovery.ConsulConfig{Address: "127.0.0.1:8501", Scheme: "https", Token: "secret", Datacenter: "dc1",
		TLS: discovery.TLSConfig{CAFile: "/etc/consul/ca.pem", ServerName: "consul.internal"}}, Register: "wsproxy", RegisterTags: []string{"edge", "eu"},
		RegisterPos: Pos{testFile, 9}, CheckInterval: 10 * time.Second, CheckTimeout: 5 * time.Second, DeregisterAfter: time.Minute}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("consul:\n%+v\nwant\n%+v", c, want)
	}
	r := cfg.Sites[0].Routes[0]
	ws := &discovery.Query{Service: "chat", Tags: []string{"v2", "primary"},
		ServiceMeta: map[string]string{"tier": "gold"}, NodeMeta: map[string]string{"rack": "a"},
		Datacenter: "dc2", AllowWarning: true, WeightMetaKey: "weight", KeepStaleOnEmpty: true}
	if !reflect.DeepEqual(r.Consul, ws) || r.ConsulPos != (Pos{testFile, 15}) || r.DrainWindow != 30*time.Second || len(r.Upstreams) != 0 {
		t.Fatalf("route consul:\n%+v\nwant\n%+v", r.Consul, ws)
	}
	if f := cfg.Sites[0].Routes[1].Consul; f == nil || f.Service != "feed" || f.Tags != nil {
		t.Fatalf("plain consul: %+v", f)
	}
}

func TestConsulRegisterBlock(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `{
	consul {
		register wsproxy edge {
			address 10.0.0.5
			check_url http://127.0.0.1:9901/ready
			check_interval 2s
			check_timeout 1s
			deregister_after 90s
		}
	}
}
:8080 {
	route /chat {
		to 127.0.0.1:9000
	}
}`)
	c := cfg.Global.Consul
	if c.Register != "wsproxy" || !reflect.DeepEqual(c.RegisterTags, []string{"edge"}) || c.RegisterAddress != "10.0.0.5" ||
		c.CheckURL != "http://127.0.0.1:9901/ready" || c.CheckInterval != 2*time.Second || c.CheckTimeout != time.Second ||
		c.DeregisterAfter != 90*time.Second || c.RegisterPos != (Pos{testFile, 3}) {
		t.Fatalf("register block: %+v", c)
	}
}

func TestConsulErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body string
		want       []wantErr
	}{
		{"both", ":1 {\n route {\n  to a:1\n  consul svc\n }\n}", []wantErr{{4, "not both"}}},
		{"drain static", ":1 {\n route {\n  to a:1\n  drain_on_removal 5s\n }\n}", []wantErr{{2, "drain_on_removal applies"}}},
		{"no service", ":1 {\n route {\n  consul\n }\n}", []wantErr{{2, "route has no upstreams"}, {3, "missing argument"}}},
		{"bad meta", ":1 {\n route {\n  consul svc {\n   service_meta tier\n  }\n }\n}", []wantErr{{4, "want KEY=VALUE"}}},
		{"unknown route option", ":1 {\n route {\n  consul svc {\n   colour blue\n  }\n }\n}", []wantErr{{4, `unknown option "colour" in consul`}}},
		{"unknown global option", "{\n consul {\n  port 1\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{3, `unknown option "port" in consul`}}},
		{"scheme", "{\n consul {\n  scheme ftp\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{3, "want http or https"}}},
		{"register without a check", "{\n consul {\n  register wsproxy\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{3, "register wsproxy: Consul needs a health check of the proxy: set the admin listener"}}},
		{"register options", "{\n admin 127.0.0.1:2019\n consul {\n  register wsproxy {\n   deregister_after 30s\n   check_url ftp://x/\n   check_interval soon\n   colour blue\n  }\n }\n}\n:1 {\n route {\n  to a:1\n }\n}",
			[]wantErr{{5, "deregister_after 30s: Consul's minimum is 1m0s"}, {6, `check_url "ftp://x/": want an http:// or https:// URL`}, {7, `check_interval "soon"`}, {8, `unknown option "colour" in register`}}},
		{"cert without key", "{\n consul {\n  tls_cert_file c.pem\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "go together"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(testFile, []byte(c.body))
			checkErrors(t, testFile, err, c.want)
		})
	}
}

// TestConsulOptionErrors: the consul and register blocks' options come
// from tables: arguments are counted against each option's usage, an
// option given twice is refused, and the repeatable ones add up.
func TestConsulOptionErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, conf string
		want       []wantErr
	}{
		{"missing argument", "{\n consul {\n  token\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{3, "token: missing argument; usage: token TOKEN"}}},
		{"twice", "{\n consul {\n  datacenter a\n  datacenter b\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{4, "datacenter"}}},
		{"flag with argument", ":1 {\n route {\n  consul svc {\n   allow_warning yes\n  }\n }\n}", []wantErr{{4, "allow_warning: too many arguments"}}},
		{"block on a plain option", "{\n consul {\n  scheme https {\n   x\n  }\n }\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{3, "scheme does not take a block"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(testFile, []byte(tc.conf))
			checkErrors(t, testFile, err, tc.want)
		})
	}
	cfg := mustParse(t, testFile, ":1 {\n route {\n  consul svc {\n   tags a b\n   tags c\n   service_meta x=1\n   service_meta y=2\n  }\n }\n}")
	q := cfg.Sites[0].Routes[0].Consul
	if strings.Join(q.Tags, ",") != "a,b,c" || len(q.ServiceMeta) != 2 {
		t.Fatalf("repeated options: tags %v, service_meta %v", q.Tags, q.ServiceMeta)
	}
}
