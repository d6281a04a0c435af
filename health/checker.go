package health

import (
	"cmp"
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
)

// Checker runs the active health checks of backends and keeps their passive
// health (ejections after failed dials and handshakes), and sets each
// backend's balancer health from both: a backend is healthy (usable) only
// when no active check says it is down and it is not ejected.
//
// Give each proxy process one Checker, shared by every route and carried
// over reloads like the balancer.Registry, so that a reload that keeps a
// check keeps its probe, its counters and its verdict.
//
// The Checker is the only writer of the health of the backends it is given:
// health set by anyone else is overwritten at its next transition. Per
// address, it drives the live state of the most recent *balancer.Backend it
// was given for that address (Backends from one Registry share it).
//
// An empty Checker is not valid: use NewChecker. All methods are safe for
// concurrent use.
type Checker struct {
	log    *slog.Logger
	ctx    context.Context // ends at Close; parent of every probe
	cancel context.CancelFunc

	// states maps addresses to their state. It is replaced, never changed
	// in place (copy on write under mu), so ReportSuccess reads it without
	// a lock.
	states atomic.Pointer[map[string]*addrState]

	mu      sync.Mutex
	probers map[probeKey]*prober
	closed  bool

	// wg counts the probe goroutines and the armed ejection timers.
	wg sync.WaitGroup
	// running counts live probe goroutines (a test hook).
	running atomic.Int32
}

// probeKey identifies one probe: what Watch shares between its callers.
type probeKey struct {
	addr  string
	check Check // with defaults
}

// prober is one active check of one address, with its own goroutine.
// Its fields other than key, st, req, cancel and done are guarded by
// Checker.mu.
type prober struct {
	key    probeKey
	st     *addrState
	req    []byte // HTTP checks: the request sent
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine returns

	refs    int  // Watch calls not yet stopped
	removed bool // stopped: results are dropped

	down                bool
	successes, failures int // consecutive
	probes              uint64
	lastCheck           time.Time
	lastErr             string
	lastDuration        time.Duration
}

// addrState is what the Checker knows about one address. Fields are
// guarded by Checker.mu, except fails (also read by ReportSuccess).
type addrState struct {
	addr string
	b    *balancer.Backend // the most recent Backend given for addr

	// Active.
	probers    []*prober
	activeDown bool // some prober says down

	// Passive.
	fails      atomic.Int32 // len(failTimes)
	failTimes  []time.Time  // recent failures, oldest first, at most MaxFails
	failWindow time.Duration
	ejected    bool
	until      time.Time   // end of the current ejection
	timer      *time.Timer // returns the backend when the ejection ends
	level      int         // ejections in the current streak (doubling)
	returnedAt time.Time   // end of the last ejection
	resetAfter time.Duration
	ejections  uint64 // ejections ever
}

// NewChecker returns a Checker that logs transitions to log (nil: no
// logging). Call Close when done with it.
func NewChecker(log *slog.Logger) *Checker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{log: log, probers: make(map[probeKey]*prober)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	m := make(map[string]*addrState)
	c.states.Store(&m)
	return c
}

// Watch starts checking b with chk and returns a function that stops this
// watch. However many routes (or configurations, across a reload) watch
// the same address with the same check (defaults filled in), one goroutine
// probes it; it ends when the last of them stops. Watch a backend under
// the new configuration before stopping the old watch, and a reload keeps
// the probe running with its counters and verdict.
//
// The first probe runs at once; the next ones follow Interval apart, with
// a random 10% either way. The backend starts healthy as far as this
// check goes; Fall consecutive failures make it unhealthy, then Rise
// consecutive successes healthy again. With several checks on one address,
// it is down while any of them says so.
//
// stop is safe to call more than once and from any goroutine; it returns
// when the probe goroutine has ended, if this was its last watch. An
// invalid chk (see Check.Validate) is logged and not run, and a closed
// Checker runs nothing; stop is then a no-op.
func (c *Checker) Watch(b *balancer.Backend, chk Check) (stop func()) {
	if err := chk.Validate(); err != nil {
		c.log.Error("health check not started", "backend", b.Addr, "error", err)
		return func() {}
	}
	chk = chk.WithDefaults()
	key := probeKey{addr: b.Addr, check: chk}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return func() {}
	}
	st := c.stateLocked(b, time.Now())
	p := c.probers[key]
	if p == nil {
		ctx, cancel := context.WithCancel(c.ctx)
		p = &prober{key: key, st: st, cancel: cancel, done: make(chan struct{})}
		if chk.Kind == HTTP {
			p.req = httpRequest(b.Addr, &chk)
		}
		c.probers[key] = p
		st.probers = append(st.probers, p)
		c.wg.Add(1)
		c.running.Add(1)
		go c.run(ctx, p)
	}
	p.refs++
	c.mu.Unlock()

	var once sync.Once
	return func() { once.Do(func() { c.unwatch(p) }) }
}

