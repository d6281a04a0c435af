// Command wsbench is wsproxy's WebSocket load generator. It drives a
// WebSocket echo server (directly, or through a proxy) in one of four modes
// and reports throughput, round-trip latency (HDR histogram) and, when
// given the proxy's PID, the proxy's RSS and CPU time from /proc.
//
//	wsbench -mode echo       -url ws://127.0.0.1:8080/ws?room={i} -conns 100 -size 64 -duration 10s
//	wsbench -mode rate       -url ... -conns 100 -rate 100 -duration 5s
//	wsbench -mode hold       -url ... -conns 9000 -src 127.0.0.2-127.0.0.254 -pid 1234
//	wsbench -mode handshakes -url wss://... -workers 16 -duration 5s -insecure
//
// Modes:
//
//   - echo: N connections in a closed loop (send, wait for the echo, send
//     again) with messages of -size bytes for -duration: messages/s and
//     round-trip p50/p90/p99/p99.9.
//   - rate: each connection sends -rate messages per second on a fixed
//     schedule; latency is measured from the scheduled send time, so a
//     stalled server is not hidden (no coordinated omission).
//   - hold: open N connections and leave them idle; report the proxy's RSS
//     growth per connection, then check that every connection still echoes.
//   - handshakes: -workers loops of open, one echo, close: handshakes/s.
//
// In the URL, {i} is replaced by the connection index (or the handshake
// number), so a proxy hashing on a query parameter spreads the connections.
//
// With -json the result is one JSON object on stdout and the human summary
// goes to stderr. The exit status is 0 when the run met its own checks, 1
// when it did not (connection errors, fewer connections than asked, failed
// echoes), 2 for bad flags and 3 when the run overran its time bound.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// maxConns bounds -conns: every connection costs this process one file
// descriptor, and the machines cap a process at 20,000.
const maxConns = 9500

func main() {
	log.SetFlags(0)
	log.SetPrefix("wsbench: ")
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, runs one benchmark and writes its result. It returns the
// process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "wsbench: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The run bounds itself: every phase watches ctx, and a watchdog ends
	// the process if something still hangs past the bound.
	bound := cfg.timeBound()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	watchdog := time.AfterFunc(bound+15*time.Second, func() {
		fmt.Fprintf(stderr, "wsbench: still running %s after the %s bound; exiting\n", bound+15*time.Second, bound)
		os.Exit(3)
	})
	defer watchdog.Stop()

	res := runMode(ctx, cfg)
	if ctx.Err() != nil && res.Error == "" {
		res.fail("run cut short: %v", context.Cause(ctx))
	}

	summary := stdout
	if cfg.json {
		summary = stderr
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "wsbench: write JSON: %v\n", err)
			return 1
		}
	}
	res.writeSummary(summary)
	if !res.OK {
		return 1
	}
	return 0
}

// runMode runs the benchmark cfg asks for and fills in the common figures.
func runMode(ctx context.Context, cfg *config) *Result {
	res := &Result{
		Label:       cfg.label,
		Mode:        cfg.mode,
		URL:         cfg.url,
		Conns:       cfg.conns,
		Size:        cfg.size,
		DurationS:   cfg.duration.Seconds(),
		PIDs:        cfg.pids,
		GOMAXPROCS:  runtime.GOMAXPROCS(0),
		MachineCPUs: runtime.NumCPU(),
		Started:     time.Now().UTC().Format(time.RFC3339),
		OK:          true,
	}
	start := time.Now()
	switch cfg.mode {
	case "echo":
		runEcho(ctx, cfg, res, false)
	case "rate":
		runEcho(ctx, cfg, res, true)
	case "hold":
		runHold(ctx, cfg, res)
	case "handshakes":
		runHandshakes(ctx, cfg, res)
	}
	res.ElapsedS = time.Since(start).Seconds()
	if self, err := sampleSelf(); err == nil {
		res.ClientRSSKiB = self.RSSKiB
		res.ClientCPUS = self.CPUSeconds
	}
	return res
}
