package health

import (
	"errors"
	"fmt"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
)

// Defaults and limits for Passive.
const (
	DefaultMaxFails          = 3
	DefaultFailWindow        = 10 * time.Second
	DefaultEjectFor          = 30 * time.Second
	DefaultMaxEjectedPercent = 50
	// MaxEjectFor caps the doubling of ejections: 5m (or EjectFor, if
	// longer).
	MaxEjectFor = 5 * time.Minute
	// ejectResetFactor times EjectFor is the time a backend must stay in
	// after an ejection for the doubling to start over.
	ejectResetFactor = 10
)

// Passive configures passive health: ejecting a backend for a while after
// failed dials or handshakes. The zero value is valid and means the
// defaults.
type Passive struct {
	// MaxFails is the number of failures within FailWindow, with no
	// success in between, that eject the backend. Default 3.
	MaxFails int
	// FailWindow is how long a failure counts. Default 10s.
	FailWindow time.Duration
	// EjectFor is how long the first ejection lasts. Each ejection that
	// follows within 10×EjectFor of the end of the previous one lasts twice
	// as long as that one, up to MaxEjectFor (5m); once the backend has
	// stayed in for 10×EjectFor (5m by default), the next ejection lasts
	// EjectFor again.
	// Default 30s.
	EjectFor time.Duration
	// MaxEjectedPercent is the largest share, in percent, of a route's
	// backends that may be unusable (ejected, or down by an active check)
	// once an ejection is made: an ejection that would leave fewer than
	// 100−MaxEjectedPercent percent of them usable (rounded up) is refused,
	// and so is one that would leave none, whatever the percentage. Between
	// 1 and 100; default 50.
	MaxEjectedPercent int
}

// Validate reports what is wrong with p, if anything. Zero fields are
// valid (they take their defaults).
func (p Passive) Validate() error {
	var errs []error
	if p.MaxFails < 0 {
		errs = append(errs, fmt.Errorf("negative max fails %d", p.MaxFails))
	}
	if p.FailWindow < 0 {
		errs = append(errs, fmt.Errorf("negative fail window %v", p.FailWindow))
	}
	if p.EjectFor < 0 {
		errs = append(errs, fmt.Errorf("negative ejection time %v", p.EjectFor))
	}
	if p.MaxEjectedPercent < 0 || p.MaxEjectedPercent > 100 {
		errs = append(errs, fmt.Errorf("max ejected percent %d is not between 0 and 100", p.MaxEjectedPercent))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: invalid passive health: %w", err)
	}
	return nil
}

// WithDefaults returns p with its zero fields set to their defaults.
// Fields that Validate refuses are replaced by their defaults too.
func (p Passive) WithDefaults() Passive {
	if p.MaxFails <= 0 {
		p.MaxFails = DefaultMaxFails
	}
	if p.FailWindow <= 0 {
		p.FailWindow = DefaultFailWindow
	}
	if p.EjectFor <= 0 {
		p.EjectFor = DefaultEjectFor
	}
	if p.MaxEjectedPercent <= 0 || p.MaxEjectedPercent > 100 {
		p.MaxEjectedPercent = DefaultMaxEjectedPercent
	}
	return p
}

// ReportFailure records that a dial of b or a WebSocket handshake with it
// failed: the errors for which upgrade.Retryable reports true (not a
// backend's HTTP answer, nor a cancelled request). The proxy calls it after
// each such attempt. When p.MaxFails failures fall within p.FailWindow,
// with no ReportSuccess in between, b is ejected (marked unhealthy) for
// p.EjectFor, doubled for repeated ejections, unless that would leave too
// few of set usable (see Passive.MaxEjectedPercent). set holds the route's
// backends; b counts as one of them whether or not it is in set, so a nil
// set means b is alone and is never ejected. Failures reported while b is
// ejected are ignored (they are connections started before).
//
// When the ejection ends, a timer (one per ejected backend, no goroutine
// while it waits) returns b: healthy again unless an active check says it
// is down. Active checks and ejection are kept apart: a passing check does
// not end an ejection early, and an ejection's end does not override a
// failing check.
//
// ReportFailure takes a lock and may allocate.
func (c *Checker) ReportFailure(b *balancer.Backend, set []*balancer.Backend, p Passive) {
	p = p.WithDefaults()
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	st := c.stateLocked(b, now)
	if st.ejected {
		return
	}
	st.failWindow = p.FailWindow
	cut := now.Add(-p.FailWindow)
	ft := st.failTimes
	i := 0
	for i < len(ft) && !ft[i].After(cut) {
		i++
	}
	if n := len(ft) - i + 1; n > p.MaxFails {
		i += n - p.MaxFails // keep at most MaxFails
	}
	ft = append(ft[:0], ft[i:]...)
	ft = append(ft, now)
	st.failTimes = ft
	st.fails.Store(int32(len(ft)))
	if len(ft) < p.MaxFails {
		return
	}
	if !mayEject(b, set, p.MaxEjectedPercent) {
		c.log.Debug("backend not ejected: too few backends would be left", "backend", b.Addr,
			"failures", len(ft), "max_ejected_percent", p.MaxEjectedPercent)
		return
	}
	c.ejectLocked(st, p, now)
}

// mayEject reports whether ejecting b leaves enough of set usable.
func mayEject(b *balancer.Backend, set []*balancer.Backend, maxEjectedPercent int) bool {
	if !b.Healthy() {
		return true // no change in what is usable
	}
	total, usable, found := 0, 0, false
	for _, x := range set {
		total++
		if x.Healthy() {
			usable++
		}
		found = found || x.Same(b)
	}
	if !found {
		total++
		usable++
	}
	left := usable - 1
	minUsable := (total*(100-maxEjectedPercent) + 99) / 100
	return left >= 1 && left >= minUsable
}

// ejectLocked ejects st's backend.
func (c *Checker) ejectLocked(st *addrState, p Passive, now time.Time) {
	if st.level > 0 && now.Sub(st.returnedAt) >= st.resetAfter {
		st.level = 0
	}
	limit := max(MaxEjectFor, p.EjectFor)
	d := p.EjectFor
	for i := 0; i < st.level && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	if d < limit {
		st.level++
	}
	st.resetAfter = ejectResetFactor * p.EjectFor
	fails := len(st.failTimes)
	st.failTimes = st.failTimes[:0]
	st.fails.Store(0)
	st.ejected = true
	st.until = now.Add(d)
	st.ejections++
	c.wg.Add(1)
	st.timer = time.AfterFunc(d, func() { c.expire(st) })
	c.applyLocked(st)
	c.log.Warn("backend ejected", "backend", st.addr, "failures", fails, "for", d, "active_down", st.activeDown)
}

// expire ends st's ejection; it is st.timer's function.
func (c *Checker) expire(st *addrState) {
	defer c.wg.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || st.timer == nil {
		return
	}
	st.timer = nil
	st.ejected = false
	st.returnedAt = time.Now()
	c.applyLocked(st)
	c.log.Info("backend returned after ejection", "backend", st.addr, "healthy", st.usable())
}

// ReportSuccess records that a dial of b and the WebSocket handshake with
// it succeeded, which clears b's recent failures. The proxy calls it after
// each successful attempt (every connection): it does not allocate, and it
// takes a lock only when b has failures to clear.
func (c *Checker) ReportSuccess(b *balancer.Backend) {
	st := (*c.states.Load())[b.Addr]
	if st == nil || st.fails.Load() == 0 {
		return
	}
	c.mu.Lock()
	st.failTimes = st.failTimes[:0]
	st.fails.Store(0)
	c.mu.Unlock()
}
