package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/examples/echoserver"
)

// startEcho runs an in-process echo backend for the test.
func startEcho(t *testing.T) *echoserver.Server {
	t.Helper()
	srv, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// startTLSEcho runs a wss:// echo server with a self-signed certificate.
func startTLSEcho(t *testing.T) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "wss://" + strings.TrimPrefix(srv.URL, "https://") + "/ws?room={i}"
}

// runJSON runs wsbench with args plus -json and returns its exit status
// and decoded result.
func runJSON(t *testing.T, args ...string) (int, map[string]any) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(append(args, "-json"), &stdout, &stderr) }()
	var code int
	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("wsbench %v did not finish in 60s", args)
	}
	t.Logf("wsbench %s\n%s", strings.Join(args, " "), stderr.String())
	var res map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, stdout.String())
	}
	return code, res
}

func num(t *testing.T, res map[string]any, key string) float64 {
	t.Helper()
	v, ok := res[key].(float64)
	if !ok {
		t.Fatalf("result has no number %q: %v", key, res)
	}
	return v
}

func TestModes(t *testing.T) {
	srv := startEcho(t)
	url := "ws://" + srv.Addr() + "/ws?room={i}"
	pid := strconv.Itoa(os.Getpid())
	short := []string{"-duration", "1s", "-warmup", "200ms"}

	t.Run("echo", func(t *testing.T) {
		code, res := runJSON(t, append([]string{"-mode", "echo", "-url", url, "-conns", "4", "-size", "512", "-pid", pid, "-backend-pid", pid}, short...)...)
		if code != 0 || res["ok"] != true {
			t.Fatalf("exit %d: %v", code, res)
		}
		if num(t, res, "msgs_per_sec") <= 0 || num(t, res, "proxy_cpu_s") <= 0 || num(t, res, "machine_busy_cpu_s") <= 0 {
			t.Errorf("no throughput or CPU figure: %v", res)
		}
		rtt, _ := res["rtt"].(map[string]any)
		if p99, _ := rtt["p99_us"].(float64); p99 <= 0 {
			t.Errorf("no p99: %v", res)
		}
	})

	t.Run("rate", func(t *testing.T) {
		code, res := runJSON(t, append([]string{"-mode", "rate", "-url", url, "-conns", "4", "-rate", "50"}, short...)...)
		if code != 0 || res["ok"] != true {
			t.Fatalf("exit %d: %v", code, res)
		}
		// 4 connections at 50/s for 1 s: about 200 round trips.
		if n := num(t, res, "messages"); n < 100 || n > 210 {
			t.Errorf("messages = %v, want about 200", n)
		}
	})

	t.Run("hold", func(t *testing.T) {
		code, res := runJSON(t, "-mode", "hold", "-url", url, "-conns", "50", "-src", "127.0.0.2-127.0.0.4",
			"-pid", pid, "-settle", "300ms")
		if code != 0 || res["ok"] != true {
			t.Fatalf("exit %d: %v", code, res)
		}
		if num(t, res, "opened") != 50 || num(t, res, "verified") != 50 {
			t.Errorf("opened/verified: %v", res)
		}
		if num(t, res, "loaded_rss_kib") <= 0 {
			t.Errorf("no RSS sample: %v", res)
		}
	})

	t.Run("handshakes", func(t *testing.T) {
		code, res := runJSON(t, append([]string{"-mode", "handshakes", "-url", url, "-workers", "2", "-src", "127.0.0.2-127.0.0.3"}, short...)...)
		if code != 0 || res["ok"] != true {
			t.Fatalf("exit %d: %v", code, res)
		}
		if num(t, res, "handshakes_per_sec") <= 0 {
			t.Errorf("no handshakes: %v", res)
		}
	})

	t.Run("handshakes wss", func(t *testing.T) {
		code, res := runJSON(t, append([]string{"-mode", "handshakes", "-url", startTLSEcho(t), "-workers", "2", "-insecure"}, short...)...)
		if code != 0 || res["ok"] != true {
			t.Fatalf("exit %d: %v", code, res)
		}
	})

	t.Run("too few connections fails", func(t *testing.T) {
		// Nothing listens on the closed server's port.
		dead := startEcho(t)
		addr := dead.Addr()
		_ = dead.Close()
		code, res := runJSON(t, "-mode", "hold", "-url", "ws://"+addr+"/ws", "-conns", "3", "-settle", "0s", "-dial-timeout", "2s")
		if code != 1 || res["ok"] != false {
			t.Fatalf("exit %d, want 1: %v", code, res)
		}
	})
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-url", "ws://10.0.0.1:80/ws"},                    // not loopback
		{"-url", "http://127.0.0.1:80/"},                   // not ws
		{"-url", "ws://127.0.0.1:80/", "-conns", "20000"},  // over the fd budget
		{"-url", "ws://127.0.0.1:80/", "-mode", "nope"},    // unknown mode
		{"-url", "ws://127.0.0.1:80/", "-src", "10.0.0.1"}, // source not loopback
		{"-url", "ws://127.0.0.1:80/", "-pid", "abc"},      // not a PID
		{"-url", "ws://127.0.0.1:80/", "-duration", "1h"},  // unbounded
		{"-url", "ws://127.0.0.1:80/", "-src", "127.0.0.9-127.0.0.2"},
	} {
		var out bytes.Buffer
		if code := run(args, &out, &out); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestSourceRange(t *testing.T) {
	got, err := parseSourceRange("127.0.0.2-127.0.1.1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 256 || got[0] != netip.MustParseAddr("127.0.0.2") || got[255] != netip.MustParseAddr("127.0.1.1") {
		t.Errorf("got %d addresses from %v to %v", len(got), got[0], got[len(got)-1])
	}
	one, err := parseSourceRange("127.0.0.7")
	if err != nil || len(one) != 1 {
		t.Errorf("one address: %v %v", one, err)
	}
}

func TestProcSample(t *testing.T) {
	s, err := sampleTree([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKiB <= 0 || s.Procs < 1 {
		t.Errorf("sample of self: %+v", s)
	}
	f, err := statFields([]byte("12 (a (b) c) S 1 12 12 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1"))
	if err != nil || f[1] != "1" || f[11] != "250" || f[12] != "30" {
		t.Errorf("statFields: %q %v", f, err)
	}
}
