package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
)

// openAll opens connections first..first+n-1 with at most
// cfg.dialConcurrency handshakes in flight, counting failures in res. It
// returns the connections that opened, in index order.
func openAll(ctx context.Context, cfg *config, c *client, first, n int, res *Result) []*websocket.Conn {
	conns := make([]*websocket.Conn, n)
	sem := make(chan struct{}, cfg.dialConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ws, err := c.dial(ctx, first+i, cfg.dialTimeout)
			if err != nil {
				res.addError(fmt.Errorf("connection %d: %w", first+i, err))
				return
			}
			conns[i] = ws
		}()
	}
	wg.Wait()
	out := conns[:0]
	for _, ws := range conns {
		if ws != nil {
			out = append(out, ws)
		}
	}
	return out
}

// forEach runs f on every connection with at most limit calls at once.
func forEach(conns []*websocket.Conn, limit int, f func(i int, ws *websocket.Conn)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, ws := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i, ws)
		}()
	}
	wg.Wait()
}

// closeAll closes every connection with a close handshake.
func closeAll(conns []*websocket.Conn, limit int) {
	forEach(conns, limit, func(_ int, ws *websocket.Conn) { closeConn(ws, time.Second) })
}

// payload returns n random bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// sleepUntil waits until t or until ctx ends; it reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// cpuUse is the CPU time spent during a window, in seconds.
type cpuUse struct {
	proxy    float64 // the -pid processes
	backends float64 // the -backend-pid processes
	client   float64 // this process
	machine  float64 // every CPU of the machine, busy (not idle, iowait or steal)
	steal    float64 // taken from this VM by the hypervisor
}

// other is the CPU time of everything else on the machine. It is not
// clamped: the per-process figures are tick-sampled, so a quiet machine
// can show a small negative value, and that is the honest reading.
func (u cpuUse) other() float64 {
	return u.machine - u.proxy - u.backends - u.client
}

// cpuWindow samples CPU times at the start and at the end of a window, on
// its own goroutine; wait returns what was spent in between.
type cpuWindow struct {
	done chan struct{}
	use  cpuUse
	err  error
}

func watchCPU(ctx context.Context, cfg *config, start, end time.Time) *cpuWindow {
	w := &cpuWindow{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		if !sleepUntil(ctx, start) {
			return
		}
		u0, err := sampleCPU(cfg)
		if err != nil {
			w.err = err
			return
		}
		sleepUntil(ctx, end)
		u1, err := sampleCPU(cfg)
		if err != nil {
			w.err = err
			return
		}
		w.use = cpuUse{
			proxy:    u1.proxy - u0.proxy,
			backends: u1.backends - u0.backends,
			client:   u1.client - u0.client,
			machine:  u1.machine - u0.machine,
			steal:    u1.steal - u0.steal,
		}
	}()
	return w
}

func (w *cpuWindow) wait() (cpuUse, error) {
	<-w.done
	return w.use, w.err
}

// sampleCPU reads the cumulative CPU times a window is the difference of.
func sampleCPU(cfg *config) (cpuUse, error) {
	var u cpuUse
	p, err := sampleTree(cfg.pids)
	if err != nil {
		return u, err
	}
	b, err := sampleTree(cfg.backendPIDs)
	if err != nil {
		return u, err
	}
	self, err := sampleSelf()
	if err != nil {
		return u, err
	}
	m, err := machineTimes()
	if err != nil {
		return u, err
	}
	return cpuUse{proxy: p.CPUSeconds, backends: b.CPUSeconds, client: self.CPUSeconds, machine: m.busy, steal: m.steal}, nil
}

// recordCPU fills in the CPU figures of res from a window's use, with work
// units of work done in it (scaled per unit by per).
func recordCPU(res *Result, cfg *config, u cpuUse, units int64, per float64) float64 {
	res.ClientWindowCPUS = u.client
	res.MachineBusyCPUS = u.machine
	res.OtherCPUS = u.other()
	res.StealCPUS = u.steal
	if len(cfg.backendPIDs) > 0 {
		res.BackendCPUS = u.backends
	}
	if len(cfg.pids) == 0 {
		return 0
	}
	res.ProxyCPUS = u.proxy
	if units == 0 {
		return 0
	}
	return u.proxy / float64(units) * per
}

// sampleSteady takes three samples of pids 500 ms apart and returns the
// one with the median RSS, so a garbage collection or a late free in the
// middle of the sampling does not decide the figure alone.
func sampleSteady(ctx context.Context, pids []int) (procSample, error) {
	var samples []procSample
	for i := range 3 {
		if i > 0 && !sleepUntil(ctx, time.Now().Add(500*time.Millisecond)) {
			return procSample{}, ctx.Err()
		}
		s, err := sampleTree(pids)
		if err != nil {
			return procSample{}, err
		}
		samples = append(samples, s)
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i].RSSKiB < samples[j].RSSKiB })
	return samples[1], nil
}
