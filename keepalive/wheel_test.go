package keepalive

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// rec is a test timer that records its fires.
type rec struct {
	Timer
	w     *Wheel
	fires atomic.Int32
	at    atomic.Int64 // elapsed wheel time of the last fire (from now)
	then  func(r *rec, now time.Time)
}

func newRec(w *Wheel) *rec {
	r := &rec{w: w}
	r.Init(r)
	return r
}

func (r *rec) Fire(now time.Time) {
	r.at.Store(int64(now.Sub(r.w.start)))
	r.fires.Add(1)
	if r.then != nil {
		r.then(r, now)
	}
}

// fakeWheel is a wheel without goroutines whose clock the test moves.
type fakeWheel struct {
	*Wheel
	el time.Duration
}

func newFakeWheel(tick time.Duration, shards int) *fakeWheel {
	f := &fakeWheel{Wheel: newWheel(tick, shards)}
	f.clock = func() time.Duration { return f.el }
	return f
}

// advance moves the clock to el and runs every shard as its goroutine would.
func (f *fakeWheel) advance(el time.Duration) {
	f.el = el
	for i := range f.shards {
		s := &f.shards[i]
		s.fire(s.collect(el), f.start.Add(el))
	}
}

// TestWheelModel drives a fake-clock wheel through random schedules,
// reschedules and stops with delays from zero to a day, advancing the clock
// by single ticks and by jumps of up to three turns, and checks every timer
// after every step against a model: a timer fires exactly at the first
// step that reaches the tick of its deadline rounded up (the next tick for
// a delay of zero), never earlier, with now at or after its deadline; Stop
// reports exactly whether the timer was pending.
func TestWheelModel(t *testing.T) {
	const tick = 100 * time.Millisecond
	rng := rand.New(rand.NewPCG(1, 2))
	f := newFakeWheel(tick, 3)
	type model struct {
		r        *rec
		active   bool
		fires    int32
		when     int64         // expected tick
		deadline time.Duration // el at Schedule + d
	}
	ms := make([]*model, 400)
	for i := range ms {
		ms[i] = &model{r: newRec(f.Wheel)}
	}
	delay := func() time.Duration {
		switch rng.IntN(6) {
		case 0:
			return time.Duration(rng.Int64N(int64(3 * tick))) // within a few ticks, 0 included
		case 1:
			return time.Duration(rng.Int64N(int64(wheelSlots * tick * 3))) // up to three turns
		case 2:
			return time.Duration(rng.Int64N(int64(24 * time.Hour))) // a lifetime
		case 3:
			return time.Duration(rng.IntN(5)) * tick // exact tick multiples
		case 4:
			return -time.Second
		}
		return time.Duration(rng.Int64N(int64(30 * time.Second)))
	}
	el := time.Duration(0)
	for step := 0; step < 30000; step++ {
		// operations at the current time
		for range rng.IntN(4) {
			m := ms[rng.IntN(len(ms))]
			if rng.IntN(4) == 0 {
				if got := f.Stop(&m.r.Timer); got != m.active {
					t.Fatalf("step %d: Stop = %v, model says pending = %v", step, got, m.active)
				}
				m.active = false
				continue
			}
			d := delay()
			f.Schedule(&m.r.Timer, d)
			dd := max(d, 0)
			m.deadline = el + dd
			m.when = max(int64((el+dd+tick-1)/tick), int64(el/tick)+1)
			m.active = true
		}
		// advance: mostly a tick (with a phase), sometimes a long jump
		if rng.IntN(10) < 8 {
			el = (el/tick+1)*tick + time.Duration(rng.Int64N(int64(tick)))
		} else {
			el += time.Duration(rng.Int64N(int64(3 * wheelSlots * tick)))
		}
		f.advance(el)
		cur := int64(el / tick)
		for i, m := range ms {
			got := m.r.fires.Load()
			switch {
			case got == m.fires && m.active && cur >= m.when:
				t.Fatalf("step %d: timer %d due at tick %d not fired at tick %d", step, i, m.when, cur)
			case got == m.fires:
			case got != m.fires+1:
				t.Fatalf("step %d: timer %d fired %d times at once", step, i, got-m.fires)
			case !m.active:
				t.Fatalf("step %d: timer %d fired while not pending", step, i)
			case cur < m.when:
				t.Fatalf("step %d: timer %d fired at tick %d, before its tick %d", step, i, cur, m.when)
			case time.Duration(m.r.at.Load()) < m.deadline:
				t.Fatalf("step %d: timer %d fired with now %v before its deadline %v", step, i, time.Duration(m.r.at.Load()), m.deadline)
			default:
				m.fires, m.active = got, false
			}
		}
	}
	if f.Len() != countActive(ms, func(m *model) bool { return m.active }) {
		t.Fatalf("Len = %d, want %d", f.Len(), countActive(ms, func(m *model) bool { return m.active }))
	}
}

