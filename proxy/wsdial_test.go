package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/internal/testnet"
	"github.com/wsproxy/wsproxy/upgrade"
)

// fakeBackend listens on loopback and runs serve on each connection in a
// goroutine of its own; it returns the address.
func fakeBackend(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// silentBackend accepts connections and never answers; they are closed
// when the test ends.
func silentBackend(t *testing.T) string {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return fakeBackend(t, func(c net.Conn) {
		<-done
		c.Close()
	})
}

// scriptedBackend answers each handshake request with answer(key),
// written in pieces of at most chunk bytes with a pause between them, then
// closes the connection (closeAfter) or keeps it until the client does.
func scriptedBackend(t *testing.T, chunk int, pause time.Duration, closeAfter bool, answer func(key string) string) string {
	t.Helper()
	return fakeBackend(t, func(c net.Conn) {
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		out := answer(req.Header.Get("Sec-WebSocket-Key"))
		for len(out) > 0 {
			n := min(chunk, len(out))
			if _, err := io.WriteString(c, out[:n]); err != nil {
				return
			}
			out = out[n:]
			time.Sleep(pause)
		}
		if !closeAfter {
			io.Copy(io.Discard, c)
		}
	})
}

func switching(key string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		upgrade.AcceptKey([]byte(key)) + "\r\n\r\n"
}

// The loop gathers a backend's answer that arrives a few bytes at a time:
// interim 1xx heads, the 101, and a frame right behind it.
func TestBackendAnswerInPieces(t *testing.T) {
	t.Parallel()
	frame := string(wireFrame(true, 0, 1, []byte("hi"), false))
	addr := scriptedBackend(t, 7, 2*time.Millisecond, false, func(key string) string {
		return "HTTP/1.1 100 Continue\r\n\r\n" + switching(key) + frame
	})
	tp := startProxy(t, strings.ReplaceAll(simpleConf, "{b0}", addr), 0)
	rc := dialRaw(t, tp.addr, "/ws")
	h, p := rc.next()
	if h.Opcode != 1 || string(p) != "hi" {
		t.Fatalf("frame after the 101: opcode %d %q", h.Opcode, p)
	}
}

// A backend's error answer is passed on whole even when its body comes
// late, by Content-Length and when it runs to the end of the connection.
func TestBackendErrorBodyInPieces(t *testing.T) {
	t.Parallel()
	body := strings.Repeat("denied ", 300)
	for _, tc := range []struct {
		name  string
		head  string
		close bool
	}{
		{"content-length", "HTTP/1.1 403 Forbidden\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n", false},
		{"to-close", "HTTP/1.1 403 Forbidden\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := scriptedBackend(t, 500, 5*time.Millisecond, tc.close, func(string) string { return tc.head + body })
			tp := startProxy(t, strings.ReplaceAll(simpleConf, "{b0}", addr), 0)
			rc := rawRequest(t, tp.addr, wsHead("/ws"))
			if rc.Status != 403 {
				t.Fatalf("status %d", rc.Status)
			}
			rc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, _ := io.ReadAll(rc.br)
			if string(got) != body {
				t.Fatalf("body of %d bytes, want %d", len(got), len(body))
			}
		})
	}
}

// A backend that accepts and never answers is a 502 after the route's
// upstream handshake timeout, one that cannot be reached a 502 after its
// dial_timeout, and one named by host name is looked up.
func TestBackendSilentAndByName(t *testing.T) {
	t.Parallel()
	conf := `
:{port} {
	route /silent {
		to ` + silentBackend(t) + `
		upstream_handshake_timeout 300ms
	}
	route /unreachable {
		to ` + testnet.FullListener(t).Addr().String() + `
		dial_timeout 300ms
	}
	route /named {
		to localhost:` + strconv.Itoa(0) + `
	}
}`
	b := scriptedBackend(t, 4096, 0, false, switching)
	_, port, _ := net.SplitHostPort(b)
	conf = strings.Replace(conf, "localhost:0", "localhost:"+port, 1)
	tp := startProxy(t, conf, 0)
	start := time.Now()
	rc := rawRequest(t, tp.addr, wsHead("/silent"))
	if took := time.Since(start); rc.Status != 502 || took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("silent backend: status %d after %v", rc.Status, took)
	}
	start = time.Now()
	rc = rawRequest(t, tp.addr, wsHead("/unreachable"))
	if took := time.Since(start); rc.Status != 502 || took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("unreachable backend: status %d after %v", rc.Status, took)
	}
	dialRaw(t, tp.addr, "/named")
}

// The event loops read handshakes on plain ports themselves: a head that
// arrives a few bytes at a time, with frames right behind it in the last
// piece, is relayed like any other.
func TestHandshakeHeadInPieces(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := wireFrame(true, 0, 1, []byte("__id"), true)
	all := append([]byte(wsHead("/ws")), msg...)
	for len(all) > 0 {
		n := min(5, len(all))
		if _, err := c.Write(all[:n]); err != nil {
			t.Fatal(err)
		}
		all = all[n:]
		time.Sleep(time.Millisecond)
	}
	rc := &rawClient{t: t, conn: c, br: bufio.NewReader(c)}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := rc.br.ReadString('\n')
	if err != nil || !strings.Contains(line, " 101 ") {
		t.Fatalf("status line %q, %v", line, err)
	}
	for {
		l, err := rc.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	if h, p := rc.next(); h.Opcode != 1 || string(p) != "b0" {
		t.Fatalf("echo of the early frame: opcode %d %q", h.Opcode, p)
	}
	// Both sockets send frames without Nagle's delay: the client's has it
	// from the listening socket the loop accepted it on.
	ss := tp.srv.sessions.list(nil)
	if len(ss) != 1 {
		t.Fatalf("%d sessions", len(ss))
	}
	for i, sc := range func() []syscall.Conn { c, b := ss[0].Sockets(); return []syscall.Conn{c, b} }() {
		raw, _ := sc.SyscallConn()
		v := -1
		raw.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY) })
		if v != 1 {
			t.Errorf("socket %d: TCP_NODELAY %d", i, v)
		}
	}
}

