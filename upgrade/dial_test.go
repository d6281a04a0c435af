package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// fakeBackend accepts one connection on 127.0.0.1, reads the request head
// and hands both to serve. It returns the address and a channel that yields
// the parsed request once it was read.
func fakeBackend(t *testing.T, serve func(c net.Conn)) (string, <-chan *fasthttp.RequestHeader) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan *fasthttp.RequestHeader, 1)
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		h := new(fasthttp.RequestHeader)
		if err := h.Read(bufio.NewReader(c)); err != nil {
			t.Errorf("backend: reading the request: %v", err)
			return
		}
		reqs <- h
		serve(c)
	}()
	return ln.Addr().String(), reqs
}

// reply returns a serve function that writes resp in one write and then
// waits for the proxy to close the connection.
func reply(resp string) func(net.Conn) {
	return func(c net.Conn) {
		c.Write([]byte(resp))
		io.Copy(io.Discard, c)
	}
}

func upstreamRequest(t *testing.T) *UpstreamRequest {
	return &UpstreamRequest{Header: offerRequest(t), ClientIP: netip.MustParseAddr("192.0.2.9")}
}

func TestDialFakeBackend(t *testing.T) {
	t.Parallel()
	addr, reqs := fakeBackend(t, reply(switching("Sec-WebSocket-Protocol: superchat\r\n"+
		"Sec-WebSocket-Extensions: permessage-deflate\r\nSet-Cookie: sticky=b1\r\n")+"\x81\x05hello\x89\x00"))
	up, err := Dial(context.Background(), addr, time.Second, upstreamRequest(t), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Conn.Close()
	if string(up.Buffered) != "\x81\x05hello\x89\x00" {
		t.Errorf("Buffered = %q", up.Buffered)
	}
	hs := up.Handshake
	if hs.Protocol != "superchat" || hs.Extensions != "permessage-deflate" || hs.RSV != RSV1 ||
		len(hs.Header) != 1 || hs.Header[0] != (Field{"Set-Cookie", "sticky=b1"}) {
		t.Errorf("Handshake = %+v", hs)
	}
	req := <-reqs
	if string(req.Peek("X-Forwarded-For")) != "192.0.2.9" || string(req.Peek("Sec-WebSocket-Key")) != sampleKey ||
		string(req.Peek("Sec-WebSocket-Protocol")) != "chat, superchat" || !req.ConnectionUpgrade() {
		t.Errorf("backend got:\n%s", req.Header())
	}
	// The deadline is cleared: a read blocks instead of failing at once.
	up.Conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var b [1]byte
	if _, err := up.Conn.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after the handshake: %v", err)
	}
}

// expectClosed checks that the proxy closed its side: the backend's read
// ends with EOF rather than its own deadline.
func expectClosed(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	return err
}

func TestDialFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		serve func(net.Conn) // nil: reply(resp)
		resp  string
		check func(t *testing.T, err error)
	}{
		{name: "wrong accept", resp: strings.Replace(switching(""), sampleAccept, "xxxxxxxxxxxxxxxxxxxxxxxxxxx=", 1), check: isHandshakeError("Sec-WebSocket-Accept")},
		{name: "unoffered subprotocol", resp: switching("Sec-WebSocket-Protocol: mqtt\r\n"), check: isHandshakeError("subprotocol")},
		{name: "unoffered extension", resp: switching("Sec-WebSocket-Extensions: permessage-bzip\r\n"), check: isHandshakeError("extension")},
		{name: "garbage", resp: "\x00\x01\x02 not http at all\r\n\r\n", check: isHandshakeError("malformed")},
		{name: "closes at once", serve: func(c net.Conn) { c.(*net.TCPConn).CloseWrite() }, check: isHandshakeError("closed")},
		{name: "403 with a body", resp: "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: token\r\nContent-Length: 9\r\n\r\nforbidden",
			check: func(t *testing.T, err error) {
				var he *HTTPResponseError
				if !errors.As(err, &he) || he.StatusCode != 403 || string(he.Body) != "forbidden" || Retryable(err) {
					t.Fatalf("err = %v, want a 403 *HTTPResponseError", err)
				}
				if len(he.Header) != 2 || he.Header[1] != (Field{"X-Reason", "token"}) || !strings.Contains(he.Addr, "127.0.0.1:") {
					t.Errorf("%+v", he)
				}
			}},
		{name: "silence", serve: func(c net.Conn) { io.Copy(io.Discard, c) }, check: func(t *testing.T, err error) {
			var he *HandshakeError
			if !errors.As(err, &he) || !he.Timeout() || !Retryable(err) {
				t.Fatalf("err = %v, want a timeout *HandshakeError", err)
			}
		}},
		{name: "half a head then silence", serve: func(c net.Conn) {
			c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgr"))
			io.Copy(io.Discard, c)
		}, check: func(t *testing.T, err error) {
			var he *HandshakeError
			if !errors.As(err, &he) || !he.Timeout() || !Retryable(err) {
				t.Fatalf("err = %v, want a timeout *HandshakeError", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			closed := make(chan error, 1)
			serve := tc.serve
			if serve == nil {
				serve = reply(tc.resp)
			}
			addr, _ := fakeBackend(t, func(c net.Conn) {
				serve(c)
				closed <- expectClosed(c)
			})
			start := time.Now()
			up, err := Dial(context.Background(), addr, time.Second, upstreamRequest(t), 300*time.Millisecond)
			if up != nil {
				t.Fatal("got an Upstream with an error")
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			tc.check(t, err)
			if err := <-closed; err != nil {
				t.Errorf("the proxy did not close the backend connection: %v", err)
			}
		})
	}
}

func isHandshakeError(reason string) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var he *HandshakeError
		if !errors.As(err, &he) || !strings.Contains(err.Error(), reason) || !Retryable(err) {
			t.Fatalf("err = %v, want a retryable *HandshakeError about %q", err, reason)
		}
		if !strings.Contains(he.Addr, "127.0.0.1:") {
			t.Errorf("Addr = %q", he.Addr)
		}
	}
}

func TestDialRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Dial(context.Background(), addr, time.Second, upstreamRequest(t), time.Second)
	var de *DialError
	if !errors.As(err, &de) || de.Addr != addr || !Retryable(err) {
		t.Fatalf("err = %v, want a *DialError", err)
	}
}

func TestDialCancelled(t *testing.T) {
	t.Parallel()
	addr, reqs := fakeBackend(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-reqs
		cancel()
	}()
	start := time.Now()
	_, err := Dial(ctx, addr, time.Second, upstreamRequest(t), 10*time.Second)
	if !errors.Is(err, context.Canceled) || Retryable(err) {
		t.Fatalf("err = %v, want context.Canceled and not retryable", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("cancellation took %v", time.Since(start))
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, addr, time.Second, upstreamRequest(t), time.Second); !errors.Is(err, context.Canceled) || Retryable(err) {
		t.Fatalf("dial with a done context: %v", err)
	}
}

// TestUpgradeOverPipe runs Upgrade on a connection the caller made.
func TestUpgradeOverPipe(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		h := new(fasthttp.RequestHeader)
		br := bufio.NewReader(b)
		if err := h.Read(br); err != nil {
			return
		}
		b.Write([]byte(switching("") + "\x81\x00"))
		io.Copy(io.Discard, br)
	}()
	up, err := Upgrade(context.Background(), a, upstreamRequest(t), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Conn.Close()
	if !bytes.Equal(up.Buffered, []byte("\x81\x00")) {
		t.Errorf("Buffered = %q", up.Buffered)
	}
}
