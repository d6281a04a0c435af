package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
)

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT: with it, binding
// a source address leaves the port choice to connect, which then needs the
// whole 4-tuple, not the source address and port alone, to be unique.
const ipBindAddressNoPort = 24

// client opens WebSocket connections for one run: it fills in the URL
// template, spreads connections over the source addresses and holds the
// one Dialer all connections share.
type client struct {
	urls   []string // templates with {i}
	src    []netip.Addr
	next   atomic.Uint64
	dialer *websocket.Dialer
}

// bufferPool lends write buffers to idle-heavy runs so an idle connection
// does not keep one.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() any  { return b.p.Get() }
func (b *bufferPool) Put(v any) { b.p.Put(v) }

// newClient returns a client for cfg. readBuf and writeBuf size each
// connection's buffers; pooled writes borrow the write buffer per message
// instead of keeping one per connection.
func newClient(cfg *config, readBuf, writeBuf int, pooledWrites bool) *client {
	c := &client{urls: cfg.urls, src: cfg.src}
	d := &websocket.Dialer{
		NetDialContext:   c.dialTCP,
		HandshakeTimeout: cfg.dialTimeout,
		ReadBufferSize:   readBuf,
		WriteBufferSize:  writeBuf,
		// Proxy stays nil: never route through an HTTP proxy from the
		// environment.
	}
	if pooledWrites {
		d.WriteBufferPool = &bufferPool{}
	}
	if strings.Contains(cfg.url, "wss:") {
		d.TLSClientConfig = &tls.Config{
			InsecureSkipVerify: cfg.insecure, //nolint:gosec // self-signed benchmark certificates, loopback only
			// One key exchange every server supports, so each does the same
			// work per handshake (Go would also offer a post-quantum hybrid
			// that some peers do not implement). No session cache: every
			// handshake is a full one, as for a new client.
			CurvePreferences: []tls.CurveID{tls.X25519},
		}
	}
	c.dialer = d
	return c
}

// urlFor returns the URL for connection (or handshake) number i.
func (c *client) urlFor(i int) string {
	return strings.ReplaceAll(c.urls[i%len(c.urls)], "{i}", strconv.Itoa(i))
}

// dial opens connection number i, bounded by timeout.
func (c *client) dial(ctx context.Context, i int, timeout time.Duration) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ws, resp, err := c.dialer.DialContext(ctx, c.urlFor(i), nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	return ws, nil
}

// dialTCP connects to a loopback address, from the next source address in
// round-robin order when a source range is set.
func (c *client) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	if !hostIsLoopback(addr) {
		return nil, fmt.Errorf("refusing to dial %s: not a loopback address", addr)
	}
	d := net.Dialer{}
	if len(c.src) > 0 {
		ip := c.src[int(c.next.Add(1)-1)%len(c.src)]
		d.LocalAddr = &net.TCPAddr{IP: ip.AsSlice()}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			return errors.Join(err, serr)
		}
	}
	return d.DialContext(ctx, network, addr)
}

// closeConn sends a close frame and waits up to grace for the server's,
// so that the server closes the TCP connection first (TIME_WAIT stays on
// its side, not on our ephemeral ports), then closes the connection.
func closeConn(ws *websocket.Conn, grace time.Duration) {
	deadline := time.Now().Add(grace)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := ws.WriteControl(websocket.CloseMessage, msg, deadline); err == nil {
		_ = ws.SetReadDeadline(deadline)
		var err error
		for err == nil {
			_, _, err = ws.NextReader()
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			// The server's close frame came; now wait for its FIN.
			var b [64]byte
			for {
				if _, err := ws.NetConn().Read(b[:]); err != nil {
					break
				}
			}
		}
	}
	_ = ws.Close()
}

// echoOnce sends msg as a binary message and reads the echo into buf
// (which must hold len(msg) bytes), within timeout.
func echoOnce(ws *websocket.Conn, msg, buf []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	_ = ws.SetWriteDeadline(deadline)
	_ = ws.SetReadDeadline(deadline)
	if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return readEcho(ws, msg, buf)
}

// readEcho reads one message into buf and checks that it is the binary
// echo of msg. Text messages (a backend's greeting) are skipped.
func readEcho(ws *websocket.Conn, msg, buf []byte) error {
	for {
		mt, r, err := ws.NextReader()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		n, err := readFull(r, buf[:len(msg)])
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if mt == websocket.TextMessage {
			continue
		}
		if extra, _ := r.Read(buf[:1]); extra > 0 || n != len(msg) {
			return fmt.Errorf("echo of a %d-byte message has a different length", len(msg))
		}
		// Compare the ends and a middle byte: cheap, and catches
		// truncation and mix-ups between messages.
		if buf[0] != msg[0] || buf[n-1] != msg[n-1] || buf[n/2] != msg[n/2] {
			return errors.New("echo differs from the message sent")
		}
		return nil
	}
}

// readFull reads until buf is full or r ends; a short message is not an
// error here (the caller checks the length).
func readFull(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}