// A connection whose first request is plain HTTP goes to fasthttp with
// the bytes the loop read; an upgrade later on the same connection is
// served from there.
func TestUpgradeAfterPlainRequestOnOneConnection(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	io.WriteString(c, wsHead("/ws"))
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade after a plain request: %v %v", resp, err)
	}
	rc := &rawClient{t: t, conn: c, br: br}
	rc.send(wireFrame(true, 0, 1, []byte("__id"), true))
	if h, p := rc.next(); h.Opcode != 1 || string(p) != "b0" {
		t.Fatalf("echo: opcode %d %q", h.Opcode, p)
	}
}

// handshakesInFlight starts a proxy in front of a backend that answers
// each handshake after delay, and sends it n handshakes; their clients are
// closed when the test ends.
func handshakesInFlight(t *testing.T, delay time.Duration, n int) (*testProxy, []net.Conn) {
	t.Helper()
	addr := scriptedBackend(t, 4096, 0, false, func(key string) string {
		time.Sleep(delay)
		return switching(key)
	})
	tp := startProxy(t, strings.ReplaceAll(simpleConf, "{b0}", addr), 0)
	var cs []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, wsHead("/ws"))
		cs = append(cs, c)
	}
	return tp, cs
}

// A client that leaves while its backend is still being dialed gives its
// admission back at once, not when the backend finally answers.
func TestClientGoneDuringBackendHandshake(t *testing.T) {
	t.Parallel()
	tp, cs := handshakesInFlight(t, 4*time.Second, 5)
	waitFor(t, func() bool { return tp.srv.live.Load() == 5 })
	for _, c := range cs {
		c.Close()
	}
	start := time.Now()
	waitFor(t, func() bool { return tp.srv.live.Load() == 0 })
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("admissions given back after %v", took)
	}
	// Counted as clients that left (499), not as backends that failed.
	hs := tp.srv.metrics.handshakes
	route := tp.srv.rt.Load().routes[0].name
	if gone, bad := counterValue(t, hs.WithLabelValues(route, "499")), counterValue(t, hs.WithLabelValues(route, "502")); gone != 5 || bad != 0 {
		t.Fatalf("handshakes: %v with status 499, %v with 502; want 5 and 0", gone, bad)
	}
}

// A handshake still waiting for its backend when the proxy's shutdown
// stops the loops gets a 503 that says so, not a 502 that blames the
// backend.
func TestShutdownDuringBackendHandshake(t *testing.T) {
	t.Parallel()
	tp, cs := handshakesInFlight(t, 3*time.Second, 1)
	c := cs[0]
	waitFor(t, func() bool { return tp.srv.live.Load() == 1 })
	go tp.srv.Shutdown(context.Background())
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(got), "HTTP/1.1 503") || !strings.Contains(string(got), "shutting down") {
		t.Fatalf("the client got %q, want a 503", got)
	}
}

// A client that sends its request and closes its sending side at once
// (printf ... | nc) gets no answer that blames the backend.
func TestClientHalfCloseDuringBackendHandshake(t *testing.T) {
	t.Parallel()
	tp, cs := handshakesInFlight(t, 200*time.Millisecond, 1)
	c := cs[0]
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || strings.Contains(string(got), "502") {
		t.Fatalf("read %q, %v; want nothing but the connection's end", got, err)
	}
	waitFor(t, func() bool { return tp.srv.live.Load() == 0 })
}

// A head over max_header_bytes is a 431 however it arrives, whole in one
// read included.
func TestHandshakeHeadOverLimit(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, "{\n\tmax_header_bytes 2048\n}\n"+simpleConf, 1)
	rc := rawRequest(t, tp.addr, wsHead("/ws", "X-Big: "+strings.Repeat("a", 3000)))
	if rc.Status != 431 {
		t.Fatalf("status %d, want 431", rc.Status)
	}
	dialRaw(t, tp.addr, "/ws", "X-Small: "+strings.Repeat("a", 1500))
}

// TestPeerAddr: the access log's client address is what net.TCPAddr's
// String gives, IPv4-mapped and zoned addresses included.
func TestPeerAddr(t *testing.T) {
	for _, a := range []*net.TCPAddr{
		{IP: net.ParseIP("127.0.0.1"), Port: 80}, // 16-byte, IPv4-mapped
		{IP: net.IPv4(10, 1, 2, 3).To4(), Port: 1},
		{IP: net.ParseIP("::1"), Port: 443},
		{IP: net.ParseIP("fe80::1"), Port: 5, Zone: "eth0"},
	} {
		if got, want := newPeerAddr(a).String(), a.String(); got != want {
			t.Errorf("peerAddr: %q, want %q", got, want)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
