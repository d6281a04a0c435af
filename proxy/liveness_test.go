package proxy

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/keepalive"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

// TestSIGKILLedBackendGivesClient1011 kills a real backend process: the
// client, over ws:// and wss://, must hear 1011 within a second, not wait
// for a timeout.
func TestSIGKILLedBackendGivesClient1011(t *testing.T) {
	forSchemes(t, testSIGKILLedBackend)
}

func testSIGKILLedBackend(t *testing.T, sc scheme) {
	bin := filepath.Join(t.TempDir(), "echo")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/echo").CombinedOutput(); err != nil {
		t.Fatalf("build echo: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-listen", addr, "-id", "victim")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	p := sc.start(t, "\troute /* {\n\t\tto "+addr+"\n\t}\n")
	c, _, err := p.dialer.Dial(p.url+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("__id"))
	if _, id, err := c.ReadMessage(); err != nil || string(id) != "victim" {
		t.Fatalf("%q %v", id, err)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = c.ReadMessage()
	ce, ok := err.(*websocket.CloseError)
	if !ok || ce.Code != 1011 {
		t.Fatalf("client got %v, want close 1011", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("close frame %v after SIGKILL", d)
	}
}

// TestTCPKeepaliveOnBothLegs: the route's settings reach both sockets,
// whether the client's inherits them from its listener (every route on the
// port agrees) or gets them per connection (routes differ).
func TestTCPKeepaliveOnBothLegs(t *testing.T) {
	t.Run("inherited", func(t *testing.T) {
		testTCPKeepalive(t, true, ":{port} {\n\troute /* {\n\t\tto {b0}\n\t\ttcp_keepalive 17s 7s 4\n\t\ttcp_user_timeout 23s\n\t}\n}")
	})
	t.Run("per connection", func(t *testing.T) {
		testTCPKeepalive(t, false, ":{port} {\n\troute /other {\n\t\tto {b0}\n\t}\n\troute /* {\n\t\tto {b0}\n\t\ttcp_keepalive 17s 7s 4\n\t\ttcp_user_timeout 23s\n\t}\n}")
	})
}

func testTCPKeepalive(t *testing.T, inherited bool, conf string) {
	tp := startProxy(t, conf, 1)
	if _, ok := tp.srv.ports.inherited.Load(tp.port); ok != inherited {
		t.Fatalf("listener holds the routes' keepalive settings: %v, want %v", ok, inherited)
	}
	c, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
	c.WriteMessage(websocket.TextMessage, []byte("x"))
	c.ReadMessage()
	live := tp.srv.sessions.list(nil)
	if len(live) != 1 {
		t.Fatalf("%d live sessions, want 1", len(live))
	}
	client, backend := live[0].Sockets()
	want := keepalive.TCP{Idle: 17 * time.Second, Interval: 7 * time.Second, Count: 4, UserTimeout: 23 * time.Second}
	// The relay sets them once the connection has lasted tuneAfter (a
	// second): a short-lived one never needs them.
	time.Sleep(tuneAfter(want) + 300*time.Millisecond)
	for name, conn := range map[string]syscall.Conn{"client": client, "backend": backend} {
		got, on, err := keepalive.Read(conn)
		if err != nil || !on || got != want {
			t.Errorf("%s leg: %+v on=%v err=%v, want %+v", name, got, on, err, want)
		}
	}
}

func TestConnectionAndSizeLimits(t *testing.T) {
	t.Parallel()
	conf := `{
	max_connections 3
}
:{port} {
	route /one {
		to {b0}
		max_connections 1
	}
	route /* {
		to {b0}
		max_message_size 1KiB
		max_frame_size 512 1MiB
	}
}`
	tp := startProxy(t, conf, 1)
	status := func(path string) int {
		rc := rawRequest(t, tp.addr, wsHead(path))
		if rc.Status != 101 {
			rc.conn.Close()
		}
		return rc.Status
	}
	if s := status("/one"); s != 101 {
		t.Fatalf("first on /one: %d", s)
	}
	if s := status("/one"); s != 503 {
		t.Fatalf("route cap: %d, want 503", s)
	}
	status("/a")
	status("/b")
	if s := status("/c"); s != 503 {
		t.Fatalf("global cap: %d, want 503", s)
	}

	tp2 := startProxy(t, conf, 1)
	// A message over max_message_size (in small frames) closes with 1009.
	rc := dialRaw(t, tp2.addr, "/msg")
	rc.send(wireFrame(false, 0, relay.OpBinary, repeat(500), true))
	rc.send(wireFrame(false, 0, relay.OpContinuation, repeat(500), true))
	rc.send(wireFrame(true, 0, relay.OpContinuation, repeat(500), true))
	rc.expectClose(relay.CloseTooBig)
	// A frame over max_frame_size likewise.
	rc2 := dialRaw(t, tp2.addr, "/frame")
	rc2.send(wireFrame(true, 0, relay.OpBinary, repeat(600), true))
	rc2.expectClose(relay.CloseTooBig)
	// Within the limits, all is well.
	rc3 := dialRaw(t, tp2.addr, "/ok")
	rc3.send(wireFrame(true, 0, relay.OpBinary, repeat(400), true))
	if h, p := rc3.next(); h.Opcode != relay.OpBinary || len(p) != 400 {
		t.Fatalf("echo: opcode %d, %d bytes", h.Opcode, len(p))
	}
}

func TestSlowHandshakeIsCut(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, "{\n\thandshake_timeout 300ms\n}\n:{port} {\n\troute /* {\n\t\tto {b0}\n\t}\n}", 1)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")) // and stall
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("slow handshake cut after %v, want about 300ms", d)
	}
}

