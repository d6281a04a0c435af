package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `{"label":"direct/version","note":"client → backend"}
{"label":"direct/echo64","mode":"echo","ok":true,"conns":100,"size":64,"msgs_per_sec":100000,"rtt":{"p50_us":500,"p99_us":3000},"window_s":10,"machine_cpus":2,"machine_busy_cpu_s":19,"outside_cpu_s":1}
{"label":"direct/rate","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":600,"p99_us":2000}}
{"label":"wsproxy/hold","mode":"hold","ok":true,"conns":9000,"opened":9000,"verified":9000,"rss_per_conn_kib":3.5,"procs":1}
{"label":"wsproxy/echo64","mode":"echo","ok":true,"conns":100,"size":64,"msgs_per_sec":60000,"rtt":{"p50_us":1500,"p99_us":4000},"cpu_s_per_100k_msgs":1.2}
{"label":"wsproxy/rate","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":650,"p99_us":2500}}
{"label":"wsproxy/note","note":"wss: n/a (TLS not built yet)"}
{"label":"haproxy/hold","mode":"hold","ok":true,"conns":9000,"opened":9000,"verified":9000,"rss_per_conn_kib":4.6,"procs":1}
{"label":"haproxy/echo64","mode":"echo","ok":false,"error":"3 connections failed","errors":3,"conns":100,"size":64,"msgs_per_sec":50000,"rtt":{"p50_us":1600,"p99_us":5000}}
{"label":"haproxy/rate","mode":"rate","ok":true,"conns":100,"size":64,"msgs_per_sec":10000,"rtt":{"p50_us":640,"p99_us":2600}}
{"label":"haproxy/hs_wss","mode":"handshakes","ok":true,"workers":16,"handshakes_per_sec":1000}
{"label":"caddy/status","error":"not installed"}
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
	md := rep.markdown()
	for _, want := range []string{
		"| wsproxy | 3.5 (9000/9000) | 60000 |",
		"| caddy | not run: not installed |",
		"fail", // haproxy's echo64 had errors: not counted as the best peer
		"| idle RSS KiB per connection (lower is better) | 3.5 | 4.6 (haproxy) | 0.76× | yes |",
		"| added p99 µs over direct, fixed rate, 100 conns | +500 | +600 (haproxy) | — | yes |",
		"5% (max 5%)", // direct's other-process CPU share
		"wss: n/a (TLS not built yet)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	svg := rep.svg()
	if !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, "wsproxy") || strings.Contains(svg, "caddy") {
		t.Errorf("svg: want a chart with wsproxy and without the target that did not run:\n%s", svg)
	}
}

func TestLoadRejectsBadLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runs.jsonl")
	if err := os.WriteFile(path, []byte(`{"label":"nolabel"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := load(path); err == nil {
		t.Error("a label without TARGET/RUN was accepted")
	}
}