func countActive[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}

// TestWheelLongDelay: a timer of hours waits out many turns of the wheel
// and fires on its tick, whether the clock advances tick by tick or jumps.
func TestWheelLongDelay(t *testing.T) {
	const tick = 100 * time.Millisecond
	for _, jump := range []time.Duration{tick, 7 * time.Minute} {
		f := newFakeWheel(tick, 1)
		r := newRec(f.Wheel)
		f.Schedule(&r.Timer, 3*time.Hour+50*time.Millisecond)
		for el := jump; el < 3*time.Hour+50*time.Millisecond; el += jump {
			f.advance(el)
			if r.fires.Load() != 0 {
				t.Fatalf("jump %v: fired at %v, before 3h", jump, el)
			}
		}
		f.advance(3*time.Hour + 100*time.Millisecond)
		if r.fires.Load() != 1 {
			t.Fatalf("jump %v: not fired on its tick", jump)
		}
	}
}

// TestWheelCancelQueued: between the shard collecting an expired timer and
// running it, Stop and Schedule still cancel that fire.
func TestWheelCancelQueued(t *testing.T) {
	const tick = 10 * time.Millisecond
	f := newFakeWheel(tick, 1)
	s := &f.shards[0]
	r := newRec(f.Wheel)

	f.Schedule(&r.Timer, tick)
	f.el = tick
	batch := s.collect(f.el)
	if !f.Stop(&r.Timer) {
		t.Fatal("Stop of a collected, unstarted timer = false")
	}
	if f.Stop(&r.Timer) {
		t.Fatal("second Stop = true")
	}
	s.fire(batch, f.start.Add(f.el))
	if r.fires.Load() != 0 {
		t.Fatal("stopped timer fired")
	}

	f.Schedule(&r.Timer, tick)
	f.el = 2 * tick
	batch = s.collect(f.el)
	f.Schedule(&r.Timer, 5*tick)
	s.fire(batch, f.start.Add(f.el))
	if r.fires.Load() != 0 {
		t.Fatal("rescheduled timer fired for its old deadline")
	}
	f.advance(6 * tick)
	if r.fires.Load() != 0 {
		t.Fatal("rescheduled timer fired early")
	}
	f.advance(7 * tick)
	if r.fires.Load() != 1 {
		t.Fatal("rescheduled timer did not fire for its new deadline")
	}

	// Once Fire has started, Stop reports false.
	var stopped bool
	r.then = func(r *rec, _ time.Time) { stopped = f.Stop(&r.Timer) }
	f.Schedule(&r.Timer, 0)
	f.advance(8 * tick)
	if r.fires.Load() != 2 || stopped {
		t.Fatalf("fires = %d, Stop from Fire = %v; want 2, false", r.fires.Load(), stopped)
	}
}

// TestWheelPeriodicFake: a Fire that reschedules itself runs once per
// interval, each time at or after its deadline and within a tick of it.
func TestWheelPeriodicFake(t *testing.T) {
	const tick, iv = 100 * time.Millisecond, time.Second
	f := newFakeWheel(tick, 2)
	var ats []time.Duration
	r := newRec(f.Wheel)
	r.then = func(r *rec, now time.Time) {
		ats = append(ats, now.Sub(f.start))
		f.Schedule(&r.Timer, iv)
	}
	f.Schedule(&r.Timer, iv)
	for el := time.Duration(0); el <= 100*iv+tick/2; el += tick / 2 {
		f.advance(el)
	}
	if len(ats) != 100 {
		t.Fatalf("%d fires in 100 intervals, want 100", len(ats))
	}
	prev := time.Duration(0)
	for i, at := range ats {
		if d := at - prev; d < iv || d > iv+tick {
			t.Fatalf("fire %d: %v after the previous, want within [%v, %v]", i, d, iv, iv+tick)
		}
		prev = at
	}
}

