package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

const (
	// holdWarmup is how many connections open, echo and close before the
	// baseline sample, so one-time allocations (pools, first buffers,
	// worker start-up) are not charged to the held connections.
	holdWarmup = 200

	// holdReadBuffer and holdWriteBuffer keep the client's own memory per
	// idle connection small; writes borrow their buffer from a pool.
	holdReadBuffer  = 1024
	holdWriteBuffer = 1024

	// holdMessage is the size of the message each held connection echoes
	// at the end.
	holdMessage = 32
)

// runHold opens cfg.conns idle connections, measures the proxy's RSS
// before and after, then checks each connection still echoes.
func runHold(ctx context.Context, cfg *config, res *Result) {
	res.Size = holdMessage
	c := newClient(cfg, holdReadBuffer, holdWriteBuffer, true)
	msg := payload(holdMessage)

	// Warm up: the proxy's first connections pay for things every later
	// one shares.
	warm := openAll(ctx, cfg, c, cfg.conns, min(holdWarmup, cfg.conns), res)
	forEach(warm, cfg.dialConcurrency, func(i int, ws *websocket.Conn) {
		buf := make([]byte, len(msg))
		if err := echoOnce(ws, msg, buf, echoTimeout); err != nil {
			res.addError(fmt.Errorf("warm-up connection %d: %w", i, err))
		}
	})
	closeAll(warm, cfg.dialConcurrency)
	if n := res.errorCount(); n > 0 {
		res.fail("warm-up: %d connections failed", n)
		return
	}
	// Let the closes finish and the proxy free what they held.
	if !sleepUntil(ctx, time.Now().Add(min(2*time.Second, cfg.settle))) {
		return
	}

	var before procSample
	if len(cfg.pids) > 0 {
		var err error
		if before, err = sampleSteady(ctx, cfg.pids); err != nil {
			res.fail("sampling the proxy: %v", err)
			return
		}
		res.BaselineRSSKiB = before.RSSKiB
	}

	t0 := time.Now()
	conns := openAll(ctx, cfg, c, 0, cfg.conns, res)
	defer closeAll(conns, cfg.dialConcurrency)
	res.OpenS = time.Since(t0).Seconds()
	res.Opened = len(conns)
	if len(conns) < cfg.conns {
		res.fail("opened %d of %d connections", len(conns), cfg.conns)
	}
	if len(conns) == 0 {
		return
	}

	if !sleepUntil(ctx, time.Now().Add(cfg.settle)) {
		return
	}
	if len(cfg.pids) > 0 {
		after, err := sampleSteady(ctx, cfg.pids)
		if err != nil {
			res.fail("sampling the proxy: %v", err)
			return
		}
		res.LoadedRSSKiB = after.RSSKiB
		res.Procs = after.Procs
		res.RSSPerConnKiB = float64(after.RSSKiB-before.RSSKiB) / float64(len(conns))
	}

	// Every connection must still work after sitting idle.
	var verified atomic.Int64
	forEach(conns, cfg.dialConcurrency, func(i int, ws *websocket.Conn) {
		if ctx.Err() != nil {
			return
		}
		buf := make([]byte, len(msg))
		if err := echoOnce(ws, msg, buf, echoTimeout); err != nil {
			res.addError(fmt.Errorf("held connection %d: %w", i, err))
			return
		}
		verified.Add(1)
	})
	res.Verified = int(verified.Load())
	if len(cfg.pids) > 0 {
		if s, err := sampleTree(cfg.pids); err == nil {
			res.ProxyCPUS = s.CPUSeconds - before.CPUSeconds
		}
	}
	if res.Verified < len(conns) {
		res.fail("%d of %d held connections did not echo", len(conns)-res.Verified, len(conns))
	}
}