func TestPerIPLimits(t *testing.T) {
	t.Parallel()
	conf := "{\n\tmax_connections_per_ip 2\n\thandshake_rate_per_ip 0.001 4\n\ttrusted_proxies 127.0.0.1\n}\n:{port} {\n\troute /* {\n\t\tto {b0}\n\t}\n}"
	tp := startProxy(t, conf, 1)
	status := func(clientIP string) int {
		rc := rawRequest(t, tp.addr, wsHead("/ws", "X-Forwarded-For: "+clientIP))
		if rc.Status != 101 {
			rc.conn.Close()
		}
		return rc.Status
	}
	// Two live connections per address, then 429.
	if a, b, c := status("198.51.100.1"), status("198.51.100.1"), status("198.51.100.1"); a != 101 || b != 101 || c != 429 {
		t.Fatalf("per-IP cap: %d %d %d", a, b, c)
	}
	// Another address is not affected; its burst of 4 handshakes is, on the 5th.
	for i := 0; i < 2; i++ {
		rc := rawRequest(t, tp.addr, wsHead("/ws", "X-Forwarded-For: 203.0.113.9"))
		if rc.Status != 101 {
			t.Fatalf("handshake %d: %d", i, rc.Status)
		}
		rc.conn.Close()
	}
	waitFor(t, func() bool { return tp.srv.Sessions() <= 2 })
	if s := status("203.0.113.9"); s != 101 {
		t.Fatalf("third handshake: %d", s)
	}
	if s := status("203.0.113.9"); s != 101 {
		t.Fatalf("fourth handshake: %d", s)
	}
	if s := status("203.0.113.9"); s != 429 {
		t.Fatalf("fifth handshake within the burst window: %d, want 429", s)
	}
}

// TestWriteTimeoutDropsSlowConsumer: a client that stops reading while its
// backend keeps sending is dropped after write_timeout; the backend gets
// 1001, and the metric counts a slow consumer on the client side.
func TestWriteTimeoutDropsSlowConsumer(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, ":{port} {\n\troute /* {\n\t\tname flood\n\t\tto {b0}\n\t\twrite_timeout 500ms\n\t}\n}", 1)
	rc := dialRaw(t, tp.addr, "/ws")
	rc.send(wireFrame(true, 0, relay.OpText, []byte("__flood 100000 65536"), true))
	// Never read: the proxy must give up on this client by itself.
	deadline := time.Now().Add(10 * time.Second)
	for tp.srv.Sessions() > 0 || slowConsumers(t, tp, "flood", "client") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions, %v slow consumers after 10s", tp.srv.Sessions(), slowConsumers(t, tp, "flood", "client"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func slowConsumers(t *testing.T, tp *testProxy, route, side string) float64 {
	t.Helper()
	mfs, err := tp.srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "wsproxy_websocket_slow_consumers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["side"] == side {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