// TestWheelResolution: on the real clock a timer fires not before its
// delay and within a few ticks after it.
func TestWheelResolution(t *testing.T) {
	const tick = 5 * time.Millisecond
	w := NewWheel(tick, 2)
	defer w.Close()
	delays := []time.Duration{0, time.Millisecond, 12 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}
	type fired struct {
		start, at time.Time
		d         time.Duration
	}
	ch := make(chan fired, len(delays)*4)
	for range 4 {
		for _, d := range delays {
			start := time.Now()
			w.Schedule(&newFireFunc(func(now time.Time) { ch <- fired{start, now, d} }).Timer, d)
		}
	}
	for range len(delays) * 4 {
		select {
		case f := <-ch:
			late := f.at.Sub(f.start) - f.d
			if late < 0 {
				t.Errorf("delay %v fired %v early", f.d, -late)
			}
			// Generous: the machine may be busy with other tests.
			if late > 20*tick+100*time.Millisecond {
				t.Errorf("delay %v fired %v late", f.d, late)
			}
			if now := time.Now(); now.Before(f.at) {
				t.Errorf("Fire's now %v is after the real time %v", f.at, now)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("timers did not fire")
		}
	}
}

// funcTimer is a Timer running a FireFunc.
type funcTimer struct {
	Timer
}

func newFireFunc(f func(time.Time)) *funcTimer {
	ft := &funcTimer{}
	ft.Init(FireFunc(f))
	return ft
}

// TestWheelReschedule: a pending timer moved later or earlier fires once,
// for its new deadline.
func TestWheelReschedule(t *testing.T) {
	w := NewWheel(time.Millisecond, 2)
	defer w.Close()
	later, earlier := newRec(w), newRec(w)
	start := time.Now()
	w.Schedule(&later.Timer, 10*time.Millisecond)
	w.Schedule(&earlier.Timer, time.Hour)
	w.Schedule(&later.Timer, time.Hour)
	w.Schedule(&earlier.Timer, 20*time.Millisecond)
	waitFor(t, func() bool { return earlier.fires.Load() == 1 })
	if got := time.Duration(earlier.at.Load()) - start.Sub(w.start); got < 20*time.Millisecond {
		t.Fatalf("rescheduled timer fired after %v, want at least 20ms", got)
	}
	time.Sleep(30 * time.Millisecond)
	if later.fires.Load() != 0 || earlier.fires.Load() != 1 {
		t.Fatalf("fires: later %d, earlier %d; want 0, 1", later.fires.Load(), earlier.fires.Load())
	}
	if w.Len() != 1 {
		t.Fatalf("Len = %d, want 1", w.Len())
	}
}

// TestWheelStop: Stop reports whether it prevented the fire.
func TestWheelStop(t *testing.T) {
	w := NewWheel(time.Millisecond, 1)
	defer w.Close()
	r := newRec(w)
	if w.Stop(&r.Timer) {
		t.Fatal("Stop of a never scheduled timer = true")
	}
	w.Schedule(&r.Timer, 5*time.Millisecond)
	if !w.Stop(&r.Timer) {
		t.Fatal("Stop of a pending timer = false")
	}
	if w.Stop(&r.Timer) {
		t.Fatal("second Stop = true")
	}
	time.Sleep(20 * time.Millisecond)
	if r.fires.Load() != 0 {
		t.Fatal("stopped timer fired")
	}
	w.Schedule(&r.Timer, 0)
	waitFor(t, func() bool { return r.fires.Load() == 1 })
	if w.Stop(&r.Timer) {
		t.Fatal("Stop after the fire = true")
	}
}

// TestWheelStopExact races Stop against expiry on the real clock: batches
// of timers due within two ticks are stopped one by one after a random
// pause, so some fire first; every timer fired exactly when its Stop
// reported false.
func TestWheelStopExact(t *testing.T) {
	const n, workers, batch = 4000, 4, 50
	w := NewWheel(time.Millisecond, 2)
	rs := make([]*rec, n)
	for i := range rs {
		rs[i] = newRec(w)
	}
	stopped := make([]bool, n)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for lo := g * batch; lo < n; lo += workers * batch {
				for i := lo; i < lo+batch; i++ {
					w.Schedule(&rs[i].Timer, time.Duration(rng.IntN(3))*time.Millisecond)
				}
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				for i := lo; i < lo+batch; i++ {
					stopped[i] = w.Stop(&rs[i].Timer)
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(20 * time.Millisecond)
	w.Close() // waits for any Fire in progress
	nStopped := 0
	for i, r := range rs {
		want := int32(1)
		if stopped[i] {
			want = 0
			nStopped++
		}
		if got := r.fires.Load(); got != want {
			t.Fatalf("timer %d: Stop = %v and %d fires", i, stopped[i], got)
		}
	}
	if nStopped == 0 || nStopped == n {
		t.Logf("no race between Stop and expiry happened: %d of %d stopped", nStopped, n)
	}
	t.Logf("%d of %d timers stopped before firing", nStopped, n)
}

// TestWheelRescheduleFromFire: periodic timers on the real clock, each Fire
// scheduling the next one, keep their interval.
func TestWheelRescheduleFromFire(t *testing.T) {
	const iv, rounds = 5 * time.Millisecond, 20
	w := NewWheel(time.Millisecond, 2)
	defer w.Close()
	var done sync.WaitGroup
	rs := make([]*rec, 50)
	for i := range rs {
		var last time.Duration
		done.Add(1)
		rs[i] = newRec(w)
		rs[i].then = func(r *rec, now time.Time) {
			at := now.Sub(w.start)
			if last != 0 && at-last < iv {
				t.Errorf("periodic timer fired %v after the previous fire, want at least %v", at-last, iv)
			}
			last = at
			if r.fires.Load() < rounds {
				w.Schedule(&r.Timer, iv)
			} else {
				done.Done()
			}
		}
		w.Schedule(&rs[i].Timer, iv)
	}
	waitFor(t, func() bool {
		for _, r := range rs {
			if r.fires.Load() < rounds {
				return false
			}
		}
		return true
	})
	done.Wait()
}

// TestWheel100k: a hundred thousand timers with spread deadlines each
// fire exactly once.
func TestWheel100k(t *testing.T) {
	const n = 100_000
	for _, shards := range []int{1, 0} {
		w := NewWheel(2*time.Millisecond, shards)
		rs := make([]rec, n)
		var total atomic.Int64
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range rs {
			r := &rs[i]
			r.w = w
			r.Init(r)
			r.then = func(*rec, time.Time) { total.Add(1) }
			w.Schedule(&r.Timer, time.Duration(rng.Int64N(int64(200*time.Millisecond))))
		}
		waitFor(t, func() bool { return total.Load() == n })
		time.Sleep(10 * time.Millisecond)
		w.Close()
		for i := range rs {
			if got := rs[i].fires.Load(); got != 1 {
				t.Fatalf("shards=%d: timer %d fired %d times", shards, i, got)
			}
		}
		if w.Len() != 0 {
			t.Fatalf("Len = %d after all fired", w.Len())
		}
	}
}

// TestWheelConcurrent: Schedule and Stop from many goroutines on shared
// timers while they fire, some rescheduling themselves from Fire. Run it
// with -race.
func TestWheelConcurrent(t *testing.T) {
	const n, workers = 1000, 8
	w := NewWheel(time.Millisecond, 4)
	rs := make([]*rec, n)
	var quit atomic.Bool
	for i := range rs {
		rs[i] = newRec(w)
		if i%3 == 0 {
			rs[i].then = func(r *rec, _ time.Time) {
				if !quit.Load() {
					w.Schedule(&r.Timer, 2*time.Millisecond)
				}
			}
		}
	}
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			end := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(end) {
				r := rs[rng.IntN(n)]
				switch rng.IntN(3) {
				case 0:
					w.Stop(&r.Timer)
				default:
					w.Schedule(&r.Timer, time.Duration(rng.IntN(4000))*time.Microsecond)
				}
				if rng.IntN(64) == 0 {
					w.Len()
				}
			}
		})
	}
	wg.Wait()
	quit.Store(true)
	var fires int32
	for _, r := range rs {
		fires += r.fires.Load()
	}
	if fires == 0 {
		t.Fatal("no timer fired")
	}
	w.Close()
	if w.Len() != 0 {
		t.Fatalf("Len = %d after Close", w.Len())
	}
	for _, r := range rs {
		if w.Stop(&r.Timer) {
			t.Fatal("Stop after Close = true")
		}
	}
	t.Logf("%d fires", fires)
}

