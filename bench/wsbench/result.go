package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is everything one run measured; it is the JSON object -json
// writes. Fields that do not apply to the mode are left out.
type Result struct {
	Label      string  `json:"label,omitempty"`
	Mode       string  `json:"mode"`
	URL        string  `json:"url"`
	Conns      int     `json:"conns,omitempty"`
	Size       int     `json:"size,omitempty"`
	DurationS  float64 `json:"duration_s,omitempty"` // the measured window asked for
	ElapsedS   float64 `json:"elapsed_s"`            // the whole run, dialing included
	Started    string  `json:"started"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	PIDs       []int   `json:"pids,omitempty"`

	OK     bool     `json:"ok"`
	Error  string   `json:"error,omitempty"`
	Errors int64    `json:"errors"`                 // connection or echo failures
	Sample []string `json:"error_sample,omitempty"` // the first few failures

	// echo and rate
	Messages     int64    `json:"messages,omitempty"` // round trips completed in the window
	WindowS      float64  `json:"window_s,omitempty"` // the measured window as it ran
	MsgsPerSec   float64  `json:"msgs_per_sec,omitempty"`
	TargetRate   float64  `json:"target_rate_per_conn,omitempty"`
	TargetMsgsPS float64  `json:"target_msgs_per_sec,omitempty"`
	Latency      *Latency `json:"rtt,omitempty"`

	// hold
	Opened         int     `json:"opened,omitempty"`
	Verified       int     `json:"verified,omitempty"`
	OpenS          float64 `json:"open_s,omitempty"`
	BaselineRSSKiB int64   `json:"baseline_rss_kib,omitempty"`
	LoadedRSSKiB   int64   `json:"loaded_rss_kib,omitempty"`
	RSSPerConnKiB  float64 `json:"rss_per_conn_kib,omitempty"`
	Procs          int     `json:"procs,omitempty"` // processes summed for RSS and CPU

	// handshakes
	Handshakes    int64    `json:"handshakes,omitempty"`
	HandshakesPS  float64  `json:"handshakes_per_sec,omitempty"`
	Workers       int      `json:"workers,omitempty"`
	HandshakeTime *Latency `json:"handshake_time,omitempty"` // TCP (+TLS) + upgrade

	// CPU of the sampled processes during the measured window (hold: while
	// opening, settling and verifying), and per unit of work.
	ProxyCPUS         float64 `json:"proxy_cpu_s,omitempty"`
	CPUPer100kMsgs    float64 `json:"cpu_s_per_100k_msgs,omitempty"`
	CPUPer1kHandshake float64 `json:"cpu_s_per_1k_handshakes,omitempty"`

	// CPU seconds during the measured window (echo, rate, handshakes) of
	// the backends (-backend-pid), of this process, of the whole machine
	// (user+nice+system+irq+softirq), and of everything else on it: the
	// machine less the proxy, the backends and this process, signed (other
	// work that competed for the cores; slightly negative when there was
	// none, from tick sampling). Steal is time the hypervisor gave away.
	BackendCPUS      float64 `json:"backend_cpu_s,omitempty"`
	ClientWindowCPUS float64 `json:"client_window_cpu_s,omitempty"`
	MachineBusyCPUS  float64 `json:"machine_busy_cpu_s,omitempty"`
	OtherCPUS        float64 `json:"other_cpu_s"`
	StealCPUS        float64 `json:"steal_cpu_s,omitempty"`
	MachineCPUs      int     `json:"machine_cpus"`

	ClientRSSKiB int64   `json:"client_rss_kib"` // at the end
	ClientCPUS   float64 `json:"client_cpu_s"`   // the whole run

	mu sync.Mutex
}

// Latency summarizes a histogram, in microseconds.
type Latency struct {
	Count  int64   `json:"count"`
	MeanUS float64 `json:"mean_us"`
	P50US  float64 `json:"p50_us"`
	P90US  float64 `json:"p90_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p999_us"`
	MaxUS  float64 `json:"max_us"`
}

// fail marks the run failed with the first reason given.
func (r *Result) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.OK = false
	if r.Error == "" {
		r.Error = fmt.Sprintf(format, args...)
	}
}

// addError counts one failure and keeps the first few for the report.
func (r *Result) addError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Errors++
	if len(r.Sample) < 5 {
		r.Sample = append(r.Sample, err.Error())
	}
}

func (r *Result) errorCount() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Errors
}

// histogram is a set of HDR histograms of durations in nanoseconds, sharded
// so that many goroutines can record without contending on one lock.
type histogram struct {
	shards []histShard
}

type histShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards on separate cache lines
}

const (
	histMin = int64(time.Microsecond)
	histMax = int64(time.Minute)
)

func newHistogram(shards int) *histogram {
	h := &histogram{shards: make([]histShard, max(shards, 1))}
	for i := range h.shards {
		h.shards[i].h = hdrhistogram.New(histMin, histMax, 3)
	}
	return h
}

// record adds d to shard i (any int; taken modulo the shard count).
func (h *histogram) record(i int, d time.Duration) {
	s := &h.shards[i%len(h.shards)]
	v := min(max(int64(d), histMin), histMax)
	s.mu.Lock()
	_ = s.h.RecordValue(v)
	s.mu.Unlock()
}

// summary merges the shards and summarizes them, or returns nil if nothing
// was recorded.
func (h *histogram) summary() *Latency {
	all := hdrhistogram.New(histMin, histMax, 3)
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		all.Merge(s.h)
		s.mu.Unlock()
	}
	if all.TotalCount() == 0 {
		return nil
	}
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return &Latency{
		Count:  all.TotalCount(),
		MeanUS: all.Mean() / 1e3,
		P50US:  us(all.ValueAtQuantile(50)),
		P90US:  us(all.ValueAtQuantile(90)),
		P99US:  us(all.ValueAtQuantile(99)),
		P999US: us(all.ValueAtQuantile(99.9)),
		MaxUS:  us(all.Max()),
	}
}

// writeSummary writes the human-readable summary.
func (r *Result) writeSummary(w io.Writer) {
	var b strings.Builder
	status := "ok"
	if !r.OK {
		status = "FAILED: " + r.Error
	}
	label := r.Mode
	if r.Label != "" {
		label = r.Label + " (" + r.Mode + ")"
	}
	fmt.Fprintf(&b, "%s %s: %s\n", label, r.URL, status)
	switch r.Mode {
	case "echo", "rate":
		fmt.Fprintf(&b, "  %d conns, %d B messages, %d round trips in %.2fs: %.0f msg/s", r.Conns, r.Size, r.Messages, r.WindowS, r.MsgsPerSec)
		if r.Mode == "rate" {
			fmt.Fprintf(&b, " (target %.0f)", r.TargetMsgsPS)
		}
		b.WriteString("\n")
		if l := r.Latency; l != nil {
			fmt.Fprintf(&b, "  rtt µs: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", l.P50US, l.P90US, l.P99US, l.P999US, l.MaxUS)
		}
		if len(r.PIDs) > 0 {
			fmt.Fprintf(&b, "  proxy CPU %.2fs: %.2f CPU-s per 100k messages\n", r.ProxyCPUS, r.CPUPer100kMsgs)
		}
	case "hold":
		fmt.Fprintf(&b, "  opened %d/%d in %.1fs, %d still echo\n", r.Opened, r.Conns, r.OpenS, r.Verified)
		if len(r.PIDs) > 0 {
			fmt.Fprintf(&b, "  proxy RSS (%d processes) %d KiB before, %d KiB with the connections: %.2f KiB per connection\n",
				r.Procs, r.BaselineRSSKiB, r.LoadedRSSKiB, r.RSSPerConnKiB)
		}
	case "handshakes":
		fmt.Fprintf(&b, "  %d workers, %d open-echo-close cycles in %.2fs: %.0f handshakes/s\n", r.Workers, r.Handshakes, r.WindowS, r.HandshakesPS)
		if l := r.HandshakeTime; l != nil {
			fmt.Fprintf(&b, "  handshake µs: p50 %.0f  p99 %.0f  max %.0f\n", l.P50US, l.P99US, l.MaxUS)
		}
		if len(r.PIDs) > 0 {
			fmt.Fprintf(&b, "  proxy CPU %.2fs: %.3f CPU-s per 1k handshakes\n", r.ProxyCPUS, r.CPUPer1kHandshake)
		}
	}
	if r.MachineBusyCPUS > 0 {
		fmt.Fprintf(&b, "  window CPU-s: machine %.2f of %.2f, client %.2f", r.MachineBusyCPUS, r.WindowS*float64(r.MachineCPUs), r.ClientWindowCPUS)
		if r.BackendCPUS > 0 {
			fmt.Fprintf(&b, ", backends %.2f", r.BackendCPUS)
		}
		fmt.Fprintf(&b, ", proxy %.2f, everything else %+.2f", r.ProxyCPUS, r.OtherCPUS)
		if r.StealCPUS > 0 {
			fmt.Fprintf(&b, ", steal %.2f", r.StealCPUS)
		}
		b.WriteString("\n")
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, "  %d errors, first: %s\n", r.Errors, strings.Join(r.Sample, "; "))
	}
	fmt.Fprintf(&b, "  client: RSS %d KiB, CPU %.2fs\n", r.ClientRSSKiB, r.ClientCPUS)
	_, _ = io.WriteString(w, b.String())
}
