package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the parsed command line.
type config struct {
	mode        string
	url         string   // as given
	urls        []string // the URLs of url, used round-robin
	conns       int
	size        int
	duration    time.Duration
	warmup      time.Duration
	rate        float64
	workers     int
	pids        []int
	backendPIDs []int
	src         []netip.Addr
	insecure    bool
	json        bool
	label       string

	dialConcurrency int
	dialTimeout     time.Duration
	settle          time.Duration
	timeout         time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("wsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var pids, backendPIDs, src string
	fs.StringVar(&c.mode, "mode", "echo", "echo, rate, hold or handshakes")
	fs.StringVar(&c.url, "url", "", "ws:// or wss:// URL; {i} is replaced by the connection index; several URLs separated by spaces are used round-robin (required)")
	fs.IntVar(&c.conns, "conns", 100, fmt.Sprintf("connections (echo, rate, hold; at most %d)", maxConns))
	fs.IntVar(&c.size, "size", 64, "message size in bytes (echo, rate)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time (echo, rate, handshakes)")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured time before the measured one (echo, rate, handshakes)")
	fs.Float64Var(&c.rate, "rate", 100, "messages per second per connection (rate)")
	fs.IntVar(&c.workers, "workers", 16, "concurrent open-echo-close loops (handshakes)")
	fs.StringVar(&pids, "pid", "0", "PID of the proxy to sample RSS and CPU from /proc, with its child processes; a comma-separated list sums several; 0 = none")
	fs.StringVar(&backendPIDs, "backend-pid", "", "PIDs of the backends (comma-separated), sampled for CPU time only, so the CPU used by other processes on the machine can be told apart")
	fs.StringVar(&src, "src", "", "source addresses, FIRST-LAST or one address, used round-robin (e.g. 127.0.0.2-127.0.0.254); empty = the kernel's choice")
	fs.BoolVar(&c.insecure, "insecure", false, "accept any TLS certificate (wss:// with a self-signed one)")
	fs.BoolVar(&c.json, "json", false, "write the result as one JSON object on stdout (the summary goes to stderr)")
	fs.StringVar(&c.label, "label", "", "free text copied into the result (e.g. haproxy/echo64)")
	fs.IntVar(&c.dialConcurrency, "dial-concurrency", 100, "connections being opened at once")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 10*time.Second, "bound on one connection's TCP, TLS and WebSocket handshake")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "idle time before the RSS sample (hold)")
	fs.DurationVar(&c.timeout, "timeout", 0, "bound on the whole run; 0 = derived from the other flags")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	switch c.mode {
	case "echo", "rate", "hold", "handshakes":
	default:
		return nil, fmt.Errorf("-mode %q: want echo, rate, hold or handshakes", c.mode)
	}
	if c.url == "" {
		return nil, errors.New("-url is required")
	}
	c.urls = strings.Fields(c.url)
	for _, raw := range c.urls {
		u, err := url.Parse(strings.ReplaceAll(raw, "{i}", "0"))
		if err != nil {
			return nil, fmt.Errorf("-url: %v", err)
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return nil, fmt.Errorf("-url %q: scheme must be ws or wss", raw)
		}
		if err := checkLoopback(u.Hostname()); err != nil {
			return nil, fmt.Errorf("-url: %v", err)
		}
	}
	if c.conns < 1 || c.conns > maxConns {
		return nil, fmt.Errorf("-conns %d: want 1 to %d", c.conns, maxConns)
	}
	if limit := fdLimit(); limit > 0 && c.conns+100 > limit {
		return nil, fmt.Errorf("-conns %d: the open-file limit is %d; keep 100 spare", c.conns, limit)
	}
	if c.size < 1 || c.size > 16<<20 {
		return nil, fmt.Errorf("-size %d: want 1 byte to 16 MiB", c.size)
	}
	if c.duration <= 0 || c.duration > 10*time.Minute {
		return nil, fmt.Errorf("-duration %s: want more than 0 and at most 10m", c.duration)
	}
	if c.warmup < 0 || c.warmup > time.Minute {
		return nil, fmt.Errorf("-warmup %s: want 0 to 1m", c.warmup)
	}
	if c.mode == "rate" && (c.rate <= 0 || c.rate > 100000) {
		return nil, fmt.Errorf("-rate %g: want more than 0 and at most 100000", c.rate)
	}
	if c.workers < 1 || c.workers > 1000 {
		return nil, fmt.Errorf("-workers %d: want 1 to 1000", c.workers)
	}
	if c.dialConcurrency < 1 || c.dialConcurrency > 1000 {
		return nil, fmt.Errorf("-dial-concurrency %d: want 1 to 1000", c.dialConcurrency)
	}
	if c.dialTimeout <= 0 || c.dialTimeout > time.Minute {
		return nil, fmt.Errorf("-dial-timeout %s: want more than 0 and at most 1m", c.dialTimeout)
	}
	if c.settle < 0 || c.settle > time.Minute {
		return nil, fmt.Errorf("-settle %s: want 0 to 1m", c.settle)
	}
	if c.timeout < 0 || c.timeout > 30*time.Minute {
		return nil, fmt.Errorf("-timeout %s: want 0 to 30m", c.timeout)
	}
	var err error
	if c.pids, err = parsePIDs(pids); err != nil {
		return nil, fmt.Errorf("-pid: %v", err)
	}
	if c.backendPIDs, err = parsePIDs(backendPIDs); err != nil {
		return nil, fmt.Errorf("-backend-pid: %v", err)
	}
	if c.src, err = parseSourceRange(src); err != nil {
		return nil, fmt.Errorf("-src: %v", err)
	}
	return &c, nil
}

