package config

import (
	"reflect"
	"testing"
	"time"
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
	want := &Consul{Pos: Pos{testFile, 2}, Address: "127.0.0.1:8501", Scheme: "https", Token: "secret", Datacenter: "dc1",
		TLSCAFile: "/etc/consul/ca.pem", TLSServerName: "consul.internal", Register: "wsproxy", RegisterTags: []string{"edge", "eu"}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("consul:\n%+v\nwant\n%+v", c, want)
	}
	r := cfg.Sites[0].Routes[0]
	ws := &ConsulService{Pos: Pos{testFile, 14}, Service: "chat", Tags: []string{"v2", "primary"},
		ServiceMeta: map[string]string{"tier": "gold"}, NodeMeta: map[string]string{"rack": "a"},
		Datacenter: "dc2", AllowWarning: true, WeightMeta: "weight", KeepStaleOnEmpty: true}
	if !reflect.DeepEqual(r.Consul, ws) || r.DrainWindow != 30*time.Second || len(r.Upstreams) != 0 {
		t.Fatalf("route consul:\n%+v\nwant\n%+v", r.Consul, ws)
	}
	if f := cfg.Sites[0].Routes[1].Consul; f == nil || f.Service != "feed" || f.Tags != nil {
		t.Fatalf("plain consul: %+v", f)
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
