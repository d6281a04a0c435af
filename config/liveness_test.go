package config

import (
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

func TestLivenessAndLimitDirectives(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `{
	max_connections 9000
	max_connections_per_ip 100
	handshake_rate_per_ip 5 20
}
:8080 {
	route /a {
		to a:1
		ping_client 20s 5s
		ping_backend 1m
		tcp_keepalive 15s 5s 4
		tcp_user_timeout 20s
		idle_timeout 10m
		max_lifetime 24h
		max_frame_size 1MiB 4MiB
		max_message_size 8MiB
		max_connections 500
	}
	route /b {
		to a:1
		ping_client off
		tcp_keepalive off
		tcp_user_timeout off
	}
}`)
	g := cfg.Global
	if g.MaxConnections != 9000 || g.MaxConnectionsPerIP != 100 || g.HandshakeRatePerIP != 5 || g.HandshakeBurstPerIP != 20 {
		t.Fatalf("global %+v", g)
	}
	a := cfg.Sites[0].Routes[0]
	if a.ClientPing != (Ping{20 * time.Second, 5 * time.Second}) || a.BackendPing != (Ping{time.Minute, time.Minute}) {
		t.Fatalf("pings %+v %+v", a.ClientPing, a.BackendPing)
	}
	if a.TCP != (keepalive.TCP{Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 4, UserTimeout: 20 * time.Second}) {
		t.Fatalf("tcp %+v", a.TCP)
	}
	if a.IdleTimeout != 10*time.Minute || a.MaxLifetime != 24*time.Hour || a.MaxConnections != 500 {
		t.Fatalf("timeouts %+v", a)
	}
	if a.MaxFrame != [2]int64{1 << 20, 4 << 20} || a.MaxMessage != [2]int64{8 << 20, 8 << 20} {
		t.Fatalf("sizes %v %v", a.MaxFrame, a.MaxMessage)
	}
	b := cfg.Sites[0].Routes[1]
	if b.ClientPing != (Ping{}) || b.TCP.Idle >= 0 || b.TCP.UserTimeout != -1 {
		t.Fatalf("offs %+v", b)
	}
	if g := mustParse(t, testFile, ":1 {\n route {\n  to a:1\n }\n}").Global; g.HandshakeRatePerIP != 0 || g.MaxConnections != 0 {
		t.Fatalf("defaults %+v", g)
	}
}

func TestLivenessAndLimitErrors(t *testing.T) {
	t.Parallel()
	route := func(line string) string { return ":1 {\n route {\n  to a:1\n  " + line + "\n }\n}" }
	cases := []struct {
		name, body string
		want       []wantErr
	}{
		{"ping duration", route("ping_client soon"), []wantErr{{4, `ping_client "soon"`}}},
		{"ping off extra", route("ping_backend off 5s"), []wantErr{{4, "takes no other argument"}}},
		{"keepalive args", route("tcp_keepalive 30s 10s"), []wantErr{{4, "usage: tcp_keepalive IDLE INTERVAL COUNT"}}},
		{"keepalive idle", route("tcp_keepalive 10ms 10s 3"), []wantErr{{4, "at least 1s"}}},
		{"keepalive count", route("tcp_keepalive 30s 10s 0"), []wantErr{{4, "1 to 127"}}},
		{"frame size", route("max_frame_size huge"), []wantErr{{4, "max_frame_size"}}},
		{"route conns", route("max_connections -1"), []wantErr{{4, "want a whole number"}}},
		{"idle", route("idle_timeout 0s"), []wantErr{{4, "idle_timeout"}}},
		{"rate", "{\n handshake_rate_per_ip fast\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "handshakes per second"}}},
		{"burst", "{\n handshake_rate_per_ip 5 0\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "at least 1"}}},
		{"rate NaN", "{\n handshake_rate_per_ip NaN\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "handshakes per second"}}},
		{"rate Inf", "{\n handshake_rate_per_ip +Inf\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "handshakes per second"}}},
		{"access log sample NaN", "{\n access_log stdout NaN\n}\n:1 {\n route {\n  to a:1\n }\n}", []wantErr{{2, "share from 0 to 1"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(testFile, []byte(c.body))
			checkErrors(t, testFile, err, c.want)
		})
	}
}