// timeBound is how long the whole run may take: the configured timeout, or
// a generous estimate from the other flags.
func (c *config) timeBound() time.Duration {
	if c.timeout > 0 {
		return c.timeout
	}
	// Opening: the connections in waves of dialConcurrency, each wave
	// taking at most a dial timeout, though in practice all of them open in
	// a few seconds; allow a minute plus 10 ms per connection.
	open := time.Minute + time.Duration(c.conns)*10*time.Millisecond
	switch c.mode {
	case "hold":
		// warm-up, open, settle, verify, close.
		return open + c.settle + 2*time.Minute
	default:
		return open + c.warmup + c.duration + time.Minute
	}
}

// checkLoopback refuses targets off this machine: the load generator is
// for loopback only.
func checkLoopback(host string) error {
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("host %q: give a loopback IP address or localhost", host)
	}
	if !ip.IsLoopback() {
		return fmt.Errorf("host %q is not a loopback address; wsbench only loads this machine", host)
	}
	return nil
}

func parsePIDs(s string) ([]int, error) {
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" || f == "0" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid < 1 {
			return nil, fmt.Errorf("%q is not a PID", f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// parseSourceRange parses "A-B" (IPv4, same /24 or not) or one address
// into the list of addresses from A to B.
func parseSourceRange(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	first, last, isRange := strings.Cut(s, "-")
	a, err := netip.ParseAddr(strings.TrimSpace(first))
	if err != nil {
		return nil, err
	}
	b := a
	if isRange {
		if b, err = netip.ParseAddr(strings.TrimSpace(last)); err != nil {
			return nil, err
		}
	}
	if !a.IsLoopback() || !b.IsLoopback() {
		return nil, fmt.Errorf("%q: source addresses must be loopback addresses", s)
	}
	if a.Is4() != b.Is4() || b.Less(a) {
		return nil, fmt.Errorf("%q: not a range from low to high", s)
	}
	var out []netip.Addr
	for ip := a; ; ip = ip.Next() {
		out = append(out, ip)
		if ip == b {
			break
		}
		if len(out) > 1<<16 {
			return nil, fmt.Errorf("%q: more than 65536 addresses", s)
		}
	}
	return out, nil
}

// fdLimit returns this process's open-file limit, raised to the hard limit
// if it can be (the Go runtime does this at start already), or 0 if it
// cannot be read.
func fdLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return int(min(rl.Cur, 1<<30))
}

// hostIsLoopback reports whether addr (host:port) names a loopback host;
// the dialer uses it as a last check before connecting.
func hostIsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return checkLoopback(host) == nil
}