// TestWheelClose: exactly one goroutine per shard, none after Close; a
// Fire in progress is waited for; nothing fires after Close.
func TestWheelClose(t *testing.T) {
	// Wheels of earlier tests are closed; their goroutines may be returning.
	waitFor(t, func() bool { return shardGoroutines() == 0 })
	w := NewWheel(time.Millisecond, 4)
	// A goroutine not yet started may not show its function in a trace.
	waitFor(t, func() bool { return shardGoroutines() >= 4 })
	time.Sleep(5 * time.Millisecond)
	if got := shardGoroutines(); got != 4 {
		t.Fatalf("%d goroutines for 4 shards", got)
	}
	release := make(chan struct{})
	started := make(chan struct{})
	blocker := newFireFunc(func(time.Time) { close(started); <-release })
	w.Schedule(&blocker.Timer, 0)
	late := newRec(w)
	w.Schedule(&late.Timer, time.Hour)
	<-started
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a Fire was running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	w.Close() // twice is fine
	// A shard goroutine may still be returning from its deferred Done.
	waitFor(t, func() bool { return shardGoroutines() == 0 })

	if w.Len() != 0 || w.Stop(&late.Timer) {
		t.Fatal("timer still pending after Close")
	}
	after := newRec(w)
	w.Schedule(&after.Timer, 0)
	time.Sleep(5 * time.Millisecond)
	if after.fires.Load() != 0 || w.Len() != 0 {
		t.Fatal("Schedule after Close armed a timer")
	}
}

