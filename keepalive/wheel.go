package keepalive

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// DefaultTick is the resolution of a Wheel made with a tick that is not
// positive. A tenth of a second is far finer than any ping interval or pong
// timeout worth configuring, and coarse enough that an idle wheel wakes only
// ten times a second per shard.
const DefaultTick = 100 * time.Millisecond

// wheelSlots is the number of slots per shard, a power of two. One turn of
// the wheel is wheelSlots ticks (102.4s at DefaultTick), so the usual ping
// intervals and pong timeouts expire the first time their slot comes round.
// A longer delay (a maximum connection lifetime of hours) waits in its slot
// across turns: the shard looks at it once per turn, compares its expiry
// tick and leaves it, which costs a few nanoseconds per timer per turn.
const wheelSlots = 1024

// maxDelay caps a delay so that tick arithmetic cannot overflow; about 73
// years, which is "never" for a connection.
const maxDelay = time.Duration(1 << 61)

// Func is what a Timer runs when it expires. The caller's per-connection
// struct implements it, so that arming a timer allocates nothing.
//
// Fire runs on the goroutine of the Wheel's shard that owns the timer,
// after the shard's lock is released, one timer after another. It must
// therefore return quickly and must not block: use only non-blocking
// operations (atomics, TryLock, a non-blocking channel send, a write on a
// socket that cannot wait), never a lock that may be held across network
// I/O, and never a call to Close of the same Wheel. It may call Schedule and
// Stop, for this timer (a periodic ping reschedules itself) or any other.
// now is the time at which the shard found the timer expired; it is never
// before the timer's deadline.
type Func interface {
	Fire(now time.Time)
}

// FireFunc adapts a plain function to Func. A func value that captures
// variables is a heap-allocated closure, so the allocation-free way is a
// method on the caller's own struct; FireFunc is for tests and for code off
// the hot path.
type FireFunc func(now time.Time)

// Fire calls f(now).
func (f FireFunc) Fire(now time.Time) { f(now) }

// Timer states. Pending and idle change only under the shard's lock;
// queued (collected for firing, Fire not yet started) is left by a CAS,
// either by the shard goroutine claiming the fire or by Stop and Schedule
// cancelling it, so exactly one of them wins.
const (
	stateIdle int32 = iota
	statePending
	stateQueued
)

// Timer is one coarse timer of a Wheel. It is meant to be embedded in the
// caller's per-connection struct, so that scheduling it allocates nothing;
// its zero value is unusable until Init. It must not be copied after Init.
//
// A Timer belongs to the first Wheel it is scheduled on, and to one shard of
// that Wheel: its Fire calls never run concurrently with each other, but
// one may run concurrently with Schedule and Stop called elsewhere (Stop
// returning false says so). A pending Timer is referenced by its Wheel:
// Stop it when the connection ends so that the connection can be
// collected. Its size is 64 bytes on 64-bit platforms.
type Timer struct {
	f          Func
	sh         atomic.Pointer[shard]
	next, prev *Timer // slot list; under sh.mu
	fnext      *Timer // list of expired timers; shard goroutine only
	when       int64  // expiry tick; under sh.mu
	state      atomic.Int32
}

// Init sets what the timer runs when it fires. Call it once, before the
// first Schedule; it must not be called while the timer is pending.
func (t *Timer) Init(f Func) { t.f = f }

