// Command report turns the JSON lines that bench/compare.sh collects (one
// wsbench result per line, plus note lines) into a Markdown report and an
// SVG bar chart.
//
//	report -runs runs.jsonl -md latest.md -svg latest.svg -cmd "bench/compare.sh"
//
// Every line is a JSON object with a "label" TARGET/RUN/rROUND (older files:
// TARGET/RUN, read as round 1). RUN is one of compare.sh's measurement
// names (holdN, wss_holdN, echo64, echo4k_c1000, wss_echo64, rate, hs_ws,
// hs_wss, syscalls, ...) for a wsbench result, or "note" ({"note": text}),
// "version" ({"note": text}), "config" ({"note": how the target was
// configured}) or "status" ({"error": text} when the target could not run
// that round).
//
// Each figure is summarised over the rounds as the median with the min–max
// range, and wsproxy's ratio to each peer is taken per round (the two ran
// back to back, so they saw the same machine) and then summarised the same
// way.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("report: ")
	runs := flag.String("runs", "", "JSON lines file written by compare.sh (required)")
	md := flag.String("md", "", "Markdown file to write")
	svg := flag.String("svg", "", "SVG file to write")
	cmd := flag.String("cmd", "", "the command that produced the runs, for the report")
	params := flag.String("params", "", "a line describing the run parameters, for the report")
	source := flag.String("source", "", "the name of the runs file to cite in the report (default: -runs)")
	flag.Parse()
	if *runs == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	rep, err := load(*runs)
	if err != nil {
		log.Fatal(err)
	}
	rep.command = *cmd
	rep.params = *params
	rep.source = *source
	if rep.source == "" {
		rep.source = *runs
	}
	if *md != "" {
		if err := os.WriteFile(*md, []byte(rep.markdown()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if *svg != "" {
		if err := os.WriteFile(*svg, []byte(rep.svg()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// run is the part of a wsbench result the report reads, or a note line.
type run struct {
	Label  string   `json:"label"`
	Mode   string   `json:"mode"`
	OK     bool     `json:"ok"`
	Error  string   `json:"error"`
	Errors int64    `json:"errors"`
	Note   string   `json:"note"`
	Conns  int      `json:"conns"`
	Size   int      `json:"size"`
	Sample []string `json:"error_sample"`

	MsgsPerSec     float64  `json:"msgs_per_sec"`
	TargetMsgsPS   float64  `json:"target_msgs_per_sec"`
	Messages       int64    `json:"messages"`
	Latency        *latency `json:"rtt"`
	Opened         int      `json:"opened"`
	Verified       int      `json:"verified"`
	RSSPerConnKiB  float64  `json:"rss_per_conn_kib"`
	BaselineRSSKiB int64    `json:"baseline_rss_kib"`
	LoadedRSSKiB   int64    `json:"loaded_rss_kib"`
	Procs          int      `json:"procs"`
	HandshakesPS   float64  `json:"handshakes_per_sec"`
	Workers        int      `json:"workers"`
	CPUPer100k     float64  `json:"cpu_s_per_100k_msgs"`
	CPUPer1kHS     float64  `json:"cpu_s_per_1k_handshakes"`
	ClientCPUS     float64  `json:"client_cpu_s"`
	WindowS        float64  `json:"window_s"`
	MachineCPUs    int      `json:"machine_cpus"`
	MachineBusy    float64  `json:"machine_busy_cpu_s"`
	ProxyCPUS      float64  `json:"proxy_cpu_s"`
	BackendCPUS    float64  `json:"backend_cpu_s"`
	ClientWinCPUS  float64  `json:"client_window_cpu_s"`
	OtherCPUS      *float64 `json:"other_cpu_s"` // absent in files from before it existed
	StealCPUS      float64  `json:"steal_cpu_s"`
	Strace         *strace  `json:"strace"`

	round int
}

// strace is what compare.sh read from `strace -c` during a syscalls run.
type strace struct {
	ReadCalls  float64 `json:"read_calls"`
	ReadErrors float64 `json:"read_errors"`
	WriteCalls float64 `json:"write_calls"`
	EpollWaits float64 `json:"epoll_waits"`
	Syscalls   float64 `json:"syscalls"`
}

// forwarded is the number of messages the proxy forwarded in a syscalls
// run: each round trip is one message each way.
func (r *run) forwarded() float64 { return 2 * float64(r.Messages) }

// perMsg returns n per forwarded message, or 0 when r has no strace counts.
func (r *run) perMsg(n func(*strace) float64) float64 {
	if r.Strace == nil || r.Messages == 0 {
		return 0
	}
	return n(r.Strace) / r.forwarded()
}

// cpuShares returns the CPU the proxy, the backends, the load generator
// and everything else used in r's window, each as a share of the machine
// (window × cores); ok=false when r did not measure them.
func (r *run) cpuShares() (proxy, backends, client, other, steal float64, ok bool) {
	if r.MachineBusy == 0 || r.WindowS == 0 || r.MachineCPUs == 0 || r.OtherCPUS == nil {
		return 0, 0, 0, 0, 0, false
	}
	c := r.WindowS * float64(r.MachineCPUs)
	return r.ProxyCPUS / c, r.BackendCPUS / c, r.ClientWinCPUS / c, *r.OtherCPUS / c, r.StealCPUS / c, true
}

type latency struct {
	P50US  float64 `json:"p50_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p999_us"`
}

// target is everything recorded for one proxy (or the direct path).
type target struct {
	name    string
	version string
	config  string
	status  map[int]string // round → why the target did not run
	notes   []string
	runs    map[string]map[int]*run // kind → round → result
}

type report struct {
	targets []*target
	kinds   []string // measurement names in the order they first ran
	rounds  int
	command string
	params  string
	source  string
}

func load(path string) (*report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rep := &report{}
	byName := map[string]*target{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var r run
		if err := json.Unmarshal([]byte(text), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		parts := strings.Split(r.Label, "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("%s:%d: label %q is not TARGET/RUN[/rROUND]", path, line, r.Label)
		}
		name, kind := parts[0], parts[1]
		r.round = 1
		if len(parts) == 3 {
			n, err := strconv.Atoi(strings.TrimPrefix(parts[2], "r"))
			if err != nil || n < 1 || !strings.HasPrefix(parts[2], "r") {
				return nil, fmt.Errorf("%s:%d: label %q: round %q is not rN", path, line, r.Label, parts[2])
			}
			r.round = n
		}
		t := byName[name]
		if t == nil {
			t = &target{name: name, status: map[int]string{}, runs: map[string]map[int]*run{}}
			byName[name] = t
			rep.targets = append(rep.targets, t)
		}
		switch kind {
		case "note":
			// Start-up notes repeat every time a target starts; keep one.
			if !slices.Contains(t.notes, r.Note) {
				t.notes = append(t.notes, r.Note)
			}
		case "version":
			t.version = r.Note
		case "config":
			t.config = r.Note
		case "status":
			t.status[r.round] = r.Error
		default:
			if t.runs[kind] == nil {
				t.runs[kind] = map[int]*run{}
			}
			rr := r
			t.runs[kind][r.round] = &rr
			if !slices.Contains(rep.kinds, kind) {
				rep.kinds = append(rep.kinds, kind)
			}
		}
		rep.rounds = max(rep.rounds, r.round)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rep.targets) == 0 {
		return nil, errors.New(path + ": no runs")
	}
	return rep, nil
}

func (rep *report) target(name string) *target {
	for _, t := range rep.targets {
		if t.name == name {
			return t
		}
	}
	return nil
}

// ran reports whether t produced any result at all.
func (t *target) ran() bool { return len(t.runs) > 0 }

// notRun is why t did not run at all, or "" if it ran in some round.
func (t *target) notRun() string {
	if t.ran() || len(t.status) == 0 {
		return ""
	}
	var reasons []string
	for _, rd := range sortedKeys(t.status) {
		if s := t.status[rd]; !slices.Contains(reasons, s) {
			reasons = append(reasons, s)
		}
	}
	return strings.Join(reasons, "; ")
}

func sortedKeys[V any](m map[int]V) []int {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// figure is one figure of one measurement: a row of the tables.
type figure struct {
	kind   string
	title  string
	unit   string
	lower  bool // lower is better
	format string
	value  func(*run) float64 // NaN when r does not have it
}

var nan = math.NaN()

// nz treats 0 as "not measured": wsbench leaves out fields it has no value
// for.
func nz(v float64) float64 {
	if v == 0 {
		return nan
	}
	return v
}

func p99(r *run) float64 {
	if r.Latency == nil {
		return nan
	}
	return nz(r.Latency.P99US)
}

func p50(r *run) float64 {
	if r.Latency == nil {
		return nan
	}
	return nz(r.Latency.P50US)
}

var (
	holdRE = regexp.MustCompile(`^(wss_)?hold(\d*)$`)
	echoRE = regexp.MustCompile(`^(wss_)?echo(64|4k)(?:_c(\d+))?$`)
)

// describe names a measurement for the tables.
func describe(kind string) string {
	if m := holdRE.FindStringSubmatch(kind); m != nil {
		s := "idle"
		if m[2] != "" {
			s = m[2] + " idle"
		}
		if m[1] != "" {
			return s + " wss:// conns"
		}
		return s + " conns"
	}
	if m := echoRE.FindStringSubmatch(kind); m != nil {
		size := map[string]string{"64": "64 B", "4k": "4 KiB"}[m[2]]
		conns := m[3]
		if conns == "" {
			conns = "100"
		}
		s := "echo " + size + ", " + conns + " conns"
		if m[1] != "" {
			s += ", wss://"
		}
		return s
	}
	switch kind {
	case "rate":
		return "fixed rate, 64 B, 100 conns"
	case "hs_ws":
		return "handshakes ws://"
	case "hs_wss":
		return "handshakes wss://"
	case "syscalls":
		return "strace -c under 64 B echo"
	}
	return kind
}

// figuresOf returns the figures a measurement yields; mode is the wsbench
// mode of its runs, for names this report does not know.
func figuresOf(kind, mode string) []figure {
	d := describe(kind)
	rss := figure{kind, d + ": idle RSS per connection", "KiB", true, "%.2f", func(r *run) float64 { return nz(r.RSSPerConnKiB) }}
	msgs := figure{kind, d + ": msg/s", "msg/s", false, "%.0f", func(r *run) float64 { return nz(r.MsgsPerSec) }}
	cpu := figure{kind, d + ": proxy CPU-s per 100k round trips", "CPU-s", true, "%.3f", func(r *run) float64 { return nz(r.CPUPer100k) }}
	lat99 := figure{kind, d + ": p99 µs", "µs", true, "%.0f", p99}
	lat50 := figure{kind, d + ": p50 µs", "µs", true, "%.0f", p50}
	hs := figure{kind, d + ": per second", "/s", false, "%.0f", func(r *run) float64 { return nz(r.HandshakesPS) }}
	hsCPU := figure{kind, d + ": proxy CPU-s per 1k handshakes", "CPU-s", true, "%.3f", func(r *run) float64 { return nz(r.CPUPer1kHS) }}
	switch {
	case holdRE.MatchString(kind):
		return []figure{rss}
	case kind == "echo64":
		return []figure{msgs, cpu, lat50, lat99}
	case echoRE.MatchString(kind):
		return []figure{msgs, cpu}
	case kind == "rate":
		return []figure{lat50, lat99}
	case kind == "syscalls":
		per := func(title string, n func(*strace) float64, format string) figure {
			return figure{kind, title, "", true, format, func(r *run) float64 {
				if r.Strace == nil || r.Messages == 0 {
					return nan
				}
				return r.perMsg(n)
			}}
		}
		return []figure{
			per("read syscalls per forwarded message", func(s *strace) float64 { return s.ReadCalls }, "%.2f"),
			per("reads that failed (EAGAIN) per forwarded message", func(s *strace) float64 { return s.ReadErrors }, "%.2f"),
			per("write syscalls per forwarded message", func(s *strace) float64 { return s.WriteCalls }, "%.2f"),
			per("syscalls per forwarded message", func(s *strace) float64 { return s.Syscalls }, "%.2f"),
			{kind, "syscalls per epoll wait", "", false, "%.1f", func(r *run) float64 {
				if r.Strace == nil || r.Strace.EpollWaits == 0 {
					return nan
				}
				return r.Strace.Syscalls / r.Strace.EpollWaits
			}},
		}
	}
	switch mode {
	case "hold":
		return []figure{rss}
	case "echo":
		return []figure{msgs, cpu}
	case "rate":
		return []figure{lat50, lat99}
	case "handshakes":
		return []figure{hs, hsCPU}
	}
	return nil
}

// allFigures is every figure of every measurement, in run order.
func (rep *report) allFigures() []figure {
	var out []figure
	for _, kind := range rep.kinds {
		mode := ""
		for _, t := range rep.targets {
			for _, r := range t.runs[kind] {
				mode = r.Mode
			}
		}
		if kind == "hs_ws" || kind == "hs_wss" {
			mode = "handshakes"
		}
		out = append(out, figuresOf(kind, mode)...)
	}
	return out
}

// stat summarises a figure over rounds.
type stat struct {
	vals   []float64 // the good values, in round order
	failed int       // rounds whose run failed
	fail   string    // the first failure
}

func (s stat) ok() bool { return len(s.vals) > 0 }

func (s stat) min() float64 { return slices.Min(s.vals) }
func (s stat) max() float64 { return slices.Max(s.vals) }

func (s stat) median() float64 {
	v := slices.Clone(s.vals)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// format is "median (min–max)", or the one value, and how many rounds
// failed.
func (s stat) format(format, suffix string) string {
	if !s.ok() {
		if s.failed > 0 {
			return "fail: " + shorten(s.fail)
		}
		return "—"
	}
	out := fmt.Sprintf(format, s.median()) + suffix
	if len(s.vals) > 1 {
		out += fmt.Sprintf(" ("+format+"–"+format+")", s.min(), s.max())
	}
	if s.failed > 0 {
		out += fmt.Sprintf(" [%d failed: %s]", s.failed, shorten(s.fail))
	}
	return out
}

// stat collects f over t's rounds. A run that did not pass its own checks
// (errors, connections missing) is left out of the figures and counted.
func (t *target) stat(f figure) stat {
	var s stat
	rs := t.runs[f.kind]
	for _, rd := range sortedKeys(rs) {
		r := rs[rd]
		if !r.OK {
			s.failed++
			if s.fail == "" {
				s.fail = fmt.Sprintf("round %d: %s", rd, r.Error)
			}
			continue
		}
		if v := f.value(r); !math.IsNaN(v) {
			s.vals = append(s.vals, v)
		}
	}
	return s
}

// pair combines a's and b's figure round by round (both must have it that
// round): a ÷ b for ratios, a − b for differences.
func pair(f figure, a, b *target, op func(x, y float64) float64) stat {
	var s stat
	if a == nil || b == nil {
		return s
	}
	for _, rd := range sortedKeys(a.runs[f.kind]) {
		ra, rb := a.runs[f.kind][rd], b.runs[f.kind][rd]
		if rb == nil || !ra.OK || !rb.OK {
			continue
		}
		x, y := f.value(ra), f.value(rb)
		if math.IsNaN(x) || math.IsNaN(y) || y == 0 {
			continue
		}
		s.vals = append(s.vals, op(x, y))
	}
	return s
}

func div(x, y float64) float64 { return x / y }
func sub(x, y float64) float64 { return x - y }

func shorten(s string) string {
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 70 {
		s = s[:67] + "..."
	}
	return s
}

var peers = []string{"haproxy", "nginx", "caddy"}

// bestPeer is the peer with the best median of f.
func (rep *report) bestPeer(f figure) (*target, bool) {
	var best *target
	var bv float64
	for _, name := range peers {
		t := rep.target(name)
		if t == nil {
			continue
		}
		s := t.stat(f)
		if !s.ok() {
			continue
		}
		v := s.median()
		if best == nil || (f.lower && v < bv) || (!f.lower && v > bv) {
			best, bv = t, v
		}
	}
	return best, best != nil
}

// figureOf finds the figure of kind whose title ends in suffix.
func (rep *report) figureOf(kind, suffix string) (figure, bool) {
	for _, f := range rep.allFigures() {
		if f.kind == kind && strings.HasSuffix(f.title, suffix) {
			return f, true
		}
	}
	return figure{}, false
}

// largestHold is the ws (or, with wss, the wss) hold run with the most
// connections, the headline's idle-memory figure.
func (rep *report) largestHold(wss bool) string {
	best, bestN := "", -1
	for _, k := range rep.kinds {
		m := holdRE.FindStringSubmatch(k)
		if m == nil || (m[1] != "") != wss {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		if n > bestN {
			best, bestN = k, n
		}
	}
	return best
}

// ran returns the targets with at least one result.
func (rep *report) ran() []*target {
	var out []*target
	for _, t := range rep.targets {
		if t.ran() {
			out = append(out, t)
		}
	}
	return out
}

func (rep *report) markdown() string {
	var b strings.Builder
	b.WriteString("# wsproxy and its peers, side by side\n\n")
	fmt.Fprintf(&b, "Generated by `bench/report` from `%s` (every wsbench result in full). Command: `%s`.\n", rep.source, rep.command)
	if rep.params != "" {
		fmt.Fprintf(&b, "Parameters: %s.\n", rep.params)
	}
	fmt.Fprintf(&b, "\n%d round(s). Every figure is the median over the rounds with the min–max range in\n"+
		"parentheses; a run that failed its own checks is left out and counted as failed.\n"+
		"All processes share one machine: the load generator, the proxy and the two echo\n"+
		"backends compete for the same cores, so compare the ratios below (taken round by\n"+
		"round, each proxy right after the other), not absolute figures across runs.\n"+
		"See bench/README.md for what each figure means.\n\n", rep.rounds)

	rep.writeHeadline(&b)
	rep.writeRatios(&b)
	rep.writeTargets(&b)
	rep.writeAll(&b)
	rep.writeCPU(&b)

	b.WriteString("\n## Configuration\n\n")
	for _, t := range rep.targets {
		if t.config != "" {
			fmt.Fprintf(&b, "- **%s**: %s\n", t.name, t.config)
		}
	}

	b.WriteString("\n## Versions and notes\n\n")
	for _, t := range rep.targets {
		fmt.Fprintf(&b, "- **%s**", t.name)
		if t.version != "" {
			fmt.Fprintf(&b, " (%s)", t.version)
		}
		if s := t.notRun(); s != "" {
			fmt.Fprintf(&b, ": not run: %s", s)
		}
		b.WriteString("\n")
		for _, n := range t.notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
		if t.ran() {
			for _, rd := range sortedKeys(t.status) {
				fmt.Fprintf(&b, "  - round %d: not run: %s\n", rd, t.status[rd])
			}
		}
	}

	rep.writeRuns(&b)

	b.WriteString("\n## Machine\n\n")
	fmt.Fprintf(&b, "- nproc: %s\n", strings.TrimSpace(output("nproc")))
	fmt.Fprintf(&b, "- CPU: %s\n", cpuModel())
	fmt.Fprintf(&b, "- kernel: %s\n", strings.TrimSpace(output("uname", "-sr")))
	fmt.Fprintf(&b, "- memory: %s\n", memTotal())
	fmt.Fprintf(&b, "- open-file limit per process: %s\n", strings.TrimSpace(output("sh", "-c", "ulimit -n")))
	fmt.Fprintf(&b, "- Go (wsproxy, wsbench): %s\n", runtime.Version())
	fmt.Fprintf(&b, "- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- command: `%s`\n", rep.command)
	return b.String()
}

// column is one column of the headline table.
type column struct {
	header string
	cell   func(*target) string
}

func (rep *report) writeHeadline(b *strings.Builder) {
	var cols []column
	add := func(header, kind, suffix string) {
		f, ok := rep.figureOf(kind, suffix)
		if !ok {
			return
		}
		cols = append(cols, column{header, func(t *target) string { return t.stat(f).format(f.format, "") }})
	}
	if k := rep.largestHold(false); k != "" {
		add("idle RSS KiB/conn, "+describe(k), k, "idle RSS per connection")
	}
	if k := rep.largestHold(true); k != "" {
		add("idle RSS KiB/conn, "+describe(k), k, "idle RSS per connection")
	}
	add("echo msg/s 64 B", "echo64", ": msg/s")
	add("echo msg/s 4 KiB", "echo4k", ": msg/s")
	if f, ok := rep.figureOf("rate", ": p99 µs"); ok {
		d := rep.target("direct")
		header := "p99 µs at fixed rate"
		if d != nil && d.ran() {
			header += " (added over direct)"
		}
		cols = append(cols, column{header, func(t *target) string {
			s := t.stat(f).format(f.format, "")
			if t.name != "direct" {
				if a := pair(f, t, d, sub); a.ok() {
					s += fmt.Sprintf("; %+.0f", a.median())
				}
			}
			return s
		}})
	}
	add("handshakes/s ws://", "hs_ws", ": per second")
	add("handshakes/s wss://", "hs_wss", ": per second")
	add("CPU-s per 100k msgs 64 B", "echo64", "per 100k round trips")
	add("CPU-s per 100k msgs 64 B wss://", "wss_echo64", "per 100k round trips")
	add("reads per forwarded msg", "syscalls", "read syscalls per forwarded message")
	cols = append(cols, column{"everything else's CPU, % of machine", func(t *target) string {
		return t.cpu(func(_, _, _, other, _ float64) float64 { return other }).format("%.0f", "%")
	}})

	b.WriteString("| proxy |")
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", c.header)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(cols)) + "\n")
	for _, t := range rep.targets {
		if s := t.notRun(); s != "" {
			fmt.Fprintf(b, "| %s | not run: %s |%s\n", t.name, shorten(s), strings.Repeat("|", len(cols)-1))
			continue
		}
		fmt.Fprintf(b, "| %s |", t.name)
		for _, c := range cols {
			fmt.Fprintf(b, " %s |", c.cell(t))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nThe last column is the CPU time the machine spent (user, nice, system, irq and\n" +
		"softirq from /proc/stat) less what the proxy, the two backends and the load\n" +
		"generator were charged, over each measured window, as a share of the machine\n" +
		"(window × cores): the CPU that other work on the machine took while this target\n" +
		"was measured. It is signed, not clamped: process times are sampled at the 10 ms\n" +
		"tick, so a quiet machine reads a few % either side of 0; well above that, the row\n" +
		"competed with other work and is disadvantaged. The split of the measured\n" +
		"processes is in \"Where the CPU went\" below.\n")
}

// writeRatios writes wsproxy ÷ each peer, per round, for every figure.
func (rep *report) writeRatios(b *strings.Builder) {
	w := rep.target("wsproxy")
	if w == nil || !w.ran() {
		return
	}
	var ps []*target
	for _, name := range peers {
		if t := rep.target(name); t != nil && t.ran() {
			ps = append(ps, t)
		}
	}
	if len(ps) == 0 {
		return
	}
	b.WriteString("\n## wsproxy ÷ each peer\n\nEach ratio is taken within a round (the two ran back to back), then summarised\n" +
		"over the rounds as median (min–max). Above 1 means wsproxy's figure is higher:\n" +
		"better for rates, worse where lower is better (marked ↓).\n\n| figure |")
	for _, p := range ps {
		fmt.Fprintf(b, " wsproxy ÷ %s |", p.name)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(ps)) + "\n")
	for _, f := range rep.allFigures() {
		cells := make([]string, len(ps))
		any := false
		for i, p := range ps {
			s := pair(f, w, p, div)
			cells[i] = s.format("%.2f", "×")
			any = any || s.ok()
		}
		if !any {
			continue
		}
		title := f.title
		if f.lower {
			title += " ↓"
		}
		fmt.Fprintf(b, "| %s | %s |\n", title, strings.Join(cells, " | "))
	}
}

// writeAll writes every figure of every target.
func (rep *report) writeAll(b *strings.Builder) {
	ts := rep.ran()
	b.WriteString("\n## Every figure\n\nMedian (min–max) over the rounds; ↓ lower is better.\n\n| figure |")
	for _, t := range ts {
		fmt.Fprintf(b, " %s |", t.name)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(ts)) + "\n")
	for _, f := range rep.allFigures() {
		title := f.title
		if f.lower {
			title += " ↓"
		}
		fmt.Fprintf(b, "| %s |", title)
		for _, t := range ts {
			fmt.Fprintf(b, " %s |", t.stat(f).format(f.format, ""))
		}
		b.WriteString("\n")
	}
	// Flatness of idle memory: the smaller hold against the larger, per
	// round (each hold ran on a fresh process).
	for _, wss := range []bool{false, true} {
		small, large := rep.holdPair(wss)
		if small == "" {
			continue
		}
		fs, _ := rep.figureOf(small, "idle RSS per connection")
		fl, _ := rep.figureOf(large, "idle RSS per connection")
		fmt.Fprintf(b, "| flatness: KiB/conn at %s ÷ at %s (1.00 is flat) |", describe(small), describe(large))
		for _, t := range ts {
			fmt.Fprintf(b, " %s |", holdRatio(t, fs, fl).format("%.2f", ""))
		}
		b.WriteString("\n")
	}
}

// holdPair returns the smallest and largest hold runs (ws or wss), if
// there are two.
func (rep *report) holdPair(wss bool) (string, string) {
	small, large := "", ""
	sn, ln := 0, 0
	for _, k := range rep.kinds {
		m := holdRE.FindStringSubmatch(k)
		if m == nil || (m[1] != "") != wss || m[2] == "" {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		if small == "" || n < sn {
			small, sn = k, n
		}
		if large == "" || n > ln {
			large, ln = k, n
		}
	}
	if small == large {
		return "", ""
	}
	return small, large
}

// holdRatio is t's figure fs ÷ its figure fl, round by round.
func holdRatio(t *target, fs, fl figure) stat {
	var s stat
	for _, rd := range sortedKeys(t.runs[fs.kind]) {
		a, c := t.runs[fs.kind][rd], t.runs[fl.kind][rd]
		if c == nil || !a.OK || !c.OK {
			continue
		}
		x, y := fs.value(a), fl.value(c)
		if !math.IsNaN(x) && !math.IsNaN(y) && y != 0 {
			s.vals = append(s.vals, x/y)
		}
	}
	return s
}

// cpu summarises one of the CPU shares over every measured window of t
// (echo, rate and handshakes runs), in percent.
func (t *target) cpu(pick func(proxy, backends, client, other, steal float64) float64) stat {
	var s stat
	for _, rs := range t.runs {
		for _, r := range rs {
			if p, bk, c, o, st, ok := r.cpuShares(); ok {
				s.vals = append(s.vals, 100*pick(p, bk, c, o, st))
			}
		}
	}
	return s
}

func (rep *report) writeCPU(b *strings.Builder) {
	b.WriteString("\n## Where the CPU went\n\n" +
		"Over every measured window of a target (echo, rate, handshakes; all rounds), the CPU\n" +
		"each party was charged as a share of the machine (window × cores), median (min–max):\n" +
		"the proxy (all its processes), the two echo backends, the load generator (wsbench),\n" +
		"everything else (the machine's busy time less those three: other engineers' builds and\n" +
		"tests, and the kernel's loopback work not charged to any of them), and steal (time the\n" +
		"hypervisor gave to other guests).\n\n" +
		"| proxy | proxy % | backends % | load generator % | everything else % | steal % |\n|---|---|---|---|---|---|\n")
	for _, t := range rep.ran() {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", t.name,
			t.cpu(func(p, _, _, _, _ float64) float64 { return p }).format("%.0f", ""),
			t.cpu(func(_, bk, _, _, _ float64) float64 { return bk }).format("%.0f", ""),
			t.cpu(func(_, _, c, _, _ float64) float64 { return c }).format("%.0f", ""),
			t.cpu(func(_, _, _, o, _ float64) float64 { return o }).format("%+.0f", ""),
			t.cpu(func(_, _, _, _, st float64) float64 { return st }).format("%.0f", ""))
	}
}

func (rep *report) writeRuns(b *strings.Builder) {
	b.WriteString("\n## Every run\n\n| run | ok | figures | CPU % of machine: proxy / backends / load generator / everything else | errors |\n|---|---|---|---|---|\n")
	for _, t := range rep.targets {
		for _, kind := range rep.kinds {
			rs := t.runs[kind]
			for _, rd := range sortedKeys(rs) {
				r := rs[rd]
				ok := "yes"
				if !r.OK {
					ok = "no: " + shorten(r.Error)
				}
				errs := "0"
				if r.Errors > 0 {
					errs = fmt.Sprintf("%d: %s", r.Errors, shorten(strings.Join(r.Sample, "; ")))
				}
				cpu := "—"
				if p, bk, c, o, _, okc := r.cpuShares(); okc {
					cpu = fmt.Sprintf("%.0f / %.0f / %.0f / %+.0f", 100*p, 100*bk, 100*c, 100*o)
				}
				fmt.Fprintf(b, "| %s/%s/r%d | %s | %s | %s | %s |\n", t.name, kind, rd, ok, figures(r), cpu, errs)
			}
		}
	}
}

// figures is a one-line summary of a run for the detail table.
func figures(r *run) string {
	switch r.Mode {
	case "hold":
		s := fmt.Sprintf("%d/%d held and echoing", r.Verified, r.Conns)
		if r.Procs > 0 {
			s += fmt.Sprintf("; RSS %d → %d KiB over %d process(es): %.2f KiB/conn",
				r.BaselineRSSKiB, r.LoadedRSSKiB, r.Procs, r.RSSPerConnKiB)
		}
		return s
	case "echo", "rate":
		s := fmt.Sprintf("%d conns × %d B: %.0f msg/s", r.Conns, r.Size, r.MsgsPerSec)
		if r.TargetMsgsPS > 0 {
			s += fmt.Sprintf(" (target %.0f)", r.TargetMsgsPS)
		}
		if r.Latency != nil {
			s += fmt.Sprintf("; p50 %.0f, p99 %.0f, p99.9 %.0f µs", r.Latency.P50US, r.Latency.P99US, r.Latency.P999US)
		}
		if r.CPUPer100k > 0 {
			s += fmt.Sprintf("; %.3f CPU-s/100k", r.CPUPer100k)
		}
		if st := r.Strace; st != nil {
			s += fmt.Sprintf("; strace over %.0f forwarded msgs: %.0f reads (%.0f failed), %.0f writes, %.0f epoll waits, %.0f syscalls",
				r.forwarded(), st.ReadCalls, st.ReadErrors, st.WriteCalls, st.EpollWaits, st.Syscalls)
		}
		return s
	case "handshakes":
		s := fmt.Sprintf("%d workers: %.0f handshakes/s", r.Workers, r.HandshakesPS)
		if r.CPUPer1kHS > 0 {
			s += fmt.Sprintf("; %.3f CPU-s/1k handshakes", r.CPUPer1kHS)
		}
		return s
	}
	return ""
}

// writeTargets checks wsproxy against the benchmark targets of issues 12
// (ws://) and 13 (wss://). Each is judged on the median; the range shows
// whether every round agrees.
func (rep *report) writeTargets(b *strings.Builder) {
	w := rep.target("wsproxy")
	if w == nil || !w.ran() {
		return
	}
	var rows []string
	row := func(goal, value, against string, s stat, met bool) {
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s |", goal, value, against, s.format("%.2f", ""), yesNo(met)))
	}
	// vsPeer: wsproxy ÷ peer (the best peer when name is ""), per round.
	vsPeer := func(goal, kind, suffix, name string, limit float64, atMost bool) {
		f, ok := rep.figureOf(kind, suffix)
		if !ok {
			return
		}
		var p *target
		if name == "" {
			p, _ = rep.bestPeer(f)
		} else {
			p = rep.target(name)
		}
		ws := w.stat(f)
		if p == nil || !ws.ok() {
			return
		}
		s := pair(f, w, p, div)
		met := s.ok() && ((atMost && s.median() <= limit) || (!atMost && s.median() >= limit))
		row(goal, ws.format(f.format, ""), p.name+" "+p.stat(f).format(f.format, ""), s, met)
	}
	absolute := func(goal, kind, suffix string, limit float64) {
		f, ok := rep.figureOf(kind, suffix)
		if !ok {
			return
		}
		ws := w.stat(f)
		if !ws.ok() {
			return
		}
		row(goal, ws.format(f.format, ""), "—", ws, ws.median() <= limit)
	}
	// within: wsproxy's figure fa ÷ its figure fb, same round.
	within := func(goal, ka, kb string, lo, hi float64) {
		fa, ok1 := rep.figureOf(ka, "idle RSS per connection")
		fb, ok2 := rep.figureOf(kb, "idle RSS per connection")
		if !ok1 || !ok2 {
			return
		}
		s := holdRatio(w, fa, fb)
		if !s.ok() {
			return
		}
		row(goal, w.stat(fa).format(fa.format, " KiB"), "wsproxy "+describe(kb)+" "+w.stat(fb).format(fb.format, " KiB"), s, s.median() >= lo && s.median() <= hi)
	}

	vsPeer("#12: CPU-s per 100k 64 B msgs ≤ 0.9× HAProxy's", "echo64", "per 100k round trips", "haproxy", 0.9, true)
	for _, k := range []string{"echo64_c10", "echo64", "echo64_c1000", "echo4k_c10", "echo4k", "echo4k_c1000"} {
		vsPeer("#12: "+describe(k)+" msg/s ≥ 1.0× HAProxy's", k, ": msg/s", "haproxy", 1.0, false)
	}
	absolute("#12: read syscalls per forwarded message ≤ 1.1", "syscalls", "read syscalls per forwarded message", 1.1)
	vsPeer("#12: ws:// handshakes/s ≥ the best peer's", "hs_ws", ": per second", "", 1.0, false)
	if k := rep.largestHold(false); k != "" {
		absolute("#12: idle RSS per conn ≤ 4.0 KiB ("+describe(k)+")", k, "idle RSS per connection", 4.0)
	}
	if small, large := rep.holdPair(false); small != "" {
		within("#12: flat: "+describe(small)+" within 15% of "+describe(large), small, large, 0.85, 1.15)
	}
	if k := rep.largestHold(true); k != "" {
		absolute("#13: idle RSS per wss conn ≤ 10 KiB ("+describe(k)+")", k, "idle RSS per connection", 10)
		if m := holdRE.FindStringSubmatch(k); m != nil && slices.Contains(rep.kinds, "hold"+m[2]) {
			within("#13: wss ≤ 1.5× wsproxy's own ws:// figure", k, "hold"+m[2], 0, 1.5)
		}
	}
	if small, large := rep.holdPair(true); small != "" {
		within("#13: flat: "+describe(small)+" within 15% of "+describe(large), small, large, 0.85, 1.15)
	}
	vsPeer("#13: wss:// handshakes/s ≥ the best peer's", "hs_wss", ": per second", "", 1.0, false)
	vsPeer("#13: CPU-s per 100k 64 B msgs over wss:// ≤ HAProxy's", "wss_echo64", "per 100k round trips", "haproxy", 1.0, true)
	if len(rows) == 0 {
		return
	}
	b.WriteString("\n## wsproxy against the issues' targets\n\nJudged on the median of the per-round ratio (or of the figure, for absolute\n" +
		"targets); the range shows whether every round agrees.\n\n" +
		"| target | wsproxy | compared with | ratio (or figure) per round | met |\n|---|---|---|---|---|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func output(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return string(out)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