// TestWheelMisuse: the panics that catch misuse.
func TestWheelMisuse(t *testing.T) {
	w1, w2 := newWheel(0, 1), newWheel(0, 1)
	mustPanic(t, "Schedule without Init", func() { w1.Schedule(new(Timer), 0) })
	r := newRec(w1)
	w1.Schedule(&r.Timer, time.Second)
	mustPanic(t, "Schedule on a second wheel", func() { w2.Schedule(&r.Timer, 0) })
	mustPanic(t, "Stop on a second wheel", func() { w2.Stop(&r.Timer) })
}

func TestTimerSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(Timer{}) != 64 {
		t.Fatalf("Timer is %d bytes, documented as 64", unsafe.Sizeof(Timer{}))
	}
}

func TestNewWheelDefaults(t *testing.T) {
	w := NewWheel(0, 0)
	defer w.Close()
	if w.Tick() != DefaultTick || len(w.shards) != runtime.GOMAXPROCS(0) {
		t.Fatalf("tick %v, %d shards; want %v, %d", w.Tick(), len(w.shards), DefaultTick, runtime.GOMAXPROCS(0))
	}
}

func TestJitter(t *testing.T) {
	const d = time.Hour
	lo, hi := d, time.Duration(0)
	for range 10000 {
		j := Jitter(d, 0.1)
		if j < d-d/10 || j > d {
			t.Fatalf("Jitter(1h, 0.1) = %v", j)
		}
		lo, hi = min(lo, j), max(hi, j)
	}
	if hi-lo < d/20 {
		t.Fatalf("Jitter spread only %v..%v", lo, hi)
	}
	if Jitter(d, 0) != d || Jitter(0, 0.5) != 0 || Jitter(d, -1) != d {
		t.Fatal("Jitter with nothing to spread changed the duration")
	}
	if j := Jitter(d, 7); j < 0 || j > d {
		t.Fatalf("Jitter(1h, 7) = %v", j)
	}
}

// shardGoroutines counts the goroutines running a shard's loop.
func shardGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "keepalive.(*shard).run(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(time.Millisecond)
	}
}
