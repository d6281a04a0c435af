package echoserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

const testTimeout = 10 * time.Second

// start runs a server on a free loopback port and closes it when the test
// ends.
func start(t *testing.T, opts Options) *Server {
	t.Helper()
	srv, err := Listen("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

// dial opens a WebSocket to path on srv. The connection is closed when the
// test ends, before the server is (cleanups run last-in first-out).
func dial(t *testing.T, srv *Server, path string, d *websocket.Dialer, h http.Header) (*websocket.Conn, *http.Response) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, resp, err := d.DialContext(ctx, "ws://"+srv.Addr()+path, h)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	return c, resp
}

func send(t *testing.T, c *websocket.Conn, mt int, msg []byte) {
	t.Helper()
	if err := c.WriteMessage(mt, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func sendText(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	send(t, c, websocket.TextMessage, []byte(msg))
}

func receive(t *testing.T, c *websocket.Conn) (int, []byte) {
	t.Helper()
	mt, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return mt, msg
}

func receiveText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	mt, msg := receive(t, c)
	if mt != websocket.TextMessage {
		t.Fatalf("got message type %d, want text", mt)
	}
	return string(msg)
}

// closeCode reads until the connection fails and returns the close code,
// or -1 if the error is not a *websocket.CloseError.
func closeCode(t *testing.T, c *websocket.Conn) (int, string) {
	t.Helper()
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		return -1, err.Error()
	}
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEchoTextAndBinary(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ID: "e1"})
	c, _ := dial(t, srv, "/ws", nil, nil)

	big := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	msgs := []struct {
		mt   int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello")},
		{websocket.BinaryMessage, []byte{0, 1, 2, 0xff}},
		{websocket.TextMessage, []byte{}},
		{websocket.BinaryMessage, []byte("__id")}, // commands are text only
		{websocket.TextMessage, []byte("__idx")},  // not a command
		{websocket.TextMessage, []byte("__closed")},
		{websocket.TextMessage, []byte("héllo, wörld ✓")},
		{websocket.BinaryMessage, big},
	}
	// Keep writing while reading, so that neither side's TCP buffers fill
	// up with echoes nobody reads. 20 MiB each way takes seconds under
	// -race on a busy 2-core machine: the per-read bound of dial is too
	// tight for the whole exchange.
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	const rounds = 20
	written := make(chan error, 1)
	go func() {
		for range rounds {
			for _, m := range msgs {
				if err := c.WriteMessage(m.mt, m.data); err != nil {
					written <- err
					return
				}
			}
		}
		written <- nil
	}()
	for range rounds {
		for i, m := range msgs {
			mt, got := receive(t, c)
			if mt != m.mt || !bytes.Equal(got, m.data) {
				t.Fatalf("message %d: got type %d, %d bytes; want type %d, %d bytes", i, mt, len(got), m.mt, len(m.data))
			}
		}
	}
	if err := <-written; err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestID(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ID: "backend-a"})
	c, _ := dial(t, srv, "/ws", nil, nil)
	sendText(t, c, "__id")
	if got := receiveText(t, c); got != "backend-a" {
		t.Fatalf("__id = %q, want backend-a", got)
	}

	anon := start(t, Options{})
	if anon.ID() != anon.Addr() {
		t.Fatalf("default ID = %q, want the address %q", anon.ID(), anon.Addr())
	}
	c2, _ := dial(t, anon, "/", nil, nil) // WebSocket on / too
	sendText(t, c2, "__id")
	if got := receiveText(t, c2); got != anon.Addr() {
		t.Fatalf("__id = %q, want %q", got, anon.Addr())
	}
}

func TestCloseCommand(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{})
	for _, tc := range []struct {
		cmd        string
		code       int
		reason     string
		wantClosed bool
	}{
		{"__close 4000 bye", 4000, "bye", true},
		{"__close 1001 going away now", 1001, "going away now", true},
		{"__close", websocket.CloseNormalClosure, "", true},
		{"__close 1005", websocket.CloseNoStatusReceived, "", true},
	} {
		c, _ := dial(t, srv, "/ws", nil, nil)
		sendText(t, c, "ping")
		if got := receiveText(t, c); got != "ping" {
			t.Fatalf("echo = %q", got)
		}
		sendText(t, c, tc.cmd)
		code, reason := closeCode(t, c)
		if code != tc.code || reason != tc.reason {
			t.Errorf("%q: close %d %q, want %d %q", tc.cmd, code, reason, tc.code, tc.reason)
		}
	}
	eventually(t, "all connections gone", func() bool { return srv.Conns() == 0 })
}

