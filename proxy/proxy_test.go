package proxy

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/examples/echoserver"
	"github.com/wsproxy/wsproxy/proxy/relay"
)

func dialWS(t testing.TB, url string, d *websocket.Dialer) (*websocket.Conn, *http.Response) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (resp %v)", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c, resp
}

var echoSizes = []int{0, 1, 125, 126, 65535, 65536, 16 << 20}

func TestEchoAllSizesFasthttpClient(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 2)
	c, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
	for _, n := range echoSizes {
		for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			msg := repeat(n)
			if err := c.WriteMessage(mt, msg); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			gt, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("size %d: %v", n, err)
			}
			if gt != mt || !bytes.Equal(got, msg) {
				t.Fatalf("size %d type %d: echo differs (type %d, %d bytes)", n, mt, gt, len(got))
			}
		}
	}
}

func TestEchoCoderClient(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := coder.Dial(ctx, "ws://"+tp.addr+"/ws", &coder.DialOptions{CompressionMode: coder.CompressionDisabled})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(32 << 20)
	for _, n := range echoSizes {
		msg := repeat(n)
		if err := c.Write(ctx, coder.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil || typ != coder.MessageBinary || !bytes.Equal(got, msg) {
			t.Fatalf("size %d: %v %v %d bytes", n, err, typ, len(got))
		}
	}
	if err := c.Close(coder.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close handshake through the proxy: %v", err)
	}
}

func TestFragmentedMessageWithControlFrames(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	rc := dialRaw(t, tp.addr, "/ws")
	var s []byte
	s = append(s, wireFrame(false, 0, relay.OpText, []byte("hello "), true)...)
	s = append(s, wireFrame(true, 0, relay.OpPing, []byte("p1"), true)...)
	s = append(s, wireFrame(false, 0, relay.OpContinuation, repeat(70000), true)...)
	s = append(s, wireFrame(true, 0, relay.OpPing, []byte("p2"), true)...)
	s = append(s, wireFrame(true, 0, relay.OpContinuation, []byte(" world"), true)...)
	// Sent in small pieces, so headers straddle reads.
	for i := 0; i < len(s); i += 7 {
		rc.send(s[i:min(i+7, len(s))])
	}
	want := "hello " + string(repeat(70000)) + " world"
	var got []byte
	pongs := 0
	for len(got) < len(want) {
		h, p := rc.next()
		switch h.Opcode {
		case relay.OpPong:
			pongs++
		case relay.OpText, relay.OpContinuation:
			got = append(got, p...)
		default:
			t.Fatalf("opcode %d", h.Opcode)
		}
	}
	if string(got) != want {
		t.Fatalf("reassembled message differs: %d bytes", len(got))
	}
	for pongs < 2 {
		if h, _ := rc.next(); h.Opcode == relay.OpPong {
			pongs++
		}
	}
}

func TestSubprotocolChosenByBackend(t *testing.T) {
	t.Parallel()
	opts := echoserver.Options{ID: "b0", Subprotocols: []string{"chat.v2", "chat.v1"}}
	tp := startProxy(t, simpleConf, 1, opts)
	c, resp := dialWS(t, "ws://"+tp.addr+"/ws", &websocket.Dialer{Subprotocols: []string{"chat.v1", "chat.v2"}})
	if c.Subprotocol() != "chat.v1" || resp.Header.Get("Sec-WebSocket-Protocol") != "chat.v1" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	// No offer the backend supports: no subprotocol, still connected.
	c2, _ := dialWS(t, "ws://"+tp.addr+"/ws", &websocket.Dialer{Subprotocols: []string{"x"}})
	if c2.Subprotocol() != "" {
		t.Fatalf("subprotocol %q", c2.Subprotocol())
	}
}

// TestPermessageDeflateEndToEnd sends a compressed frame (RSV1) that only the
// backend can decompress: it echoes the text, which proves the proxy passed
// the compressed bytes through untouched.
func TestPermessageDeflateEndToEnd(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1, echoserver.Options{ID: "b0", EnableCompression: true})
	rc := dialRaw(t, tp.addr, "/ws", "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover")
	if !strings.Contains(rc.Header["sec-websocket-extensions"], "permessage-deflate") {
		t.Fatalf("extension not negotiated: %v", rc.Header)
	}
	text := strings.Repeat("compress me please ", 200)
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	fw.Write([]byte(text))
	fw.Flush()
	payload := bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff})
	rc.send(wireFrame(true, relay.RSV1, relay.OpText, payload, true))
	h, p := rc.next()
	if h.Opcode != relay.OpText {
		t.Fatalf("opcode %d", h.Opcode)
	}
	if h.RSV&relay.RSV1 != 0 {
		p, _ = io.ReadAll(flate.NewReader(bytes.NewReader(append(p, 0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff))))
	}
	if string(p) != text {
		t.Fatalf("echo differs: %q", p[:min(len(p), 40)])
	}
	// With the fasthttp/websocket client negotiating compression end to end.
	c, _ := dialWS(t, "ws://"+tp.addr+"/ws", &websocket.Dialer{EnableCompression: true})
	c.WriteMessage(websocket.TextMessage, []byte(text))
	if _, got, err := c.ReadMessage(); err != nil || string(got) != text {
		t.Fatalf("compressed echo: %v", err)
	}
}

