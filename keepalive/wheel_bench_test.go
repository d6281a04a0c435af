//go:build unix

package keepalive

import (
	"flag"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkScheduleStop arms an idle embedded Timer 30s ahead and disarms
// it: the cost of a pong deadline that is met.
func BenchmarkScheduleStop(b *testing.B) {
	w := NewWheel(0, 0)
	defer w.Close()
	rs := benchRecs(w, 1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := &rs[i&1023]
		w.Schedule(&r.Timer, 30*time.Second)
		w.Stop(&r.Timer)
		i++
	}
}

// BenchmarkReschedule moves a pending Timer: the cost of pushing a
// deadline further out.
func BenchmarkReschedule(b *testing.B) {
	w := NewWheel(0, 0)
	defer w.Close()
	rs := benchRecs(w, 1024)
	for i := range rs {
		w.Schedule(&rs[i].Timer, time.Minute)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.Schedule(&rs[i&1023].Timer, time.Duration(30+i&15)*time.Second)
		i++
	}
}

// BenchmarkScheduleStopParallel is BenchmarkScheduleStop on every CPU at
// once, each goroutine with its own timers: the cost of the shard locks
// under contention.
func BenchmarkScheduleStopParallel(b *testing.B) {
	w := NewWheel(0, 0)
	defer w.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rs := benchRecs(w, 1024)
		i := 0
		for pb.Next() {
			r := &rs[i&1023]
			w.Schedule(&r.Timer, 30*time.Second)
			w.Stop(&r.Timer)
			i++
		}
	})
}

// BenchmarkTimeTimerResetStop is BenchmarkScheduleStop with a runtime
// timer from time.AfterFunc, for comparison.
func BenchmarkTimeTimerResetStop(b *testing.B) {
	ts := make([]*time.Timer, 1024)
	for i := range ts {
		ts[i] = time.AfterFunc(time.Hour, func() {})
		ts[i].Stop()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t := ts[i&1023]
		t.Reset(30 * time.Second)
		t.Stop()
		i++
	}
}

func benchRecs(w *Wheel, n int) []rec {
	rs := make([]rec, n)
	for i := range rs {
		rs[i].w = w
		rs[i].Init(&rs[i])
	}
	return rs
}

var idleScale = flag.Int("keepalive.scale", 1,
	"BenchmarkIdlePings10k: divide the 1s ping interval and the 100ms tick by this")

// idleConns is the number of idle connections of BenchmarkIdlePings10k.
const idleConns = 10_000

// pingCount counts pings and signals when the benchmark has its b.N.
type pingCount struct {
	n      atomic.Int64
	target int64
	done   chan struct{}
}

func (p *pingCount) add() {
	if p.n.Add(1) == p.target {
		close(p.done)
	}
}

// wheelConn is the liveness state of one connection pinged from the wheel.
type wheelConn struct {
	Timer
	w     *Wheel
	iv    time.Duration
	pings *pingCount
}

func (c *wheelConn) Fire(time.Time) {
	c.w.Schedule(&c.Timer, c.iv)
	c.pings.add()
}

// afterConn is the same with one runtime timer per connection.
type afterConn struct {
	t     *time.Timer
	iv    time.Duration
	pings *pingCount
	stop  *atomic.Bool
}

func (c *afterConn) fire() {
	if !c.stop.Load() {
		c.t.Reset(c.iv)
	}
	c.pings.add()
}

// BenchmarkIdlePings10k measures the liveness machinery alone for 10,000
// idle connections each pinged every second: a Wheel with the default
// 100ms tick and GOMAXPROCS shards, against one time.AfterFunc timer per
// connection (whose function runs in a new goroutine each time). Each Fire
// reschedules its timer and counts a ping; writing the ping frame, which
// costs the same either way, is left out.
//
// It runs on the real clock: one op is one ping, 10,000 a second, so the
// default -benchtime=1s is about one interval of every connection and the
// run takes a few seconds. ns/op is only the wall time between pings
// (about 100µs; a bit more for the wheel, whose periodic timer, rescheduled
// from Fire, runs every interval plus up to a tick). -keepalive.scale=10
// divides the interval and the tick by 10 for ten times the pings per
// second; the cost per ping is then lower for both, as fewer idle threads
// have to be woken per ping. The figures that matter:
//
//   - cpu-ns/ping: user+system CPU time of the whole process (getrusage)
//     per ping, wakeups and GC included. At 10,000 pings a second, 100
//     cpu-ns/ping is 0.1% of one core.
//   - B/timer: live heap per connection for its timer (HeapAlloc after GC,
//     before and after creating the 10,000 timers, divided by 10,000), the
//     connection struct holding it included and the wheel's slots
//     amortised.
//   - allocs/op, B/op: heap allocations per ping.
func BenchmarkIdlePings10k(b *testing.B) {
	scale := time.Duration(max(*idleScale, 1))
	iv, tick := time.Second/scale, DefaultTick/scale

	b.Run("wheel", func(b *testing.B) {
		idlePings(b, func(pc *pingCount) func() {
			w := NewWheel(tick, 0)
			cs := make([]wheelConn, idleConns)
			for i := range cs {
				c := &cs[i]
				c.w, c.iv, c.pings = w, iv, pc
				c.Init(c)
				w.Schedule(&c.Timer, spread(i, iv))
			}
			return w.Close
		})
	})
	b.Run("AfterFunc", func(b *testing.B) {
		idlePings(b, func(pc *pingCount) func() {
			stop := new(atomic.Bool)
			cs := make([]afterConn, idleConns)
			for i := range cs {
				c := &cs[i]
				c.iv, c.pings, c.stop = iv, pc, stop
				c.t = time.AfterFunc(time.Hour, c.fire)
				c.t.Reset(spread(i, iv))
			}
			return func() {
				stop.Store(true)
				for i := range cs {
					cs[i].t.Stop()
				}
			}
		})
	})
}

// spread gives connection i of idleConns its first ping within the first
// interval, so that the pings are evenly spread as on a real server.
func spread(i int, iv time.Duration) time.Duration {
	return iv * time.Duration(i) / idleConns
}

// idlePings runs one variant: start creates the timers and returns what
// stops them.
func idlePings(b *testing.B, start func(*pingCount) func()) {
	pc := &pingCount{target: int64(b.N), done: make(chan struct{})}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	stop := start(pc)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perTimer := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / idleConns

	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	<-pc.done
	cpu := cpuTime() - cpu0
	b.StopTimer()
	stop()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/ping")
	b.ReportMetric(perTimer, "B/timer")
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
