package proxy

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/examples/echoserver"
)

// scheme is one way a client reaches the proxy: ws:// or wss://. The
// liveness tests run over both, since wss:// is what browsers and phones
// use.
type scheme struct {
	name string
	// start runs a proxy with one site whose routes are body (a route
	// block's text, {b0}-free: backends are given by address).
	start func(t *testing.T, body string) *schemeProxy
}

type schemeProxy struct {
	srv    *Server
	raw    func(t *testing.T, path string) *rawClient // a hand-driven WebSocket client
	dialer *websocket.Dialer
	url    string // ws:// or wss:// base, without a path
}

var schemes = []scheme{
	{"ws", func(t *testing.T, body string) *schemeProxy {
		tp := startProxy(t, ":{port} {\n"+body+"}\n", 0)
		return &schemeProxy{
			srv:    tp.srv,
			raw:    func(t *testing.T, path string) *rawClient { return dialRaw(t, tp.addr, path) },
			dialer: websocket.DefaultDialer,
			url:    "ws://" + tp.addr,
		}
	}},
	{"wss", func(t *testing.T, body string) *schemeProxy {
		cert, key := writeSelfSigned(t, t.TempDir(), "site", "localhost")
		tp := newTLSProxy(t, 0, 0)
		tp.vars["cert"], tp.vars["key"] = cert, key
		if err := tp.start(t, "localhost:{port} {\n\ttls {cert} {key}\n"+body+"}\n"); err != nil {
			t.Fatal(err)
		}
		roots := rootsFromFile(t, cert)
		return &schemeProxy{
			srv: tp.srv,
			raw: func(t *testing.T, path string) *rawClient {
				c, err := tls.Dial("tcp", tp.addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
				if err != nil {
					t.Fatal(err)
				}
				rc := rawRequestOver(t, c, wsHead(path))
				if rc.Status != 101 {
					t.Fatalf("handshake status %d", rc.Status)
				}
				return rc
			},
			dialer: wssDialer(tp.addr, roots),
			url:    "wss://localhost:" + strings.Split(tp.addr, ":")[1],
		}
	}},
}

func forSchemes(t *testing.T, body func(t *testing.T, sc scheme)) {
	for _, sc := range schemes {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			body(t, sc)
		})
	}
}

// TestLivenessOverSchemes: over ws:// and wss:// alike, an idle client is
// pinged, a silent one is cut at interval + timeout (its backend gets
// 1001), and one that answers stays.
func TestLivenessOverSchemes(t *testing.T) {
	forSchemes(t, func(t *testing.T, sc scheme) {
		addr, got := recordingBackend(t)
		echo, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { echo.Close() })
		p := sc.start(t, "\troute /echo {\n\t\tto "+echo.Addr()+"\n\t\tping_client 300ms 300ms\n\t}\n\troute /* {\n\t\tto "+addr+"\n\t\tping_client 300ms 300ms\n\t}\n")
		rc := p.raw(t, "/ws")
		start := time.Now()
		h, pl := rc.next()                                                   // the proxy's ping, never answered
		if h.Opcode != 0x9 || len(pl) != 15 || string(pl[:7]) != "wsproxy" { // and its token
			t.Fatalf("opcode %d payload %q, want the proxy's ping", h.Opcode, pl)
		}
		select {
		case code := <-got:
			if code != 1001 {
				t.Fatalf("backend got %d", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("backend got no close frame")
		}
		// interval + timeout, plus the wheel's 100ms tick and slack.
		if d := time.Since(start); d > 300*time.Millisecond+time.Second {
			t.Fatalf("closed %v after the ping", d)
		}
		rc.expectEOF()

		// A client that answers every ping stays.
		c, _, err := p.dialer.Dial(p.url+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pings := 0
		c.SetPingHandler(func(data string) error {
			pings++
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		_, _, err = c.ReadMessage()
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("a client answering pings was closed: %v", err)
		}
		if pings < 2 {
			t.Fatalf("%d pings in 1.5s at a 300ms interval", pings)
		}
	})
}

// TestWSSSessionResumption: TLS sessions resume through the proxy (the
// handshake is crypto/tls's; the loops only take the records after it),
// and a resumed connection relays like any other.
func TestWSSSessionResumption(t *testing.T) {
	t.Parallel()
	cert, key := writeSelfSigned(t, t.TempDir(), "site", "localhost")
	tp := newTLSProxy(t, 0, 0)
	tp.vars["cert"], tp.vars["key"] = cert, key
	if err := tp.start(t, "localhost:{port} {\n\ttls {cert} {key}\n\troute /* {\n\t\tto {b0}\n\t}\n}\n"); err != nil {
		t.Fatal(err)
	}
	d := wssDialer(tp.addr, rootsFromFile(t, cert))
	d.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	url := "wss://localhost:" + strings.Split(tp.addr, ":")[1] + "/ws"
	for i, wantResumed := range []bool{false, true} {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		// TLS 1.3 tickets arrive after the handshake: one echo reads them.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "hi" {
			t.Fatalf("connection %d: echo %q %v", i, msg, err)
		}
		if got := c.UnderlyingConn().(*tls.Conn).ConnectionState().DidResume; got != wantResumed {
			t.Fatalf("connection %d: resumed %v, want %v", i, got, wantResumed)
		}
		// Resumed or not, the records after the upgrade are the loops'.
		if tp.srv.loops != nil && tp.srv.TLSRecordLegs() != uint64(i+1) {
			t.Fatalf("connection %d: %d connections on the record layer, want %d", i, tp.srv.TLSRecordLegs(), i+1)
		}
		c.Close()
	}
}
