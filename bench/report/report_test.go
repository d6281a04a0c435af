package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sample is two rounds of a small run: direct, wsproxy and HAProxy, with a
// failed HAProxy run in round 2 and Caddy missing.
const sample = `{"label":"direct/version","note":"client → backend"}
{"label":"direct/echo64/r1","mode":"echo","ok":true,"conns":100,"size":64,"msgs_per_sec":100000,"rtt":{"p50_us":500,"p99_us":3000},"window_s":10,"machine_cpus":2,"machine_busy_cpu_s":19,"proxy_cpu_s":0,"backend_cpu_s":8,"client_window_cpu_s":10,"other_cpu_s":1}
{"label":"direct/rate/r1","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":600,"p99_us":2000}}
{"label":"wsproxy/config","note":"log_level warn; access_log FILE 0.01"}
{"label":"wsproxy/hold2000/r1","mode":"hold","ok":true,"conns":2000,"opened":2000,"verified":2000,"rss_per_conn_kib":4.2,"procs":1}
{"label":"wsproxy/hold8000/r1","mode":"hold","ok":true,"conns":8000,"opened":8000,"verified":8000,"rss_per_conn_kib":3.5,"procs":1}
{"label":"wsproxy/echo64/r1","mode":"echo","ok":true,"conns":100,"size":64,"msgs_per_sec":60000,"rtt":{"p50_us":1500,"p99_us":4000},"cpu_s_per_100k_msgs":1.2,"window_s":10,"machine_cpus":2,"machine_busy_cpu_s":20,"proxy_cpu_s":7,"backend_cpu_s":5,"client_window_cpu_s":6,"other_cpu_s":2}
{"label":"wsproxy/rate/r1","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":650,"p99_us":2500}}
{"label":"wsproxy/syscalls/r1","mode":"echo","ok":true,"conns":100,"size":64,"messages":10000,"msgs_per_sec":2000,"strace":{"read_calls":21000,"read_errors":1000,"write_calls":20000,"epoll_waits":1000,"syscalls":42000}}
{"label":"wsproxy/note","note":"wss: n/a (TLS not built yet)"}
{"label":"haproxy/config","note":"nbthread 2; log stdout sample 1:100"}
{"label":"haproxy/hold2000/r1","mode":"hold","ok":true,"conns":2000,"opened":2000,"verified":2000,"rss_per_conn_kib":4.6,"procs":1}
{"label":"haproxy/hold8000/r1","mode":"hold","ok":true,"conns":8000,"opened":8000,"verified":8000,"rss_per_conn_kib":4.6,"procs":1}
{"label":"haproxy/echo64/r1","mode":"echo","ok":true,"conns":100,"size":64,"msgs_per_sec":50000,"rtt":{"p50_us":1600,"p99_us":5000},"cpu_s_per_100k_msgs":1.0}
{"label":"haproxy/rate/r1","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":640,"p99_us":2600}}
{"label":"caddy/status/r1","error":"not installed"}
{"label":"direct/echo64/r2","mode":"echo","ok":true,"conns":100,"size":64,"msgs_per_sec":90000,"rtt":{"p50_us":500,"p99_us":3000}}
{"label":"direct/rate/r2","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":600,"p99_us":2200}}
{"label":"wsproxy/hold2000/r2","mode":"hold","ok":true,"conns":2000,"opened":2000,"verified":2000,"rss_per_conn_kib":4.0,"procs":1}
{"label":"wsproxy/hold8000/r2","mode":"hold","ok":true,"conns":8000,"opened":8000,"verified":8000,"rss_per_conn_kib":3.7,"procs":1}
{"label":"wsproxy/echo64/r2","mode":"echo","ok":true,"conns":100,"size":64,"msgs_per_sec":54000,"rtt":{"p50_us":1500,"p99_us":4000},"cpu_s_per_100k_msgs":1.1}
{"label":"wsproxy/rate/r2","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":650,"p99_us":2700}}
{"label":"wsproxy/note","note":"wss: n/a (TLS not built yet)"}
{"label":"haproxy/hold8000/r2","mode":"hold","ok":true,"conns":8000,"opened":8000,"verified":8000,"rss_per_conn_kib":4.4,"procs":1}
{"label":"haproxy/echo64/r2","mode":"echo","ok":false,"error":"3 connections failed","errors":3,"conns":100,"size":64,"msgs_per_sec":50000,"rtt":{"p50_us":1600,"p99_us":5000}}
{"label":"haproxy/rate/r2","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":640,"p99_us":2400}}
{"label":"caddy/status/r2","error":"not installed"}
`

func TestReport(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "runs.jsonl")
	if err := os.WriteFile(path, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := load(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.rounds != 2 {
		t.Errorf("rounds = %d, want 2", rep.rounds)
	}
	md := rep.markdown()
	for _, want := range []string{
		// Headline: median (min–max) of two rounds.
		"| wsproxy | 3.60 (3.50–3.70) | 57000 (54000–60000) |",
		"| caddy | not run: not installed |",
		// HAProxy's failed round 2 is left out and counted.
		"50000 [1 failed: round 2: 3 connections failed]",
		// Ratios per round: only round 1 has both echo64 runs good.
		"| echo 64 B, 100 conns: msg/s | 1.20× |",
		// Fixed-rate p99: wsproxy − direct per round (+500, +500).
		"2600 (2500–2700); +500",
		// HAProxy 4.6 and 4.4 against wsproxy 3.5 and 3.7, per round.
		"| #12: idle RSS per conn ≤ 4.0 KiB (8000 idle conns) | 3.60 (3.50–3.70) |",
		"| 8000 idle conns: idle RSS per connection ↓ | 0.80× (0.76–0.84) |",
		// Flatness: 4.2/3.5 and 4.0/3.7.
		"| flatness: KiB/conn at 2000 idle conns ÷ at 8000 idle conns (1.00 is flat) | — | 1.14 (1.08–1.20) | 1.00 |",
		"| read syscalls per forwarded message ↓ |",
		"1.05",
		"- **wsproxy**: log_level warn; access_log FILE 0.01",
		// Everything else's CPU: 1 of 20 CPU-s for direct, 2 of 20 for wsproxy.
		"| wsproxy | 35 | 25 | 30 | +10 | 0 |",
		"wsproxy/echo64/r2",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if n := strings.Count(md, "wss: n/a (TLS not built yet)"); n != 1 {
		t.Errorf("a repeated note appears %d times, want once", n)
	}
	svg := rep.svg()
	if !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, "wsproxy") || strings.Contains(svg, "caddy") {
		t.Errorf("svg: want a chart with wsproxy and without the target that did not run:\n%s", svg)
	}
}

// Files from before rounds existed (TARGET/RUN) still load, as round 1.
func TestLoadOldLabels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runs.jsonl")
	old := `{"label":"wsproxy/hold","mode":"hold","ok":true,"conns":9000,"verified":9000,"rss_per_conn_kib":3.5}` + "\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := load(path)
	if err != nil {
		t.Fatal(err)
	}
	if md := rep.markdown(); !strings.Contains(md, "| wsproxy | 3.50 |") {
		t.Errorf("old file: markdown lacks wsproxy's 3.50:\n%s", md)
	}
}

func TestLoadRejectsBadLines(t *testing.T) {
	for _, line := range []string{`{"label":"nolabel"}`, `{"label":"a/b/c"}`, `{"label":"a/b/r0"}`} {
		path := filepath.Join(t.TempDir(), "runs.jsonl")
		if err := os.WriteFile(path, []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := load(path); err == nil {
			t.Errorf("%s was accepted", line)
		}
	}
}
