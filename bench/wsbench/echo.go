package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// echoTimeout bounds one round trip; a connection whose echo takes longer
// counts as failed.
const echoTimeout = 10 * time.Second

// runEcho runs echo mode (a closed loop per connection) or, with paced,
// rate mode (cfg.rate messages per second per connection on a fixed
// schedule).
func runEcho(ctx context.Context, cfg *config, res *Result, paced bool) {
	// Buffers that hold a whole message and its frame header, within
	// reason, so a message is one read and one write.
	buf := min(max(cfg.size+14, 4096), 64<<10)
	c := newClient(cfg, buf, buf, false)
	conns := openAll(ctx, cfg, c, 0, cfg.conns, res)
	defer closeAll(conns, cfg.dialConcurrency)
	if len(conns) < cfg.conns {
		res.fail("opened %d of %d connections", len(conns), cfg.conns)
		return
	}
	if paced {
		res.TargetRate = cfg.rate
		res.TargetMsgsPS = cfg.rate * float64(len(conns))
	}

	// Every connection runs from now; only round trips that start and end
	// inside [winStart, winEnd] are counted.
	start := time.Now()
	winStart := start.Add(cfg.warmup)
	winEnd := winStart.Add(cfg.duration)
	cpu := watchCPU(ctx, cfg, winStart, winEnd)

	// A cancelled run closes the connections so that blocked reads return.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	stopClosing := context.AfterFunc(runCtx, func() {
		if ctx.Err() != nil {
			for _, ws := range conns {
				_ = ws.NetConn().Close()
			}
		}
	})
	defer stopClosing()

	hist := newHistogram(16)
	var count atomic.Int64
	msg := payload(cfg.size)
	var wg sync.WaitGroup
	for i, ws := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = ws.SetWriteDeadline(winEnd.Add(echoTimeout))
			_ = ws.SetReadDeadline(winEnd.Add(echoTimeout))
			var n int64
			var err error
			if paced {
				n, err = pacedLoop(runCtx, ws, i, msg, cfg.rate, start, winStart, winEnd, hist)
			} else {
				n, err = closedLoop(runCtx, ws, i, msg, winStart, winEnd, hist)
			}
			count.Add(n)
			if err != nil {
				res.addError(fmt.Errorf("connection %d: %w", i, err))
			}
		}()
	}
	wg.Wait()

	window := winEnd.Sub(winStart)
	if now := time.Now(); now.Before(winEnd) { // cut short
		window = max(now.Sub(winStart), 0)
	}
	res.WindowS = window.Seconds()
	res.Messages = count.Load()
	if window > 0 {
		res.MsgsPerSec = float64(res.Messages) / window.Seconds()
	}
	res.Latency = hist.summary()
	if use, err := cpu.wait(); err != nil {
		res.fail("sampling CPU times: %v", err)
	} else {
		res.CPUPer100kMsgs = recordCPU(res, cfg, use, res.Messages, 1e5)
	}
	if n := res.errorCount(); n > 0 {
		res.fail("%d connections failed", n)
	}
	if res.Messages == 0 {
		res.fail("no round trip completed in the measured window")
	}
}

// closedLoop sends msg and waits for its echo, again and again, until
// winEnd. It returns the round trips counted in the window.
func closedLoop(ctx context.Context, ws *websocket.Conn, i int, msg []byte, winStart, winEnd time.Time, hist *histogram) (int64, error) {
	buf := make([]byte, len(msg))
	var n int64
	for ctx.Err() == nil {
		t0 := time.Now()
		if t0.After(winEnd) {
			break
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return n, fmt.Errorf("write: %w", err)
		}
		if err := readEcho(ws, msg, buf); err != nil {
			return n, err
		}
		t1 := time.Now()
		if !t0.Before(winStart) && !t1.After(winEnd) {
			n++
			hist.record(i, t1.Sub(t0))
		}
	}
	return n, nil
}

// pacedLoop sends msg rate times per second on a fixed schedule that
// starts at a random phase after start, and measures each round trip from
// its scheduled send time: a late send (because the previous echo was
// late) counts its lateness as latency. It returns the round trips that
// ended in the window.
func pacedLoop(ctx context.Context, ws *websocket.Conn, i int, msg []byte, rate float64, start, winStart, winEnd time.Time, hist *histogram) (int64, error) {
	buf := make([]byte, len(msg))
	interval := time.Duration(float64(time.Second) / rate)
	next := start.Add(time.Duration(rand.Int64N(int64(max(interval, 1)))))
	var n int64
	for !next.After(winEnd) {
		if !sleepUntil(ctx, next) {
			break
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return n, fmt.Errorf("write: %w", err)
		}
		if err := readEcho(ws, msg, buf); err != nil {
			return n, err
		}
		t1 := time.Now()
		if !next.Before(winStart) {
			// Latency for every message scheduled in the window, even one
			// whose echo comes after it; throughput only for those done
			// in it.
			hist.record(i, t1.Sub(next))
			if !t1.After(winEnd) {
				n++
			}
		}
		next = next.Add(interval)
	}
	return n, nil
}
