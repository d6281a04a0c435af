package health

import (
	"strings"
	"testing"
	"time"
)

func TestCheckValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		c    Check
		want string // substring of the error; "" for valid
	}{
		{"zero", Check{}, ""},
		{"full", Check{Kind: WebSocket, Path: "/ws?x=1", Status: 204, Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1, Host: "a.example:80"}, ""},
		{"kind", Check{Kind: 7}, "unknown kind"},
		{"relative path", Check{Path: "healthz"}, "does not start"},
		{"path with space", Check{Path: "/a b"}, "control"},
		{"path with CRLF", Check{Path: "/a\r\nX: y"}, "control"},
		{"status low", Check{Status: 99}, "status"},
		{"status high", Check{Status: 600}, "status"},
		{"interval", Check{Interval: -1}, "interval"},
		{"timeout", Check{Timeout: -1}, "timeout"},
		{"rise", Check{Rise: -1}, "rise"},
		{"fall", Check{Fall: -2}, "fall"},
		{"host", Check{Host: "a\nb"}, "host"},
	} {
		err := tc.c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckDefaults(t *testing.T) {
	t.Parallel()
	got := Check{}.WithDefaults()
	want := Check{Kind: HTTP, Path: "/", Interval: 10 * time.Second, Timeout: 2 * time.Second, Rise: 2, Fall: 3}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	c := Check{Path: "/x", Interval: time.Second, Timeout: time.Millisecond, Rise: 5, Fall: 1, Host: "h"}
	if c.WithDefaults() != c {
		t.Errorf("WithDefaults changed set fields: %+v", c.WithDefaults())
	}
}

func TestStatusOK(t *testing.T) {
	t.Parallel()
	any2xx := Check{}
	for code, want := range map[int]bool{200: true, 204: true, 299: true, 199: false, 300: false, 503: false} {
		if got := any2xx.statusOK(code); got != want {
			t.Errorf("Status 0, code %d: got %v", code, got)
		}
	}
	exact := Check{Status: 418}
	if !exact.statusOK(418) || exact.statusOK(200) {
		t.Error("Status 418 should accept 418 only")
	}
}

func TestParseKind(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]Kind{"http": HTTP, "HTTP": HTTP, "websocket": WebSocket, "WS": WebSocket} {
		if k, err := ParseKind(s); err != nil || k != want {
			t.Errorf("ParseKind(%q) = %v, %v", s, k, err)
		}
		if k, _ := ParseKind(s); !strings.EqualFold(k.String(), s) && s != "WS" {
			t.Errorf("%v.String() = %q", k, k.String())
		}
	}
	if _, err := ParseKind("tcp"); err == nil {
		t.Error("ParseKind(tcp) succeeded")
	}
}

func TestPassiveValidateAndDefaults(t *testing.T) {
	t.Parallel()
	if err := (Passive{}).Validate(); err != nil {
		t.Error(err)
	}
	for _, p := range []Passive{{MaxFails: -1}, {FailWindow: -1}, {EjectFor: -1}, {MaxEjectedPercent: -1}, {MaxEjectedPercent: 101}} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: no error", p)
		}
	}
	want := Passive{MaxFails: 3, FailWindow: 10 * time.Second, EjectFor: 30 * time.Second, MaxEjectedPercent: 50}
	if got := (Passive{}).WithDefaults(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	const d = time.Second
	seen := map[bool]int{}
	for range 1000 {
		j := jitter(d)
		if j < d-d/10 || j > d+d/10 {
			t.Fatalf("jitter(%v) = %v, more than 10%% off", d, j)
		}
		seen[j < d]++
	}
	if seen[true] == 0 || seen[false] == 0 {
		t.Errorf("jitter goes one way only: %v", seen)
	}
	if jitter(5) != 5 {
		t.Error("jitter of a tiny interval should be the interval")
	}
}