func TestCloseCodesBothWays(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	// Client-initiated: the backend answers with the same code.
	rc := dialRaw(t, tp.addr, "/ws")
	rc.send(relay.AppendClose(nil, 4001, "client bye", clientMask, true))
	rc.expectClose(4001)
	rc.expectEOF()

	// Backend-initiated.
	c, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
	c.WriteMessage(websocket.TextMessage, []byte("__close 4002 backend bye"))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4002 || ce.Text != "backend bye" {
		t.Fatalf("got %v", err)
	}
}

func TestBackendCrashGivesClient1011(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	rc := dialRaw(t, tp.addr, "/ws")
	rc.send(wireFrame(true, 0, relay.OpText, []byte("__id"), true))
	if _, p := rc.next(); string(p) != "b0" {
		t.Fatalf("id %q", p)
	}
	start := time.Now()
	tp.backends[0].Kill()
	rc.expectClose(relay.CloseInternalError)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("close frame after %v", d)
	}
}

func TestClientVanishingGivesBackend1001(t *testing.T) {
	t.Parallel()
	addr, got := recordingBackend(t)
	tp := startProxy(t, strings.ReplaceAll(simpleConf, "{b0}", addr), 0)
	rc := dialRaw(t, tp.addr, "/ws")
	rc.conn.Close()
	select {
	case code := <-got:
		if code != relay.CloseGoingAway {
			t.Fatalf("backend got %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend got no close frame")
	}
}

func TestProtocolViolationClosesBothWith1002(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	rc := dialRaw(t, tp.addr, "/ws")
	rc.send(wireFrame(true, 0, 0x3, nil, true)) // reserved opcode
	rc.expectClose(relay.CloseProtocolError)
	rc.send(wireFrame(true, relay.RSV2, relay.OpText, []byte("x"), true)) // ignored after close
	rc.send(relay.AppendClose(nil, relay.CloseProtocolError, "", clientMask, true))
	rc.expectEOF()
}

func TestBackendSendsRightAfter101(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	c, _ := dialWS(t, "ws://"+tp.addr+"/ws?hello=1", nil)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "hello from b0" {
		t.Fatalf("got %q %v", p, err)
	}
}

// backendHeaders opens a WebSocket to url with hdr and returns the
// connection and the handshake fields the echo backend says it got.
func backendHeaders(t *testing.T, url string, hdr http.Header) (*websocket.Conn, string) {
	t.Helper()
	c, _, err := (&websocket.Dialer{}).Dial(url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.WriteMessage(websocket.TextMessage, []byte("__headers"))
	_, p, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return c, string(p)
}

func TestForwardedHeadersToBackend(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	hdr := http.Header{"X-Custom": {"yes"}, "Cookie": {"sid=42"}, "Origin": {"http://example.com"}}
	c, s := backendHeaders(t, "ws://"+tp.addr+"/ws?room=7", hdr)
	for _, want := range []string{`"X-Custom":"yes"`, `"Cookie":"sid=42"`, `"X-Forwarded-For":"127.0.0.1"`, `"X-Forwarded-Proto":"http"`, `"Origin":"http://example.com"`} {
		if !strings.Contains(strings.ReplaceAll(s, " ", ""), want) {
			t.Errorf("backend headers lack %s: %s", want, s)
		}
	}
	c.WriteMessage(websocket.TextMessage, []byte("__query"))
	if _, p, _ := c.ReadMessage(); string(p) != "room=7" {
		t.Errorf("query %q", p)
	}
}

func TestHandshakeStatusCodes(t *testing.T) {
	t.Parallel()
	conf := `
:{port} {
	route /ws {
		to {b0}
		origins https://*.example.com
		allow_empty_origin false
	}
	route /dead {
		to 127.0.0.1:1
		lb_retries 0
	}
	route /bad {
		to {bad}
		lb_retries 1
	}
	route /down {
		to {b1}
	}
}`
	// A backend that answers with a wrong Sec-WebSocket-Accept.
	bad, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	go func() {
		for {
			c, err := bad.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Read(make([]byte, 4096))
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n")
				time.Sleep(100 * time.Millisecond)
			}()
		}
	}()
	conf = strings.ReplaceAll(conf, "{bad}", bad.Addr().String())
	tp := startProxy(t, conf, 2)
	tp.srv.backends.Backend(tp.backends[1].Addr(), 1).SetHealthy(false)

	ok := "Origin: https://app.example.com"
	cases := []struct {
		name string
		head string
		want int
	}{
		{"ok", wsHead("/ws", ok), 101},
		{"POST", strings.Replace(wsHead("/ws", ok), "GET", "POST", 1), 405},
		{"HTTP/1.0", strings.Replace(wsHead("/ws", ok), "HTTP/1.1", "HTTP/1.0", 1), 400},
		{"no Upgrade", strings.Replace(wsHead("/ws", ok), "Upgrade: websocket\r\n", "", 1), 400},
		{"Upgrade not websocket", strings.Replace(wsHead("/ws", ok), "Upgrade: websocket", "Upgrade: websockets", 1), 400},
		{"Connection without upgrade", strings.Replace(wsHead("/ws", ok), "Connection: Upgrade", "Connection: keep-alive", 1), 400},
		{"Connection list", strings.Replace(wsHead("/ws", ok), "Connection: Upgrade", "Connection: keep-alive, UPGRADE", 1), 101},
		{"version 8", strings.Replace(wsHead("/ws", ok), "Version: 13", "Version: 8", 1), 426},
		{"short key", strings.Replace(wsHead("/ws", ok), testKey, "c2hvcnQ=", 1), 400},
		{"no key", strings.Replace(wsHead("/ws", ok), "Sec-WebSocket-Key: "+testKey+"\r\n", "", 1), 400},
		{"no Host", strings.Replace(wsHead("/ws", ok), "Host: localhost\r\n", "", 1), 400},
		{"huge header", wsHead("/ws", ok, "X-Big: "+strings.Repeat("a", 20000)), 431},
		{"foreign origin", wsHead("/ws", "Origin: https://evil.com"), 403},
		{"apex origin", wsHead("/ws", "Origin: https://example.com"), 403},
		{"missing origin", wsHead("/ws"), 403},
		{"no route", wsHead("/nowhere", ok), 404},
		{"HTTP/2.0", strings.Replace(wsHead("/ws", ok), "HTTP/1.1", "HTTP/2.0", 1), 505},
		{"malformed Host", strings.Replace(wsHead("/ws", ok), "Host: localhost", "Host: local host", 1), 400},
		{"Host with userinfo", strings.Replace(wsHead("/nowhere", ok), "Host: localhost", "Host: a@localhost", 1), 400},
		// RFC 9112 §2.2: a bare LF may end a line, and empty lines before
		// the request line are ignored. Answered at once, not after the
		// handshake timeout.
		{"bare LF", strings.ReplaceAll(wsHead("/ws", ok), "\r\n", "\n"), 101},
		{"bare LF blank line", strings.TrimSuffix(wsHead("/ws", ok), "\r\n") + "\n", 101},
		{"bare LF before CRLF blank line", strings.TrimSuffix(wsHead("/ws", ok), "\r\n\r\n") + "\n\r\n", 101},
		{"blank lines first", "\r\n\n" + wsHead("/ws", ok), 101},
		{"plain GET with bare LF", "GET /nowhere HTTP/1.1\nHost: localhost\n\n", 404},
		{"dead backend", wsHead("/dead"), 502},
		{"bad accept", wsHead("/bad"), 502},
		{"no healthy backend", wsHead("/down"), 503},
	}
	for _, c := range cases {
		rc := rawRequest(t, tp.addr, c.head)
		if rc.Status != c.want {
			t.Errorf("%s: status %d, want %d", c.name, rc.Status, c.want)
		}
		if c.want == 426 && rc.Header["sec-websocket-version"] != "13" {
			t.Errorf("426 without Sec-WebSocket-Version: 13: %v", rc.Header)
		}
		rc.conn.Close()
	}
}

// TestBackendHTTPAnswerPassesThrough: a backend refusing the handshake with
// its own status (auth) reaches the client unchanged, and is not retried.
func TestBackendHTTPAnswerPassesThrough(t *testing.T) {
	t.Parallel()
	addr := fakeBackend(t, func(c net.Conn) {
		c.Read(make([]byte, 4096))
		io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 6\r\n\r\ndenied")
		c.Close()
	})
	tp := startProxy(t, strings.ReplaceAll(simpleConf, "{b0}", addr), 0)
	rc := rawRequest(t, tp.addr, wsHead("/ws"))
	if rc.Status != 401 || rc.Header["www-authenticate"] != "Bearer" {
		t.Fatalf("status %d header %v", rc.Status, rc.Header)
	}
}

func TestRetryNextBackend(t *testing.T) {
	t.Parallel()
	conf := `
:{port} {
	route /* {
		to 127.0.0.1:1 {b0}
	}
}`
	tp := startProxy(t, conf, 1)
	for i := 0; i < 4; i++ {
		c, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
		c.WriteMessage(websocket.TextMessage, []byte("__id"))
		if _, p, err := c.ReadMessage(); err != nil || string(p) != "b0" {
			t.Fatalf("got %q %v", p, err)
		}
	}
}

func TestRouting(t *testing.T) {
	t.Parallel()
	conf := `
http://a.test:{port} {
	route /exact {
		to {b0}
	}
	route /pre/* {
		to {b1}
	}
	route /glob/*/x {
		to {b2}
	}
	route /q {
		query room=lobby-* token
		to {b3}
	}
}
http://*.wild.test:{port} {
	route {
		to {b4}
	}
}
:{port} {
	route /* {
		to {b5}
	}
}`
	tp := startProxy(t, conf, 6)
	cases := []struct{ host, path, want string }{
		{"a.test", "/exact", "b0"},
		{"A.TEST", "/exact", "b0"},
		{"a.test", "/exact/more", ""},
		{"a.test", "/pre/deep/path", "b1"},
		{"a.test", "/glob/one/x", "b2"},
		{"a.test", "/glob/one/two/x", ""},
		{"a.test", "/q?room=lobby-3&token=t", "b3"},
		{"a.test", "/q?room=lobby-3", ""},
		{"a.test", "/q?room=other&token=t", ""},
		{"x.wild.test", "/anything", "b4"},
		{"x.y.wild.test", "/anything", "b5"},
		{"other.test", "/", "b5"},
	}
	for _, c := range cases {
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("tcp", tp.addr) }}
		conn, resp, err := d.Dial("ws://"+c.host+c.path, nil)
		if c.want == "" {
			if err == nil || resp == nil || resp.StatusCode != 404 {
				t.Errorf("%s%s: want 404, got %v", c.host, c.path, err)
			}
			if conn != nil {
				conn.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s%s: %v", c.host, c.path, err)
			continue
		}
		conn.WriteMessage(websocket.TextMessage, []byte("__id"))
		if _, p, _ := conn.ReadMessage(); string(p) != c.want {
			t.Errorf("%s%s: routed to %q, want %s", c.host, c.path, p, c.want)
		}
		conn.Close()
	}
}

