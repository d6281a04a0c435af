package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
)

// Bounds of the rate directives: a rate whose interval is under a
// microsecond limits nothing a proxy can relay, and bursts past a million
// would let a bucket's arithmetic overflow with hour-long intervals.
const (
	maxRateBurst    = 1 << 20
	minRateInterval = time.Microsecond
)

// rateState remembers where the rate directives were, for the checks that
// need the whole route.
type rateState struct {
	perKeyPos Pos
	action    string // "close" or "pause" as written, "" if not given
	actionPos Pos
}

// parseRate parses N/DURATION: 100/s, 5/100ms, 600/1m, 10/2s. A unit
// alone (s, ms, m, h) means one of it.
func parseRate(s string) (n int, per time.Duration, err error) {
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want N/DURATION such as 100/s, 5/100ms or 600/1m", s)
	}
	n, err = strconv.Atoi(num)
	if err != nil || n < 1 {
		return 0, 0, fmt.Errorf("%q: the count must be a whole number of at least 1", s)
	}
	if unit != "" && (unit[0] < '0' || unit[0] > '9') {
		unit = "1" + unit
	}
	per, err = time.ParseDuration(unit)
	if err != nil || per <= 0 {
		return 0, 0, fmt.Errorf("%q: want N/DURATION such as 100/s, 5/100ms or 600/1m", s)
	}
	if per/time.Duration(n) < minRateInterval {
		return 0, 0, fmt.Errorf("%q is over a million a second; use off for no limit", s)
	}
	return n, per, nil
}

// messageRate parses `max_message_rate[_per_key] FROM_CLIENT
// [FROM_BACKEND] [burst N [N]] [close|pause]` into dst.
func (p *parser) messageRate(r *Route, rs *rateState, d directive, dst *[2]MessageRate) {
	args := d.args
	var rates [2]MessageRate
	nRates := 0
	for len(args) > 0 && nRates < 2 && args[0].Text != "burst" && args[0].Text != "close" && args[0].Text != "pause" {
		t := args[0].Text
		args = args[1:]
		if t != "off" && t != "0" {
			n, per, err := parseRate(t)
			if err != nil {
				p.errorf(d.pos(), "%s: %v", d.name.Text, err)
				return
			}
			rates[nRates] = MessageRate{N: n, Per: per, Burst: n}
		}
		nRates++
	}
	if nRates == 0 {
		p.errorf(d.pos(), "%s: name a rate first, e.g. %s 100/s", d.name.Text, d.name.Text)
		return
	}
	if nRates == 1 {
		rates[1] = rates[0]
	}
	if len(args) > 0 && args[0].Text == "burst" {
		args = args[1:]
		var bursts []int
		for len(args) > 0 && len(bursts) < 2 && args[0].Text != "close" && args[0].Text != "pause" {
			b, err := strconv.Atoi(args[0].Text)
			if err != nil || b < 1 || b > maxRateBurst {
				p.errorf(d.pos(), "%s burst %q: want a whole number from 1 to %d", d.name.Text, args[0].Text, maxRateBurst)
				return
			}
			bursts = append(bursts, b)
			args = args[1:]
		}
		if len(bursts) == 0 {
			p.errorf(d.pos(), "%s: burst needs a number", d.name.Text)
			return
		}
		if len(bursts) == 1 {
			bursts = append(bursts, bursts[0])
		}
		for i := range rates {
			if rates[i].On() {
				rates[i].Burst = bursts[i]
			}
		}
	}
	if len(args) > 0 && (args[0].Text == "close" || args[0].Text == "pause") {
		a := args[0].Text
		args = args[1:]
		if rs.action != "" && rs.action != a {
			p.errorf(d.pos(), "%s %s: max_message_rate and max_message_rate_per_key share one action, and %s says %s", d.name.Text, a, rs.actionPos, rs.action)
			return
		}
		rs.action, rs.actionPos = a, d.pos()
		r.MessageRatePause = a == "pause"
	}
	if len(args) > 0 {
		p.errorf(d.pos(), "%s: unexpected %q; usage: %s FROM_CLIENT [FROM_BACKEND] [burst N [N]] [close|pause]", d.name.Text, args[0].Text, d.name.Text)
		return
	}
	for i := range rates {
		if rates[i].On() && rates[i].Burst > maxRateBurst {
			p.errorf(d.pos(), "%s: the burst (by default the count of the rate) is over %d; give a smaller burst", d.name.Text, maxRateBurst)
			return
		}
	}
	*dst = rates
}

// handshakeRateRoute parses the route's `handshake_rate N/DURATION [BURST]`.
func (p *parser) handshakeRateRoute(r *Route, d directive) {
	t := d.args[0].Text
	if t == "off" || t == "0" {
		if len(d.args) > 1 {
			p.errorf(d.pos(), "handshake_rate off takes no other argument")
		}
		return
	}
	n, per, err := parseRate(t)
	if err != nil {
		p.errorf(d.pos(), "handshake_rate: %v", err)
		return
	}
	rate := float64(n) / per.Seconds()
	burst := max(1, int(math.Ceil(rate)))
	if len(d.args) == 2 {
		b, err := strconv.Atoi(d.args[1].Text)
		if err != nil || b < 1 || b > maxRateBurst {
			p.errorf(d.pos(), "handshake_rate burst %q: want a whole number from 1 to %d", d.args[1].Text, maxRateBurst)
			return
		}
		burst = b
	}
	r.HandshakeRate, r.HandshakeBurst = rate, min(burst, maxRateBurst)
}

// checkRates checks the rate options that depend on the rest of the route.
func (p *parser) checkRates(r *Route, rs *rateState) {
	perKey := r.MessageRatePerKey[0].On() || r.MessageRatePerKey[1].On()
	if perKey && !balancer.Policies[r.LBPolicy].Keyed {
		p.errorf(rs.perKeyPos, "max_message_rate_per_key needs lb_policy hash: the key it shares a limit by is the hash key")
	}
}
