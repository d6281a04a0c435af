package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxHandshakeErrors stops a handshakes run early: past this many failures
// the figure means nothing and the loop would only hammer a broken server.
const maxHandshakeErrors = 1000

// runHandshakes runs cfg.workers loops of open, one echo, close, and
// counts the cycles that fall inside the measured window.
func runHandshakes(ctx context.Context, cfg *config, res *Result) {
	res.Conns = 0
	res.Workers = cfg.workers
	c := newClient(cfg, holdReadBuffer, holdWriteBuffer, true)
	msg := payload(cfg.size)

	start := time.Now()
	winStart := start.Add(cfg.warmup)
	winEnd := winStart.Add(cfg.duration)
	cpu := watchCPU(ctx, cfg, winStart, winEnd)

	hist := newHistogram(16)
	var next, count atomic.Int64
	var wg sync.WaitGroup
	for w := range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, len(msg))
			for ctx.Err() == nil && res.errorCount() < maxHandshakeErrors {
				t0 := time.Now()
				if t0.After(winEnd) {
					return
				}
				i := int(next.Add(1))
				ws, err := c.dial(ctx, i, cfg.dialTimeout)
				if err != nil {
					res.addError(fmt.Errorf("handshake %d: %w", i, err))
					sleepUntil(ctx, time.Now().Add(10*time.Millisecond))
					continue
				}
				t1 := time.Now()
				err = echoOnce(ws, msg, buf, echoTimeout)
				closeConn(ws, time.Second)
				if err != nil {
					res.addError(fmt.Errorf("handshake %d: echo: %w", i, err))
					continue
				}
				if !t0.Before(winStart) && !time.Now().After(winEnd) {
					count.Add(1)
					hist.record(w, t1.Sub(t0))
				}
			}
		}()
	}
	wg.Wait()

	window := winEnd.Sub(winStart)
	if now := time.Now(); now.Before(winEnd) {
		window = max(now.Sub(winStart), 0)
	}
	res.WindowS = window.Seconds()
	res.Handshakes = count.Load()
	if window > 0 {
		res.HandshakesPS = float64(res.Handshakes) / window.Seconds()
	}
	res.HandshakeTime = hist.summary()
	if use, err := cpu.wait(); err != nil {
		res.fail("sampling CPU times: %v", err)
	} else {
		res.CPUPer1kHandshake = recordCPU(res, cfg, use, res.Handshakes, 1e3)
	}
	if n := res.errorCount(); n > 0 {
		res.fail("%d handshakes failed", n)
	}
	if res.Handshakes == 0 {
		res.fail("no handshake completed in the measured window")
	}
}