// TestForwardingFieldsFollowTrust: a trusted proxy's X-Forwarded-For is
// appended to and its Forwarded and X-Real-IP pass; anyone else's are
// dropped, on the plain HTTP path and on the WebSocket handshake alike.
func TestForwardingFieldsFollowTrust(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, global string
		xff, real    string
	}{
		{"untrusted", "", "127.0.0.1", ""},
		{"trusted", "{\n\ttrusted_proxies 127.0.0.1\n}\n", "10.9.8.7, 127.0.0.1", "10.9.8.7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := startProxy(t, c.global+simpleConf, 1)
			var req fasthttp.Request
			var resp fasthttp.Response
			req.SetRequestURI("http://" + tp.addr + "/api")
			req.Header.Set("X-Forwarded-For", "10.9.8.7")
			req.Header.Set("X-Real-IP", "10.9.8.7")
			if err := fasthttp.DoTimeout(&req, &resp, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if got := string(resp.Header.Peek("X-Echo-X-Forwarded-For")); got != c.xff {
				t.Errorf("plain HTTP: X-Forwarded-For %q, want %q", got, c.xff)
			}
			if got := string(resp.Header.Peek("X-Echo-X-Real-IP")); got != c.real {
				t.Errorf("plain HTTP: X-Real-IP %q, want %q", got, c.real)
			}
			hdr := http.Header{"X-Forwarded-For": {"10.9.8.7"}, "X-Real-Ip": {"10.9.8.7"}}
			_, p := backendHeaders(t, "ws://"+tp.addr+"/ws", hdr)
			seen := strings.ReplaceAll(p, " ", "")
			if !strings.Contains(seen, `"X-Forwarded-For":"`+strings.ReplaceAll(c.xff, " ", "")+`"`) {
				t.Errorf("WebSocket: the backend saw %s, want X-Forwarded-For %q", p, c.xff)
			}
			if strings.Contains(seen, "X-Real-Ip") != (c.real != "") {
				t.Errorf("WebSocket: the backend saw %s, want X-Real-IP only from a trusted proxy", p)
			}
		})
	}
}

