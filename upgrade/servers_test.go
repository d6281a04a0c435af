package upgrade

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	fastws "github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// These tests run the upstream handshake against two real WebSocket server
// implementations listening on 127.0.0.1.

// slowFirstRead delays the first Read so that everything a server writes
// right after its 101 is already in the socket buffer when the response is
// read: Buffered is then certain to hold it.
type slowFirstRead struct {
	net.Conn
	once sync.Once
}

func (c *slowFirstRead) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(100 * time.Millisecond) })
	return c.Conn.Read(p)
}

// clientHeader is a browser-like handshake to host offering protocols and,
// if deflate, permessage-deflate.
func clientHeader(t *testing.T, host, protocols string, deflate bool) *fasthttp.RequestHeader {
	extra := "Origin: http://" + host + "\r\n"
	if protocols != "" {
		extra += "Sec-WebSocket-Protocol: " + protocols + "\r\n"
	}
	if deflate {
		extra += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	}
	raw := strings.Replace(handshakeRequest(extra), "Host: example.com", "Host: "+host, 1)
	h := parseRequest(t, raw)
	if _, rej := Check(h, nil); rej != nil {
		t.Fatal(rej)
	}
	return h
}

// dialSlow connects to addr and runs Upgrade with a delayed first read.
func dialSlow(t *testing.T, addr string, req *UpstreamRequest) *Upstream {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	up, err := Upgrade(context.Background(), &slowFirstRead{Conn: c}, req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Conn.Close() })
	return up
}

// frame is one parsed server frame.
type frame struct {
	first   byte // FIN, RSV and opcode
	payload []byte
}

// readFrame reads one unmasked server frame with a payload under 64 KiB.
func readFrame(t *testing.T, r io.Reader) frame {
	t.Helper()
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	return frame{hdr[0], p}
}

// maskedText is a client text frame with a fixed mask.
func maskedText(s string) []byte {
	mask := [4]byte{1, 2, 3, 4}
	b := []byte{0x81, 0x80 | byte(len(s)), mask[0], mask[1], mask[2], mask[3]}
	for i := 0; i < len(s); i++ {
		b = append(b, s[i]^mask[i%4])
	}
	return b
}

