//go:build !race

package keepalive

import (
	"testing"
	"time"
)

// The race detector allocates on its own, so these run only without it.

// TestScheduleStopDoNotAllocate: arming, moving and disarming an embedded
// Timer allocate nothing, first use of the Timer included.
func TestScheduleStopDoNotAllocate(t *testing.T) {
	w := NewWheel(time.Millisecond, 2)
	defer w.Close()
	rs := make([]rec, 1000)
	for i := range rs {
		rs[i].w = w
		rs[i].Init(&rs[i])
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		r := &rs[i%len(rs)]
		w.Schedule(&r.Timer, time.Hour)
		w.Schedule(&r.Timer, time.Minute)
		w.Stop(&r.Timer)
		i++
	}); n != 0 {
		t.Errorf("%v allocations per Schedule, Schedule, Stop", n)
	}
}

// pinger is a periodic timer like a proxy ping: Fire reschedules it.
type pinger struct {
	Timer
	w     *Wheel
	iv    time.Duration
	pings int
}

func (p *pinger) Fire(time.Time) {
	p.pings++
	p.w.Schedule(&p.Timer, p.iv)
}

// TestFireDoesNotAllocate: a tick that expires timers and runs their Fire,
// each rescheduling itself, allocates nothing.
func TestFireDoesNotAllocate(t *testing.T) {
	const tick = 10 * time.Millisecond
	f := newFakeWheel(tick, 2)
	ps := make([]pinger, 1000)
	for i := range ps {
		p := &ps[i]
		p.w, p.iv = f.Wheel, time.Duration(1+i%10)*tick
		p.Init(p)
		f.Schedule(&p.Timer, p.iv)
	}
	el := time.Duration(0)
	if n := testing.AllocsPerRun(100, func() {
		el += tick
		f.advance(el)
	}); n != 0 {
		t.Errorf("%v allocations per tick", n)
	}
	pings := 0
	for i := range ps {
		pings += ps[i].pings
	}
	if pings < 1000*10 {
		t.Fatalf("only %d pings in 100 ticks", pings)
	}
}

func TestJitterDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Jitter(time.Hour, 0.1) }); n != 0 {
		t.Errorf("%v allocations per Jitter", n)
	}
}