func TestPlainHTTPProxying(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, simpleConf, 1)
	var req fasthttp.Request
	var resp fasthttp.Response
	req.SetRequestURI("http://" + tp.addr + "/api/items?x=1")
	req.Header.Set("X-Forwarded-For", "10.9.8.7")
	req.Header.Set("Connection", "keep-alive, X-Drop-Me")
	req.Header.Set("X-Drop-Me", "secret")
	if err := fasthttp.DoTimeout(&req, &resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 || !strings.HasPrefix(string(resp.Body()), "b0 GET /api/items?x=1") {
		t.Fatalf("%d %q", resp.StatusCode(), resp.Body())
	}
	// Not a trusted proxy: what it says of its client is dropped.
	if got := string(resp.Header.Peek("X-Echo-X-Forwarded-For")); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if got := string(resp.Header.Peek("X-Echo-X-Forwarded-Proto")); got != "http" {
		t.Errorf("X-Forwarded-Proto %q", got)
	}
	if got := string(resp.Header.Peek("X-Echo-X-Forwarded-Host")); got != tp.addr {
		t.Errorf("X-Forwarded-Host %q", got)
	}

	// A large body both ways, streamed.
	body := repeat(8 << 20)
	req.Reset()
	resp.Reset()
	req.SetRequestURI("http://" + tp.addr + "/echo")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/octet-stream")
	req.SetBody(body)
	if err := fasthttp.DoTimeout(&req, &resp, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 || !bytes.Equal(resp.Body(), body) {
		t.Fatalf("POST echo: %d, %d bytes", resp.StatusCode(), len(resp.Body()))
	}

	// Unroutable and dead backends.
	req.Reset()
	resp.Reset()
	hc := &fasthttp.HostClient{Addr: tp.addr}
	req.SetRequestURI("http://example.org/x")
	if err := hc.DoTimeout(&req, &resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 {
		t.Fatalf("any-host site: status %d", resp.StatusCode())
	}
	tp.backends[0].Close()
	resp.Reset()
	if err := hc.DoTimeout(&req, &resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 502 {
		t.Fatalf("dead backend: status %d", resp.StatusCode())
	}
}

func TestNoLeaksAfterManyConnections(t *testing.T) {
	tp := startProxy(t, simpleConf, 2)
	// Warm up pools and the backends' accept loops.
	for i := 0; i < 5; i++ {
		c, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
		c.Close()
	}
	waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
	g0, fd0 := goruntime.NumGoroutine(), openFDs(t)
	for i := 0; i < 200; i++ {
		c, _, err := (&websocket.Dialer{}).Dial("ws://"+tp.addr+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.WriteMessage(websocket.TextMessage, []byte("x"))
		c.ReadMessage()
		switch i % 3 {
		case 0:
			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
			c.ReadMessage()
		case 1:
			c.UnderlyingConn().Close()
		case 2:
			c.WriteMessage(websocket.TextMessage, []byte("__close 1000 x"))
			c.ReadMessage()
		}
		c.Close()
	}
	waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
	waitFor(t, func() bool { return goruntime.NumGoroutine() <= g0+2 && openFDs(t) <= fd0+2 })
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met (goroutines %d, fds %d)", goruntime.NumGoroutine(), openFDs(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
