// Command report turns the JSON lines that bench/compare.sh collects (one
// wsbench result per line, plus note lines) into a Markdown table and an
// SVG bar chart.
//
//	report -runs runs.jsonl -md latest.md -svg latest.svg -cmd "bench/compare.sh"
//
// Every line is a JSON object with a "label" of the form TARGET/RUN. RUN is
// one of compare.sh's run names (hold, echo64, echo4k, rate, hs_ws,
// hs_wss) for a wsbench result, or "note" ({"note": text}), "version"
// ({"note": text}) or "status" ({"error": text} when the target could not
// run at all).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
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
	OutsideCPUS    float64  `json:"outside_cpu_s"`
	MachineBusy    float64  `json:"machine_busy_cpu_s"`
}

// outsideShare is the share of the machine's CPU capacity that processes
// other than the client, proxy and backends used during r's window, or -1
// when r did not measure it.
func (r *run) outsideShare() float64 {
	if r.MachineBusy == 0 || r.WindowS == 0 || r.MachineCPUs == 0 {
		return -1
	}
	return r.OutsideCPUS / (r.WindowS * float64(r.MachineCPUs))
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
	status  string // non-empty: the target could not run
	notes   []string
	runs    map[string]*run
}

type report struct {
	targets []*target
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
		name, kind, ok := strings.Cut(r.Label, "/")
		if !ok {
			return nil, fmt.Errorf("%s:%d: label %q is not TARGET/RUN", path, line, r.Label)
		}
		t := byName[name]
		if t == nil {
			t = &target{name: name, runs: map[string]*run{}}
			byName[name] = t
			rep.targets = append(rep.targets, t)
		}
		switch kind {
		case "note":
			t.notes = append(t.notes, r.Note)
		case "version":
			t.version = r.Note
		case "status":
			t.status = r.Error
		default:
			t.runs[kind] = &r
		}
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

// get returns a figure of one run, or ok=false when the run is missing or
// failed without producing that figure.
func (t *target) get(kind string, f func(*run) float64) (float64, bool) {
	r := t.runs[kind]
	if r == nil {
		return 0, false
	}
	v := f(r)
	return v, v != 0
}

// metric is one column of the table and one group of the chart.
type metric struct {
	title  string
	unit   string
	run    string
	lower  bool // lower is better
	value  func(*run) float64
	format string
}

var (
	mRSS       = metric{"idle RSS per connection", "KiB", "hold", true, func(r *run) float64 { return r.RSSPerConnKiB }, "%.1f"}
	mEcho64    = metric{"echo 64 B", "msg/s", "echo64", false, func(r *run) float64 { return r.MsgsPerSec }, "%.0f"}
	mEcho4k    = metric{"echo 4 KiB", "msg/s", "echo4k", false, func(r *run) float64 { return r.MsgsPerSec }, "%.0f"}
	mRateP99   = metric{"p99 at a fixed rate", "µs", "rate", true, func(r *run) float64 { return p99(r) }, "%.0f"}
	mHSws      = metric{"handshakes ws://", "/s", "hs_ws", false, func(r *run) float64 { return r.HandshakesPS }, "%.0f"}
	mHSwss     = metric{"handshakes wss://", "/s", "hs_wss", false, func(r *run) float64 { return r.HandshakesPS }, "%.0f"}
	mCPU64     = metric{"CPU per 100k msgs (64 B)", "CPU-s", "echo64", true, func(r *run) float64 { return r.CPUPer100k }, "%.2f"}
	chartOrder = []metric{mRSS, mEcho64, mEcho4k, mRateP99, mHSws, mHSwss, mCPU64}
)

func p99(r *run) float64 {
	if r.Latency == nil {
		return 0
	}
	return r.Latency.P99US
}

func p50(r *run) float64 {
	if r.Latency == nil {
		return 0
	}
	return r.Latency.P50US
}

// cell formats one figure of t for the table: the value, marked when the
// run reported errors, or why there is none.
func (t *target) cell(m metric) string {
	if t.status != "" {
		return "—"
	}
	r := t.runs[m.run]
	if r == nil {
		return "—"
	}
	v := m.value(r)
	if v == 0 {
		if !r.OK {
			return "fail: " + shorten(r.Error)
		}
		return "n/a"
	}
	s := fmt.Sprintf(m.format, v)
	if !r.OK {
		s += " (" + shorten(r.Error) + ")"
	}
	return s
}

func shorten(s string) string {
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

var peers = []string{"haproxy", "nginx", "caddy"}

// bestPeer returns the best value of m among the peers that produced it.
func (rep *report) bestPeer(m metric) (float64, string, bool) {
	var best float64
	var who string
	for _, name := range peers {
		t := rep.target(name)
		if t == nil || t.status != "" {
			continue
		}
		v, ok := t.get(m.run, m.value)
		if !ok || t.runs[m.run].Errors > 0 {
			continue
		}
		if who == "" || (m.lower && v < best) || (!m.lower && v > best) {
			best, who = v, name
		}
	}
	return best, who, who != ""
}

// added returns t's p99 minus the direct path's, for run kind.
func (rep *report) added(t *target, kind string) string {
	d := rep.target("direct")
	if d == nil || t.name == "direct" || t.status != "" {
		return "—"
	}
	dv, ok1 := d.get(kind, p99)
	tv, ok2 := t.get(kind, p99)
	if !ok1 || !ok2 {
		return "—"
	}
	return fmt.Sprintf("%+.0f", tv-dv)
}

func (rep *report) markdown() string {
	var b strings.Builder
	b.WriteString("# wsproxy and its peers, side by side\n\n")
	fmt.Fprintf(&b, "Generated by `bench/report` from `%s` (every wsbench result in full). Command: `%s`.\n", rep.source, rep.command)
	if rep.params != "" {
		fmt.Fprintf(&b, "Parameters: %s.\n", rep.params)
	}
	b.WriteString("\nAll processes share one machine: the load generator, the proxy and the two echo\n" +
		"backends compete for the same cores, so compare ratios within this run, not absolute\n" +
		"figures across runs. The last column is the CPU share that processes other than the\n" +
		"load generator, the proxy and the backends took while the figures were measured:\n" +
		"anything well above 0 means the machine was busy with other work and that row is\n" +
		"disadvantaged. See bench/README.md for what each figure means.\n\n")

	b.WriteString("| proxy | idle RSS KiB/conn (held) | echo msg/s 64 B | echo msg/s 4 KiB | p50 / p99 µs, 64 B closed loop | added p99 µs (closed loop) | p50 / p99 µs at fixed rate | added p99 µs (fixed rate) | handshakes/s ws:// | handshakes/s wss:// | CPU-s per 100k msgs 64 B / 4 KiB | other processes' CPU share |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range rep.targets {
		name := t.name
		if t.status != "" {
			fmt.Fprintf(&b, "| %s | %s ||||||||||\n", name, "not run: "+shorten(t.status))
			continue
		}
		held := t.cell(mRSS)
		if r := t.runs["hold"]; r != nil {
			if r.RSSPerConnKiB == 0 && r.OK {
				held = "n/a"
			}
			held += fmt.Sprintf(" (%d/%d)", r.Verified, r.Conns)
		}
		lat := func(kind string) string {
			r := t.runs[kind]
			if r == nil || r.Latency == nil {
				return "—"
			}
			return fmt.Sprintf("%.0f / %.0f", p50(r), p99(r))
		}
		cpu := func(kind string) string {
			if v, ok := t.get(kind, func(r *run) float64 { return r.CPUPer100k }); ok {
				return fmt.Sprintf("%.2f", v)
			}
			return "—"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |\n",
			name, held, t.cell(mEcho64), t.cell(mEcho4k), lat("echo64"), rep.added(t, "echo64"),
			lat("rate"), rep.added(t, "rate"), t.cell(mHSws), t.cell(mHSwss), cpu("echo64"), cpu("echo4k"), t.outside())
	}

	rep.writeTargets(&b)

	b.WriteString("\n## Versions and notes\n\n")
	for _, t := range rep.targets {
		fmt.Fprintf(&b, "- **%s**", t.name)
		if t.version != "" {
			fmt.Fprintf(&b, " (%s)", t.version)
		}
		if t.status != "" {
			fmt.Fprintf(&b, ": not run: %s", t.status)
		}
		b.WriteString("\n")
		for _, n := range t.notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}

	b.WriteString("\n## Every run\n\n| run | ok | figures | errors |\n|---|---|---|---|\n")
	for _, t := range rep.targets {
		for _, kind := range []string{"hold", "echo64", "echo4k", "rate", "hs_ws", "hs_wss"} {
			r := t.runs[kind]
			if r == nil {
				continue
			}
			ok := "yes"
			if !r.OK {
				ok = "no: " + shorten(r.Error)
			}
			errs := "0"
			if r.Errors > 0 {
				errs = fmt.Sprintf("%d: %s", r.Errors, shorten(strings.Join(r.Sample, "; ")))
			}
			fmt.Fprintf(&b, "| %s/%s | %s | %s | %s |\n", t.name, kind, ok, figures(r), errs)
		}
	}

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

// outside summarizes the CPU share other processes on the machine took
// during t's measured windows: the mean and the largest over its runs.
func (t *target) outside() string {
	var sum, most float64
	n := 0
	for _, r := range t.runs {
		if v := r.outsideShare(); v >= 0 {
			sum += v
			most = max(most, v)
			n++
		}
	}
	if n == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%% (max %.0f%%)", 100*sum/float64(n), 100*most)
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
			s += fmt.Sprintf("; %.2f CPU-s/100k msgs", r.CPUPer100k)
		}
		return s + otherCPU(r)
	case "handshakes":
		s := fmt.Sprintf("%d workers: %.0f handshakes/s", r.Workers, r.HandshakesPS)
		if r.CPUPer1kHS > 0 {
			s += fmt.Sprintf("; %.3f CPU-s/1k handshakes", r.CPUPer1kHS)
		}
		return s + otherCPU(r)
	}
	return ""
}

func otherCPU(r *run) string {
	s := fmt.Sprintf("; client CPU %.1fs", r.ClientCPUS)
	if v := r.outsideShare(); v >= 0 {
		s += fmt.Sprintf("; other processes %.0f%% of the machine", 100*v)
	}
	return s
}

// writeTargets checks wsproxy against the targets.
func (rep *report) writeTargets(b *strings.Builder) {
	w := rep.target("wsproxy")
	if w == nil || w.status != "" {
		return
	}
	b.WriteString("\n## wsproxy against the best peer\n\n| figure | wsproxy | best peer | ratio | target met |\n|---|---|---|---|---|\n")
	row := func(m metric, title string) {
		v, ok := w.get(m.run, m.value)
		best, who, okb := rep.bestPeer(m)
		if !ok || !okb {
			fmt.Fprintf(b, "| %s | %s | %s | — | — |\n", title, w.cell(m), orDash(okb, fmt.Sprintf(m.format+" (%s)", best, who)))
			return
		}
		met := v > best
		if m.lower {
			met = v < best
		}
		fmt.Fprintf(b, "| %s | "+m.format+" | "+m.format+" (%s) | %.2f× | %s |\n", title, v, best, who, v/best, yesNo(met))
	}
	row(mRSS, "idle RSS KiB per connection (lower is better)")
	row(mEcho64, "echo msg/s, 64 B")
	row(mEcho4k, "echo msg/s, 4 KiB")
	// Added p99 over direct, fixed rate and closed loop.
	for _, kind := range []string{"rate", "echo64"} {
		d := rep.target("direct")
		if d == nil {
			break
		}
		dv, okd := d.get(kind, p99)
		wv, okw := w.get(kind, p99)
		m := metric{run: kind, lower: true, value: p99}
		best, who, okb := rep.bestPeer(m)
		title := map[string]string{"rate": "added p99 µs over direct, fixed rate, 100 conns", "echo64": "added p99 µs over direct, closed loop 64 B, 100 conns"}[kind]
		if !okd || !okw || !okb {
			fmt.Fprintf(b, "| %s | — | — | — | — |\n", title)
			continue
		}
		fmt.Fprintf(b, "| %s | %+.0f | %+.0f (%s) | — | %s |\n", title, wv-dv, best-dv, who, yesNo(wv <= best))
	}
	row(mHSws, "handshakes/s ws://")
	row(mHSwss, "handshakes/s wss://")
	row(mCPU64, "CPU-s per 100k messages, 64 B (lower is better)")
}

func orDash(ok bool, s string) string {
	if ok {
		return s
	}
	return "—"
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