// unwatch drops one watch of p, and ends p after its last one.
func (c *Checker) unwatch(p *prober) {
	c.mu.Lock()
	p.refs--
	if p.refs > 0 || p.removed {
		c.mu.Unlock()
		return
	}
	p.removed = true
	delete(c.probers, p.key)
	st := p.st
	st.probers = slices.DeleteFunc(st.probers, func(q *prober) bool { return q == p })
	if !c.closed {
		c.updateActiveLocked(st)
		if c.idleLocked(st, time.Now()) {
			c.forgetLocked(st.addr)
		}
	}
	c.mu.Unlock()

	p.cancel()
	<-p.done
}

// run is p's goroutine: probe, record, wait, until ctx ends.
func (c *Checker) run(ctx context.Context, p *prober) {
	defer close(p.done) // last: stop returns once the goroutine is all but gone
	defer c.wg.Done()
	defer c.running.Add(-1)

	chk := &p.key.check
	var t *time.Timer
	for {
		start := time.Now()
		err := probe(ctx, p.key.addr, chk, p.req)
		if ctx.Err() != nil {
			return
		}
		c.record(p, err, start, time.Since(start))

		wait := jitter(chk.Interval)
		if t == nil {
			t = time.NewTimer(wait)
			defer t.Stop()
		} else {
			t.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// jitter returns d give or take a random 10%.
func jitter(d time.Duration) time.Duration {
	j := int64(d / 10)
	if j <= 0 {
		return d
	}
	return d - time.Duration(j) + time.Duration(rand.Int64N(2*j+1))
}

// record applies the result of one probe of p.
func (c *Checker) record(p *prober, err error, at time.Time, took time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.removed || c.closed {
		return
	}
	chk := &p.key.check
	p.probes++
	p.lastCheck = at
	p.lastDuration = took
	if err == nil {
		p.lastErr = ""
		p.successes++
		p.failures = 0
		if p.down && p.successes >= chk.Rise {
			p.down = false
			c.log.Info("backend healthy again", "backend", p.key.addr, "check", chk.Kind.String(),
				"path", chk.Path, "successes", p.successes)
		}
	} else {
		p.lastErr = err.Error()
		p.failures++
		p.successes = 0
		if !p.down && p.failures >= chk.Fall {
			p.down = true
			c.log.Warn("backend unhealthy", "backend", p.key.addr, "check", chk.Kind.String(),
				"path", chk.Path, "failures", p.failures, "reason", p.lastErr)
		}
	}
	c.updateActiveLocked(p.st)
}

// updateActiveLocked recomputes st's active verdict from its probers and
// applies it if it changed.
func (c *Checker) updateActiveLocked(st *addrState) {
	down := false
	for _, p := range st.probers {
		down = down || p.down
	}
	if down != st.activeDown {
		st.activeDown = down
		c.applyLocked(st)
	}
}

// applyLocked sets st's backend health from both inputs.
func (c *Checker) applyLocked(st *addrState) {
	st.b.SetHealthy(st.usable())
}

// usable reports whether neither active checks nor passive ejection say
// the backend is down.
func (st *addrState) usable() bool { return !st.activeDown && !st.ejected }

// stateLocked returns the state of b's address, creating it if need be,
// and makes b the Backend it drives.
func (c *Checker) stateLocked(b *balancer.Backend, now time.Time) *addrState {
	old := *c.states.Load()
	if st := old[b.Addr]; st != nil {
		if !st.b.Same(b) {
			st.b = b
			if !st.usable() {
				c.applyLocked(st)
			}
		}
		return st
	}
	st := &addrState{addr: b.Addr, b: b}
	// Copy on write, leaving out the states that no longer say anything.
	m := make(map[string]*addrState, len(old)+1)
	for a, s := range old {
		if !c.idleLocked(s, now) {
			m[a] = s
		}
	}
	m[b.Addr] = st
	c.states.Store(&m)
	return st
}

// forgetLocked removes addr's state.
func (c *Checker) forgetLocked(addr string) {
	old := *c.states.Load()
	m := make(map[string]*addrState, len(old))
	for a, s := range old {
		if a != addr {
			m[a] = s
		}
	}
	c.states.Store(&m)
}

// idleLocked reports whether st holds nothing worth keeping: no active
// check, no ejection, no recent failure, no ejection streak to remember.
func (c *Checker) idleLocked(st *addrState, now time.Time) bool {
	if len(st.probers) > 0 || st.ejected {
		return false
	}
	if n := len(st.failTimes); n > 0 && now.Sub(st.failTimes[n-1]) < st.failWindow {
		return false
	}
	return st.level == 0 || now.Sub(st.returnedAt) >= st.resetAfter
}

// BackendState is a snapshot of what a Checker knows about one backend
// address, for the admin API and metrics.
type BackendState struct {
	// Addr is the backend's address.
	Addr string
	// Healthy reports that the backend takes new connections: no active
	// check says it is down and it is not ejected.
	Healthy bool
	// ActiveDown reports that an active check says the backend is down.
	ActiveDown bool
	// Ejected reports that passive health ejected the backend, until
	// EjectedUntil.
	Ejected      bool
	EjectedUntil time.Time
	// RecentFailures is the number of failed dials and handshakes reported
	// within the failure window and not followed by a success.
	RecentFailures int
	// Ejections is the number of times the backend was ejected.
	Ejections uint64
	// Checks are the active checks of the backend, by kind and path.
	Checks []CheckState
}

// CheckState is the state of one active check of one backend.
type CheckState struct {
	// Check is the check, with defaults filled in.
	Check Check
	// Healthy reports this check's verdict.
	Healthy bool
	// LastCheck is when the last probe started; zero before the first
	// probe ends.
	LastCheck time.Time
	// LastDuration is how long the last probe took.
	LastDuration time.Duration
	// LastError is why the last probe failed; empty if it succeeded.
	LastError string
	// Successes and Failures count the consecutive successful and failed
	// probes up to the last one; one of them is 0.
	Successes, Failures int
	// Probes is the number of probes run.
	Probes uint64
	// Watchers is the number of Watch calls sharing this check.
	Watchers int
}

// State returns a snapshot of every backend the Checker tracks (those with
// an active check, an ejection, or recent failures), sorted by address.
func (c *Checker) State() []BackendState {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := *c.states.Load()
	out := make([]BackendState, 0, len(m))
	for _, st := range m {
		bs := BackendState{
			Addr:           st.addr,
			Healthy:        st.usable(),
			ActiveDown:     st.activeDown,
			Ejected:        st.ejected,
			RecentFailures: len(st.failTimes),
			Ejections:      st.ejections,
		}
		if st.ejected {
			bs.EjectedUntil = st.until
		}
		for _, p := range st.probers {
			bs.Checks = append(bs.Checks, CheckState{
				Check:        p.key.check,
				Healthy:      !p.down,
				LastCheck:    p.lastCheck,
				LastDuration: p.lastDuration,
				LastError:    p.lastErr,
				Successes:    p.successes,
				Failures:     p.failures,
				Probes:       p.probes,
				Watchers:     p.refs,
			})
		}
		slices.SortFunc(bs.Checks, func(a, b CheckState) int {
			return cmp.Or(cmp.Compare(a.Check.Kind, b.Check.Kind), cmp.Compare(a.Check.Path, b.Check.Path),
				cmp.Compare(a.Check.Interval, b.Check.Interval))
		})
		out = append(out, bs)
	}
	slices.SortFunc(out, func(a, b BackendState) int { return cmp.Compare(a.Addr, b.Addr) })
	return out
}

// Close stops every probe and ejection timer and returns when their
// goroutines have ended. It returns every backend it had marked down to
// healthy, since nothing would bring them back afterwards. Afterwards
// Watch runs nothing and ReportFailure does nothing. Close is safe to call
// more than once.
func (c *Checker) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.cancel()
		for _, st := range *c.states.Load() {
			if st.timer != nil && st.timer.Stop() {
				c.wg.Done() // the timer's callback will not run
			}
			st.timer = nil
			if !st.usable() {
				st.b.SetHealthy(true)
			}
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
}
