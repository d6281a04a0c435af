package config

import (
	"strconv"
	"strings"
	"time"
)

// HealthCheck is a route's active check of its static backends.
type HealthCheck struct {
	Pos Pos
	// WebSocket probes with a WebSocket handshake on Path; otherwise an
	// HTTP GET of Path must answer Status (any 2xx if 0). Directives:
	// health_uri PATH or health_websocket PATH, health_status CODE.
	WebSocket bool
	Path      string
	Status    int
	// Interval between probes (health_interval, default 10s), Timeout of
	// one probe (health_timeout, default 2s), and the consecutive
	// successes and failures that flip a backend (health_passes, default
	// 2; health_fails, default 3).
	Interval, Timeout time.Duration
	Passes, Fails     int
}

// PassiveHealth ejects a backend whose dials or handshakes fail: MaxFails
// failures within FailWindow eject it for EjectFor (doubling on repeats),
// but never so many that fewer than MaxEjectedPercent of the route's
// backends stay usable, and never the last one. Directives: max_fails N
// (0 turns it off; default 3), fail_window DURATION (10s), eject_duration
// DURATION (30s), max_ejected_percent N (50).
type PassiveHealth struct {
	MaxFails          int
	FailWindow        time.Duration
	EjectFor          time.Duration
	MaxEjectedPercent int
}

func defaultPassive() PassiveHealth {
	return PassiveHealth{MaxFails: 3, FailWindow: 10 * time.Second, EjectFor: 30 * time.Second, MaxEjectedPercent: 50}
}

// healthDirective applies one health directive of a route; it reports
// false if name is not one.
func (p *parser) healthDirective(r *Route, seen map[string]Pos, d directive) bool {
	hc := func() *HealthCheck {
		if r.HealthCheck == nil {
			r.HealthCheck = &HealthCheck{Pos: d.pos(), Interval: 10 * time.Second, Timeout: 2 * time.Second, Passes: 2, Fails: 3}
		}
		return r.HealthCheck
	}
	positive := func(dst *int) {
		n, err := strconv.Atoi(d.args[0].Text)
		if err != nil || n < 1 {
			p.errorf(d.pos(), "%s %q: want a whole number of at least 1", d.name.Text, d.args[0].Text)
			return
		}
		*dst = n
	}
	switch d.name.Text {
	case "health_uri", "health_websocket":
		if p.once(seen, d) && p.argCount(d, d.name.Text+" PATH", 1, 1) {
			if _, other := seen[map[string]string{"health_uri": "health_websocket", "health_websocket": "health_uri"}[d.name.Text]]; other {
				p.errorf(d.pos(), "a route has one active check: health_uri or health_websocket")
			}
			if !strings.HasPrefix(d.args[0].Text, "/") {
				p.errorf(d.pos(), "%s %q: the path must start with /", d.name.Text, d.args[0].Text)
			}
			h := hc()
			h.Path, h.WebSocket = d.args[0].Text, d.name.Text == "health_websocket"
		}
	case "health_status":
		if p.once(seen, d) && p.argCount(d, "health_status CODE", 1, 1) {
			n, err := strconv.Atoi(d.args[0].Text)
			if err != nil || n < 100 || n > 599 {
				p.errorf(d.pos(), "health_status %q: want an HTTP status code", d.args[0].Text)
			} else {
				hc().Status = n
			}
		}
	case "health_interval", "health_timeout":
		if p.once(seen, d) && p.argCount(d, d.name.Text+" DURATION", 1, 1) {
			if d.name.Text == "health_interval" {
				p.duration(d, &hc().Interval)
			} else {
				p.duration(d, &hc().Timeout)
			}
		}
	case "health_passes", "health_fails":
		if p.once(seen, d) && p.argCount(d, d.name.Text+" N", 1, 1) {
			if d.name.Text == "health_passes" {
				positive(&hc().Passes)
			} else {
				positive(&hc().Fails)
			}
		}
	case "max_fails":
		if p.once(seen, d) && p.argCount(d, "max_fails N", 1, 1) {
			p.count(d, &r.Passive.MaxFails)
		}
	case "fail_window", "eject_duration":
		if p.once(seen, d) && p.argCount(d, d.name.Text+" DURATION", 1, 1) {
			if d.name.Text == "fail_window" {
				p.duration(d, &r.Passive.FailWindow)
			} else {
				p.duration(d, &r.Passive.EjectFor)
			}
		}
	case "max_ejected_percent":
		if p.once(seen, d) && p.argCount(d, "max_ejected_percent N", 1, 1) {
			n, err := strconv.Atoi(d.args[0].Text)
			if err != nil || n < 0 || n > 100 {
				p.errorf(d.pos(), "max_ejected_percent %q: want 0 to 100", d.args[0].Text)
			} else {
				r.Passive.MaxEjectedPercent = n
			}
		}
	default:
		return false
	}
	return true
}