func TestCloseCommandBadArguments(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{})
	c, _ := dial(t, srv, "/ws", nil, nil)
	for _, cmd := range []string{"__close abc", "__close 70000", "__close 4000 " + strings.Repeat("x", 124)} {
		sendText(t, c, cmd)
		if got := receiveText(t, c); !strings.HasPrefix(got, "error: ") {
			t.Errorf("%q: reply %q, want an error", cmd, got)
		}
	}
	sendText(t, c, "still here")
	if got := receiveText(t, c); got != "still here" {
		t.Fatalf("echo after errors = %q", got)
	}
}

func TestClientCloseIsAnswered(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{})
	c, _ := dial(t, srv, "/ws", nil, nil)
	msg := websocket.FormatCloseMessage(4001, "client done")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	if code, _ := closeCode(t, c); code != 4001 {
		t.Fatalf("server answered close with %d, want 4001", code)
	}
	eventually(t, "connection gone", func() bool { return srv.Conns() == 0 })
}

func TestHelloAndQuery(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ID: "h1"})
	c, _ := dial(t, srv, "/ws?room=demo&hello=1", nil, nil)
	if got := receiveText(t, c); got != "hello from h1" {
		t.Fatalf("first message = %q, want hello from h1", got)
	}
	sendText(t, c, "__query")
	if got := receiveText(t, c); got != "room=demo&hello=1" {
		t.Fatalf("__query = %q", got)
	}

	// Without hello=1 the first message is the echo.
	c2, _ := dial(t, srv, "/ws?hello=0", nil, nil)
	sendText(t, c2, "first")
	if got := receiveText(t, c2); got != "first" {
		t.Fatalf("first message = %q, want the echo", got)
	}
}

func TestHeaders(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{})
	h := http.Header{}
	h.Add("X-Forwarded-For", "192.0.2.1")
	h.Add("X-Forwarded-For", "198.51.100.2")
	h.Set("X-Forwarded-Proto", "https")
	c, _ := dial(t, srv, "/ws", nil, h)
	sendText(t, c, "__headers")
	var got map[string]string
	if err := json.Unmarshal([]byte(receiveText(t, c)), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Host":                  srv.Addr(),
		"X-Forwarded-For":       "192.0.2.1, 198.51.100.2",
		"X-Forwarded-Proto":     "https",
		"Sec-Websocket-Version": "13",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

func TestSubprotocol(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		server, client []string
		want           string
	}{
		{"client order wins", []string{"a", "b"}, []string{"x", "b", "a"}, "b"},
		{"single match", []string{"a", "b"}, []string{"a"}, "a"},
		{"no match", []string{"a", "b"}, []string{"x"}, ""},
		{"server has none", nil, []string{"a"}, ""},
		{"client offers none", []string{"a"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := start(t, Options{Subprotocols: tc.server})
			c, resp := dial(t, srv, "/ws", &websocket.Dialer{Subprotocols: tc.client}, nil)
			if got := c.Subprotocol(); got != tc.want {
				t.Fatalf("subprotocol = %q, want %q", got, tc.want)
			}
			if got := resp.Header.Values("Sec-Websocket-Protocol"); len(got) > 1 {
				t.Fatalf("Sec-WebSocket-Protocol sent %d times: %q", len(got), got)
			}
			sendText(t, c, "ok")
			if got := receiveText(t, c); got != "ok" {
				t.Fatalf("echo = %q", got)
			}
		})
	}
}

func TestCompression(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		server, client bool
		want           bool
	}{
		{"both", true, true, true},
		{"server only", true, false, false},
		{"client only", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := start(t, Options{EnableCompression: tc.server})
			c, resp := dial(t, srv, "/ws", &websocket.Dialer{EnableCompression: tc.client}, nil)
			ext := resp.Header.Get("Sec-Websocket-Extensions")
			if got := strings.Contains(ext, "permessage-deflate"); got != tc.want {
				t.Fatalf("Sec-WebSocket-Extensions = %q, want deflate %v", ext, tc.want)
			}
			text := strings.Repeat("compress me please ", 5000)
			for range 3 {
				sendText(t, c, text)
				if got := receiveText(t, c); got != text {
					t.Fatalf("echo differs: %d bytes, want %d", len(got), len(text))
				}
			}
			bin := []byte{0, 0, 0, 1, 2, 3}
			send(t, c, websocket.BinaryMessage, bin)
			if mt, got := receive(t, c); mt != websocket.BinaryMessage || !bytes.Equal(got, bin) {
				t.Fatalf("binary echo = %d %v", mt, got)
			}
		})
	}
}

