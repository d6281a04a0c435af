package config

import (
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/health"
)

func TestHealthDirectives(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `:8080 {
	route /a {
		to a:1 b:2
		health_uri /healthz
		health_status 204
		health_interval 5s
		health_timeout 1s
		health_passes 3
		health_fails 2
		max_fails 5
		fail_window 20s
		eject_duration 1m
		max_ejected_percent 30
	}
	route /b {
		to a:1
		health_websocket /ws
		max_fails 0
	}
}`)
	a := cfg.Sites[0].Routes[0]
	want := health.Check{Kind: health.HTTP, Path: "/healthz", Status: 204, Interval: 5 * time.Second, Timeout: time.Second, Rise: 3, Fall: 2}
	if a.HealthCheck == nil || *a.HealthCheck != want || a.HealthCheckPos != (Pos{testFile, 4}) {
		t.Fatalf("check %+v at %v", a.HealthCheck, a.HealthCheckPos)
	}
	if a.Passive != (health.Passive{MaxFails: 5, FailWindow: 20 * time.Second, EjectFor: time.Minute, MaxEjectedPercent: 30}) {
		t.Fatalf("passive %+v", a.Passive)
	}
	b := cfg.Sites[0].Routes[1]
	if b.HealthCheck.Kind != health.WebSocket || b.HealthCheck.Path != "/ws" || b.HealthCheck.Interval != 10*time.Second || b.Passive.MaxFails != 0 {
		t.Fatalf("route b %+v %+v", b.HealthCheck, b.Passive)
	}
	if d := mustParse(t, testFile, ":1 {\n route {\n  to a:1\n }\n}").Sites[0].Routes[0]; d.HealthCheck != nil || d.Passive != defaultPassive() {
		t.Fatalf("defaults %+v %+v", d.HealthCheck, d.Passive)
	}
}

func TestHealthErrors(t *testing.T) {
	t.Parallel()
	route := func(lines string) string { return ":1 {\n route {\n  to a:1\n" + lines + " }\n}" }
	cases := []struct {
		name, body string
		want       []wantErr
	}{
		{"both kinds", route("  health_uri /h\n  health_websocket /w\n"), []wantErr{{5, "one active check"}}},
		{"relative path", route("  health_uri healthz\n"), []wantErr{{4, "does not start with '/'"}}},
		{"status", route("  health_uri /h\n  health_status ok\n"), []wantErr{{5, "HTTP status code"}}},
		{"passes", route("  health_uri /h\n  health_passes 0\n"), []wantErr{{5, "at least 1"}}},
		{"percent", route("  max_ejected_percent 150\n"), []wantErr{{4, "1 to 100"}}},
		{"percent 0", route("  max_ejected_percent 0\n"), []wantErr{{4, "max_fails 0"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(testFile, []byte(c.body))
			checkErrors(t, testFile, err, c.want)
		})
	}
}