// Wheel is a hashed timing wheel for very many coarse timers: ping
// intervals, pong deadlines, idle timeouts and connection lifetimes of a
// hundred thousand connections without a runtime timer each.
//
// The timers are spread over shards, each with its own lock, slots and one
// goroutine woken by one ticker every tick. Schedule and Stop are O(1),
// allocate nothing and take only the owning shard's lock. A timer fires on
// the first tick at or after its deadline: never early, and normally less
// than one tick late.
//
// All methods are safe for concurrent use. Close stops the shards'
// goroutines; a Wheel must be closed when it is no longer needed.
type Wheel struct {
	tick   time.Duration
	start  time.Time
	clock  func() time.Duration // tests only; nil means time.Since(start)
	shards []shard
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// shard is one independent part of a wheel.
type shard struct {
	w      *Wheel
	mu     sync.Mutex
	cur    int64 // last tick processed; under mu
	n      int   // pending timers; under mu
	closed bool  // under mu
	slots  [wheelSlots]*Timer
}

// NewWheel returns a running wheel of the given resolution (DefaultTick if
// tick is not positive) and number of shards (runtime.GOMAXPROCS(0) if
// shards is not positive). It starts exactly one goroutine per shard, each
// waking once per tick; Close stops them.
//
// More shards mean less lock contention between connections scheduling
// timers and more expiry work done in parallel; fewer mean fewer wakeups.
// A tick well below a millisecond makes the wakeups themselves the main
// cost.
func NewWheel(tick time.Duration, shards int) *Wheel {
	w := newWheel(tick, shards)
	w.wg.Add(len(w.shards))
	for i := range w.shards {
		go w.shards[i].run()
	}
	return w
}

// newWheel returns a wheel without its goroutines (tests drive it).
func newWheel(tick time.Duration, shards int) *Wheel {
	if tick <= 0 {
		tick = DefaultTick
	}
	if shards <= 0 {
		shards = runtime.GOMAXPROCS(0)
	}
	w := &Wheel{tick: tick, start: time.Now(), shards: make([]shard, shards), done: make(chan struct{})}
	for i := range w.shards {
		w.shards[i].w = w
	}
	return w
}

// Tick returns the wheel's resolution.
func (w *Wheel) Tick() time.Duration { return w.tick }

// elapsed is the monotonic time since the wheel started.
func (w *Wheel) elapsed() time.Duration {
	if w.clock != nil {
		return w.clock()
	}
	return time.Since(w.start)
}

// Schedule arms t to fire once, d from now (at the next tick if d is not
// positive). If t is already pending it is moved: the earlier deadline is
// forgotten, and so is an expiry whose Fire has not started yet. A Fire
// already running is not affected. Schedule after Close does nothing.
//
// A timer that reschedules itself from Fire with the same d runs every d
// plus up to one tick, since Fire itself runs up to a tick after the
// deadline; a caller that wants a steady cadence schedules d minus the
// lateness (now passed to Fire minus the intended time).
//
// Schedule is O(1) and allocates nothing. It panics if t has no Func (see
// Init) or was scheduled on another Wheel before.
func (w *Wheel) Schedule(t *Timer, d time.Duration) {
	if t.f == nil {
		panic("keepalive: Schedule of a Timer without Init")
	}
	s := w.shardOf(t)
	d = min(max(d, 0), maxDelay)
	el := w.elapsed() + d
	when := int64((el + w.tick - 1) / w.tick) // first tick at or after the deadline
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	switch t.state.Load() {
	case statePending:
		s.unlink(t)
	case stateQueued:
		t.state.CompareAndSwap(stateQueued, stateIdle)
	}
	// A slot already processed would wait a whole turn; and a deadline in
	// the current tick has passed the tick's start, so it goes to the next.
	t.when = max(when, s.cur+1)
	s.link(t)
	t.state.Store(statePending)
	s.mu.Unlock()
}

// Stop disarms t. It reports whether this prevented a fire: true if t was
// pending (or expired with its Fire not yet started), false if t was not
// armed or its Fire has already started (it may still be running). Stop
// allocates nothing.
func (w *Wheel) Stop(t *Timer) bool {
	s := t.sh.Load()
	if s == nil {
		return false
	}
	if s.w != w {
		panic("keepalive: Timer stopped on a Wheel it does not belong to")
	}
	s.mu.Lock()
	stopped := false
	switch t.state.Load() {
	case statePending:
		s.unlink(t)
		t.state.Store(stateIdle)
		stopped = true
	case stateQueued:
		stopped = t.state.CompareAndSwap(stateQueued, stateIdle)
	}
	s.mu.Unlock()
	return stopped
}

// Len returns the number of pending timers (for metrics).
func (w *Wheel) Len() int {
	n := 0
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

// Close stops the wheel: its goroutines have exited when Close returns
// (a Fire in progress is waited for, so Close must not be called from a
// Fire). Pending timers are dropped without firing, Schedule does nothing
// afterwards, and Stop reports false. Close may be called more than once.
func (w *Wheel) Close() {
	w.once.Do(func() {
		for i := range w.shards {
			s := &w.shards[i]
			s.mu.Lock()
			s.closed = true
			s.mu.Unlock()
		}
		close(w.done)
	})
	w.wg.Wait()
	for i := range w.shards {
		w.shards[i].clear()
	}
}

// shardOf returns t's shard, choosing one round robin on first use.
func (w *Wheel) shardOf(t *Timer) *shard {
	s := t.sh.Load()
	if s == nil {
		// Spread by the timer's address. A shared round-robin counter
		// was a cache line every loop wrote for every new timer, next to
		// the fields every Schedule reads.
		h := uint64(uintptr(unsafe.Pointer(t))) * 0x9e3779b97f4a7c15
		s = &w.shards[(h>>32)%uint64(len(w.shards))]
		if !t.sh.CompareAndSwap(nil, s) {
			s = t.sh.Load()
		}
	}
	if s.w != w {
		panic("keepalive: Timer scheduled on a second Wheel")
	}
	return s
}

func (s *shard) link(t *Timer) {
	i := t.when & (wheelSlots - 1)
	h := s.slots[i]
	t.prev, t.next = nil, h
	if h != nil {
		h.prev = t
	}
	s.slots[i] = t
	s.n++
}

func (s *shard) unlink(t *Timer) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		s.slots[t.when&(wheelSlots-1)] = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	t.next, t.prev = nil, nil
	s.n--
}

func (s *shard) run() {
	defer s.w.wg.Done()
	tk := time.NewTicker(s.w.tick)
	defer tk.Stop()
	for {
		select {
		case <-s.w.done:
			return
		case <-tk.C:
			now := time.Now()
			el := now.Sub(s.w.start)
			if s.w.clock != nil {
				el = s.w.clock()
				now = s.w.start.Add(el)
			}
			s.fire(s.collect(el), now)
		}
	}
}

// collect advances the shard to the tick that el falls in and returns the
// timers that expired, linked through fnext, in the queued state.
func (s *shard) collect(el time.Duration) *Timer {
	target := int64(el / s.w.tick)
	var head, tail *Timer
	s.mu.Lock()
	if target-s.cur >= wheelSlots {
		// Behind by a whole turn or more (the process was stopped): every
		// slot is due once, up to target.
		for i := range s.slots {
			head, tail = s.expire(i, target, head, tail)
		}
	} else {
		for c := s.cur + 1; c <= target; c++ {
			head, tail = s.expire(int(c&(wheelSlots-1)), c, head, tail)
		}
	}
	s.cur = max(s.cur, target)
	s.mu.Unlock()
	return head
}

// expire moves the timers of slot i that are due by tick c to the list
// head..tail. Called with s.mu held.
func (s *shard) expire(i int, c int64, head, tail *Timer) (*Timer, *Timer) {
	for t := s.slots[i]; t != nil; {
		next := t.next
		if t.when <= c {
			s.unlink(t)
			t.state.Store(stateQueued)
			if tail == nil {
				head = t
			} else {
				tail.fnext = t
			}
			tail = t
		}
		t = next
	}
	return head, tail
}

// fire runs the collected timers that nobody cancelled in the meantime.
func (s *shard) fire(head *Timer, now time.Time) {
	for t := head; t != nil; {
		next := t.fnext
		t.fnext = nil
		if t.state.CompareAndSwap(stateQueued, stateIdle) {
			t.f.Fire(now)
		}
		t = next
	}
}

// clear drops every pending timer of a closed shard.
func (s *shard) clear() {
	s.mu.Lock()
	for i := range s.slots {
		for s.slots[i] != nil {
			t := s.slots[i]
			s.unlink(t)
			t.state.Store(stateIdle)
		}
	}
	s.mu.Unlock()
}

// Jitter returns a duration chosen uniformly between (1-frac)·d and d, for
// a maximum connection lifetime: the maximum stays a maximum, and
// connections opened together (after a restart or a deploy) do not all end
// in the same tick. frac is clamped to [0, 1]. Jitter is safe for
// concurrent use and allocates nothing.
func Jitter(d time.Duration, frac float64) time.Duration {
	frac = min(max(frac, 0), 1)
	span := time.Duration(float64(d) * frac)
	if d <= 0 || span <= 0 {
		return d
	}
	return d - rand.N(span+1)
}