func TestReadLimit(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ReadLimit: 1024})
	c, _ := dial(t, srv, "/ws", nil, nil)
	send(t, c, websocket.BinaryMessage, make([]byte, 1024))
	if _, got := receive(t, c); len(got) != 1024 {
		t.Fatalf("echo of %d bytes", len(got))
	}
	send(t, c, websocket.BinaryMessage, make([]byte, 1025))
	if code, _ := closeCode(t, c); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want %d", code, websocket.CloseMessageTooBig)
	}
}

func TestKill(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{})
	c1, _ := dial(t, srv, "/ws", nil, nil)
	c2, _ := dial(t, srv, "/ws?hello=1", nil, nil)
	_ = receiveText(t, c2)
	eventually(t, "2 connections", func() bool { return srv.Conns() == 2 })

	srv.Kill()
	for _, c := range []*websocket.Conn{c1, c2} {
		// A killed backend sends no close frame: the library reports a bare
		// read error or its stand-in 1006 (abnormal closure, never sent on
		// the wire).
		if code, text := closeCode(t, c); code != -1 && code != websocket.CloseAbnormalClosure {
			t.Fatalf("after Kill: close frame %d %q, want none", code, text)
		}
	}
	eventually(t, "no connections", func() bool { return srv.Conns() == 0 })

	// Still listening.
	c3, _ := dial(t, srv, "/ws", nil, nil)
	sendText(t, c3, "again")
	if got := receiveText(t, c3); got != "again" {
		t.Fatalf("echo after Kill = %q", got)
	}
}

func TestCloseSendsGoingAway(t *testing.T) {
	t.Parallel()
	srv, err := Listen("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := dial(t, srv, "/ws", nil, nil)
	eventually(t, "1 connection", func() bool { return srv.Conns() == 1 })
	codes := make(chan int, 1)
	go func() {
		code, _ := closeCode(t, c)
		codes <- code
	}()
	begin := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if code := <-codes; code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want %d", code, websocket.CloseGoingAway)
	}
	// The client answered, so Close did not need its grace period.
	if d := time.Since(begin); d >= closeGrace {
		t.Errorf("Close took %v with a responsive client", d)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		t.Fatal("still accepting after Close")
	}
}

