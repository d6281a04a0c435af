package config

import (
	"strconv"
	"time"

	"github.com/wsproxy/wsproxy/health"
)

// A route's active check of its static backends is a health.Check
// (Route.HealthCheck, at Route.HealthCheckPos): health_uri PATH (HTTP) or
// health_websocket PATH, health_status CODE (any 2xx if not given),
// health_interval (default 10s), health_timeout (2s), health_passes (2)
// and health_fails (3). Passive health is a health.Passive
// (Route.Passive): max_fails N (0 turns it off; default 3), fail_window
// (10s), eject_duration (30s), max_ejected_percent (50). The rules are
// health's (health.CheckPath, health.CheckStatus), checked here once,
// at the directive.

func defaultPassive() health.Passive {
	return health.Passive{MaxFails: health.DefaultMaxFails, FailWindow: health.DefaultFailWindow,
		EjectFor: health.DefaultEjectFor, MaxEjectedPercent: health.DefaultMaxEjectedPercent}
}

// check returns the route's active check, made with its defaults at d's
// place if the route has none yet.
func check(r *Route, d directive) *health.Check {
	if r.HealthCheck == nil {
		r.HealthCheck = &health.Check{Interval: 10 * time.Second, Timeout: 2 * time.Second, Rise: 2, Fall: 3}
		r.HealthCheckPos = d.pos()
	}
	return r.HealthCheck
}

// healthPath parses health_uri PATH and health_websocket PATH.
func healthPath(p *parser, r *Route, _ *routeState, d directive) {
	if r.HealthCheck != nil && r.HealthCheck.Path != "" {
		p.errorf(d.pos(), "a route has one active check: health_uri or health_websocket")
		return
	}
	if err := health.CheckPath(d.args[0].Text); err != nil {
		p.errorf(d.pos(), "%s: %v", d.name.Text, err)
		return
	}
	c := check(r, d)
	c.Path, c.Kind = d.args[0].Text, health.HTTP
	if d.name.Text == "health_websocket" {
		c.Kind = health.WebSocket
	}
}

func healthStatus(p *parser, r *Route, _ *routeState, d directive) {
	n, err := strconv.Atoi(d.args[0].Text)
	if err == nil {
		err = health.CheckStatus(n)
	}
	if err != nil {
		p.errorf(d.pos(), "health_status %q: want an HTTP status code", d.args[0].Text)
		return
	}
	check(r, d).Status = n
}

func healthDuration(p *parser, r *Route, _ *routeState, d directive) {
	c := check(r, d)
	if d.name.Text == "health_interval" {
		p.duration(d, &c.Interval)
	} else {
		p.duration(d, &c.Timeout)
	}
}

func healthCount(p *parser, r *Route, _ *routeState, d directive) {
	n, err := strconv.Atoi(d.args[0].Text)
	if err != nil || n < 1 {
		p.errorf(d.pos(), "%s %q: want a whole number of at least 1", d.name.Text, d.args[0].Text)
		return
	}
	if d.name.Text == "health_passes" {
		check(r, d).Rise = n
	} else {
		check(r, d).Fall = n
	}
}

func passiveCount(p *parser, r *Route, _ *routeState, d directive) {
	if d.name.Text == "max_fails" {
		p.count(d, &r.Passive.MaxFails)
		return
	}
	n, err := strconv.Atoi(d.args[0].Text)
	if err != nil || n < 1 || n > 100 {
		// 0 would mean never eject: that is max_fails 0, and health
		// (whose zero value means its default) could not tell it apart.
		p.errorf(d.pos(), "max_ejected_percent %q: want 1 to 100 (to never eject, turn passive health off with max_fails 0)", d.args[0].Text)
		return
	}
	r.Passive.MaxEjectedPercent = n
}

func passiveDuration(p *parser, r *Route, _ *routeState, d directive) {
	if d.name.Text == "fail_window" {
		p.duration(d, &r.Passive.FailWindow)
	} else {
		p.duration(d, &r.Passive.EjectFor)
	}
}