func fasthttpWSServer(t *testing.T) string {
	t.Helper()
	up := fastws.FastHTTPUpgrader{
		Subprotocols:      []string{"chat", "superchat"},
		EnableCompression: true,
		CheckOrigin:       func(*fasthttp.RequestCtx) bool { return true },
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		up.Upgrade(ctx, func(c *fastws.Conn) {
			c.EnableWriteCompression(false)
			if err := c.WriteMessage(fastws.TextMessage, []byte("hello")); err != nil {
				return
			}
			for {
				mt, p, err := c.ReadMessage()
				if err != nil {
					return
				}
				if c.WriteMessage(mt, p) != nil {
					return
				}
			}
		})
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

func TestFasthttpWebsocketBackend(t *testing.T) {
	t.Parallel()
	addr := fasthttpWSServer(t)

	t.Run("subprotocol, deflate and buffered frame", func(t *testing.T) {
		t.Parallel()
		req := &UpstreamRequest{Header: clientHeader(t, addr, "superchat, chat", true)}
		up := dialSlow(t, addr, req)
		hs := up.Handshake
		if hs.Protocol != "chat" {
			t.Errorf("Protocol = %q, want the server's first choice chat", hs.Protocol)
		}
		if len(hs.ExtensionNames) != 1 || hs.ExtensionNames[0] != "permessage-deflate" || hs.RSV != RSV1 {
			t.Errorf("extensions %q names %q rsv %#x", hs.Extensions, hs.ExtensionNames, hs.RSV)
		}
		if f := readFrame(t, strings.NewReader(string(up.Buffered))); f.first != 0x81 || string(f.payload) != "hello" {
			t.Errorf("Buffered = %q", up.Buffered)
		}
		resp := AppendSwitchingProtocols(nil, []byte(sampleKey), &hs)
		if h := parseResponse(t, resp); string(h.Peek("Sec-WebSocket-Extensions")) != hs.Extensions ||
			string(h.Peek("Sec-WebSocket-Protocol")) != "chat" {
			t.Errorf("client 101:\n%s", resp)
		}
	})

	t.Run("plain Dial and echo", func(t *testing.T) {
		t.Parallel()
		req := &UpstreamRequest{Header: clientHeader(t, addr, "", false)}
		up, err := Dial(context.Background(), addr, time.Second, req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer up.Conn.Close()
		if up.Handshake.Protocol != "" || up.Handshake.Extensions != "" || up.Handshake.RSV != 0 {
			t.Errorf("Handshake = %+v", up.Handshake)
		}
		up.Conn.SetDeadline(time.Now().Add(5 * time.Second))
		r := io.MultiReader(strings.NewReader(string(up.Buffered)), up.Conn)
		if f := readFrame(t, r); string(f.payload) != "hello" {
			t.Fatalf("first frame %q", f.payload)
		}
		if _, err := up.Conn.Write(maskedText("ping")); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, r); f.first != 0x81 || string(f.payload) != "ping" {
			t.Fatalf("echo %#x %q", f.first, f.payload)
		}
	})
}

func coderServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{
			Subprotocols:       []string{"chat"},
			InsecureSkipVerify: true,
			CompressionMode:    coder.CompressionContextTakeover,
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		if err := c.Write(ctx, coder.MessageText, []byte("hello")); err != nil {
			return
		}
		for {
			mt, p, err := c.Read(ctx)
			if err != nil {
				return
			}
			if c.Write(ctx, mt, p) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestCoderWebsocketBackend(t *testing.T) {
	t.Parallel()
	addr := coderServer(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("server on %s", addr)
	}

	t.Run("subprotocol, deflate and buffered frame", func(t *testing.T) {
		t.Parallel()
		req := &UpstreamRequest{Header: clientHeader(t, addr, "superchat, chat", true)}
		up := dialSlow(t, addr, req)
		hs := up.Handshake
		if hs.Protocol != "chat" {
			t.Errorf("Protocol = %q", hs.Protocol)
		}
		if len(hs.ExtensionNames) != 1 || hs.ExtensionNames[0] != "permessage-deflate" || hs.RSV != RSV1 {
			t.Errorf("extensions %q names %q rsv %#x", hs.Extensions, hs.ExtensionNames, hs.RSV)
		}
		f := readFrame(t, strings.NewReader(string(up.Buffered)))
		if f.first&0x8f != 0x81 || f.first&0x30 != 0 {
			t.Errorf("first frame byte %#x (payload %q)", f.first, f.payload)
		}
	})

	t.Run("no offer, plain Dial and echo", func(t *testing.T) {
		t.Parallel()
		req := &UpstreamRequest{Header: clientHeader(t, addr, "", false)}
		up, err := Dial(context.Background(), addr, time.Second, req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer up.Conn.Close()
		if up.Handshake.Protocol != "" || up.Handshake.Extensions != "" {
			t.Errorf("Handshake = %+v", up.Handshake)
		}
		up.Conn.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(io.MultiReader(strings.NewReader(string(up.Buffered)), up.Conn))
		if f := readFrame(t, r); f.first != 0x81 || string(f.payload) != "hello" {
			t.Fatalf("first frame %#x %q", f.first, f.payload)
		}
		if _, err := up.Conn.Write(maskedText("ping")); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, r); f.first != 0x81 || string(f.payload) != "ping" {
			t.Fatalf("echo %#x %q", f.first, f.payload)
		}
	})

	t.Run("subprotocol the server lacks", func(t *testing.T) {
		t.Parallel()
		req := &UpstreamRequest{Header: clientHeader(t, addr, "mqtt", false)}
		up, err := Dial(context.Background(), addr, time.Second, req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		up.Conn.Close()
		if up.Handshake.Protocol != "" {
			t.Errorf("Protocol = %q", up.Handshake.Protocol)
		}
	})
}