// TestCloseEndsAllGoroutines is deliberately not parallel:
// runtime.NumGoroutine counts the whole process, and parallel tests stay
// paused while the sequential ones run.
func TestCloseEndsAllGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()

	srv, err := Listen("127.0.0.1:0", Options{EnableCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	var clients []io.Closer
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	dialWS := func(path string) *websocket.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		c, _, err := (&websocket.Dialer{EnableCompression: true}).DialContext(ctx, "ws://"+srv.Addr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		return c
	}
	dialTCP := func(req string) net.Conn {
		c, err := net.DialTimeout("tcp", srv.Addr(), testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// A client that answers the close handshake...
	responsive := dialWS("/ws")
	// ...one that never reads (Close must not wait for it forever)...
	dialWS("/ws?hello=1")
	// ...one stuck mid-message...
	busy := dialWS("/ws")
	w, err := busy.NextWriter(websocket.BinaryMessage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	// ...a served keep-alive HTTP connection, half a request, and silence.
	keepAlive := dialTCP("GET /id HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(keepAlive), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	// A refused handshake (no Sec-WebSocket-Key) on a kept-alive connection.
	refused := dialTCP("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(refused), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("handshake without key: status %d, want 400", resp.StatusCode)
	}
	dialTCP("GET /slow HTTP/1.1\r\nHost: x\r\n")
	dialTCP("garbage\r\n\r\n")
	dialTCP("")
	if srv.Conns() != 3 {
		eventually(t, "3 WebSocket connections", func() bool { return srv.Conns() == 3 })
	}

	codes := make(chan int, 1)
	go func() {
		_ = responsive.SetReadDeadline(time.Now().Add(testTimeout))
		code, _ := closeCode(t, responsive)
		codes <- code
	}()

	begin := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > closeGrace+2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if code := <-codes; code != websocket.CloseGoingAway {
		t.Errorf("responsive client got close code %d, want %d", code, websocket.CloseGoingAway)
	}
	if n := srv.Conns(); n != 0 {
		t.Errorf("Conns after Close = %d", n)
	}

	// Close has returned; only the runtime's bookkeeping of goroutines that
	// have already returned may lag a moment.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("%d goroutines before Listen, %d after Close:\n%s", before, after, buf.String())
	}
}

func TestHTTP(t *testing.T) {
	t.Parallel()
	page := []byte("<!DOCTYPE html><title>t</title>")
	opts := Options{ID: "web-1", Page: page}
	srv := start(t, opts)
	opts.Page[0] = 'X' // Listen copied it
	bare := start(t, Options{ID: "bare"})

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: testTimeout}

	for _, tc := range []struct {
		name     string
		srv      *Server
		method   string
		path     string
		header   map[string]string
		body     string
		status   int
		wantType string
		wantBody string
		wantHdr  map[string]string
	}{
		{name: "page", srv: srv, method: "GET", path: "/", status: 200,
			wantType: "text/html; charset=utf-8", wantBody: "<!DOCTYPE html><title>t</title>"},
		{name: "no page", srv: bare, method: "GET", path: "/", status: 404},
		{name: "id", srv: srv, method: "GET", path: "/id", status: 200, wantBody: "web-1"},
		{name: "echo", srv: srv, method: "POST", path: "/echo", body: `{"a":1}`,
			header: map[string]string{"Content-Type": "application/json"},
			status: 200, wantType: "application/json", wantBody: `{"a":1}`},
		{name: "echo without type", srv: srv, method: "POST", path: "/echo", body: "raw",
			status: 200, wantType: "", wantBody: "raw"},
		{name: "anything", srv: srv, method: "GET", path: "/some/path?x=1&y=%20z",
			header: map[string]string{
				"X-Forwarded-For":   "192.0.2.1",
				"X-Forwarded-Proto": "https",
				"X-Forwarded-Host":  "example.com",
			},
			status: 200, wantType: "text/plain; charset=utf-8",
			wantBody: "web-1 GET /some/path?x=1&y=%20z",
			wantHdr: map[string]string{
				"X-Echo-X-Forwarded-For":   "192.0.2.1",
				"X-Echo-X-Forwarded-Proto": "https",
				"X-Echo-X-Forwarded-Host":  "example.com",
				"X-Backend-Id":             "web-1",
			}},
		{name: "ws path without upgrade", srv: srv, method: "DELETE", path: "/ws", status: 200,
			wantBody: "web-1 DELETE /ws"},
		{name: "page path with POST", srv: srv, method: "POST", path: "/", body: "x", status: 200,
			wantBody: "web-1 POST /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://"+tc.srv.Addr()+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 200 {
				return
			}
			if tc.wantType != "" || tc.method == "POST" && tc.path == "/echo" {
				if got := resp.Header.Get("Content-Type"); got != tc.wantType {
					t.Errorf("Content-Type %q, want %q", got, tc.wantType)
				}
			}
			if string(body) != tc.wantBody {
				t.Errorf("body %q, want %q", body, tc.wantBody)
			}
			for k, v := range tc.wantHdr {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestDemoPage(t *testing.T) {
	t.Parallel()
	p := DemoPage()
	for _, want := range []string{
		"<title>wsproxy demo</title>",
		"new WebSocket(url)",
		`(location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?room=demo"`,
		`"__id"`,
		"Reconnect",
	} {
		if !bytes.Contains(p, []byte(want)) {
			t.Errorf("demo page lacks %q", want)
		}
	}
	for _, external := range []string{"src=\"http", "href=\"http", "@import", "<link"} {
		if bytes.Contains(p, []byte(external)) {
			t.Errorf("demo page loads an external resource (%q)", external)
		}
	}
	p[0] = 'X'
	if DemoPage()[0] == 'X' {
		t.Error("DemoPage returned shared bytes")
	}
}
