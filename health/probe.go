package health

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/upgrade"
)

// userAgent identifies the checker's probes in backend logs.
const userAgent = "wsproxy-health"

// maxInterim bounds the 1xx responses an HTTP probe skips.
const maxInterim = 5

// probeReadBufferSize is the largest response head an HTTP probe accepts.
const probeReadBufferSize = 4 << 10

// probe runs one check of addr within c.Timeout and ctx and returns why it
// failed, or nil. req is the HTTP request of an HTTP check (httpRequest).
func probe(ctx context.Context, addr string, c *Check, req []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if c.Kind == WebSocket {
		return probeWebSocket(ctx, addr, c)
	}
	return probeHTTP(ctx, addr, c, req)
}

// httpRequest returns the request an HTTP check sends to addr. The probe
// asks for Connection: close: one connection per probe, nothing kept open
// between probes.
func httpRequest(addr string, c *Check) []byte {
	host := c.Host
	if host == "" {
		host = addr
	}
	return fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: */*\r\nConnection: close\r\n\r\n",
		c.Path, host, userAgent)
}

// probeHTTP sends req to addr and checks the response status. It reads the
// response head only.
func probeHTTP(ctx context.Context, addr string, c *Check, req []byte) (err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return probeError(ctx, c, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return err
		}
	}
	// Cancelling ctx moves the deadline to the past, ending any read or
	// write in progress without a goroutine waiting meanwhile.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := conn.Write(req); err != nil {
		return probeError(ctx, c, fmt.Errorf("writing the request: %w", err))
	}
	br := bufio.NewReaderSize(conn, probeReadBufferSize)
	var h fasthttp.ResponseHeader
	for i := 0; ; i++ {
		if err := h.Read(br); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("connection closed before a response: %w", err)
			} else {
				err = fmt.Errorf("reading the response: %w", err)
			}
			return probeError(ctx, c, err)
		}
		code := h.StatusCode()
		if code < 100 || code > 199 || code == c.Status || code == fasthttp.StatusSwitchingProtocols {
			break
		}
		if i == maxInterim {
			return errors.New("too many interim 1xx responses")
		}
	}
	if code := h.StatusCode(); !c.statusOK(code) {
		if c.Status == 0 {
			return fmt.Errorf("HTTP status %d, want 2xx", code)
		}
		return fmt.Errorf("HTTP status %d, want %d", code, c.Status)
	}
	return nil
}

// probeWebSocket performs a WebSocket handshake with addr, then sends a
// close frame (1000) and closes the connection.
func probeWebSocket(ctx context.Context, addr string, c *Check) error {
	var nonce [16]byte
	rand.Read(nonce[:])
	var key [24]byte
	base64.StdEncoding.Encode(key[:], nonce[:])

	host := c.Host
	if host == "" {
		host = addr
	}
	var h fasthttp.RequestHeader
	h.SetMethod(fasthttp.MethodGet)
	h.SetRequestURI(c.Path)
	h.Set("User-Agent", userAgent)
	h.Set("Sec-WebSocket-Version", "13")
	h.SetBytesV("Sec-WebSocket-Key", key[:])
	req := upgrade.UpstreamRequest{Header: &h, Host: host}

	up, err := upgrade.Dial(ctx, addr, c.Timeout, &req, c.Timeout)
	if err != nil {
		return probeError(ctx, c, err)
	}
	defer up.Conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		up.Conn.SetWriteDeadline(dl)
	}
	// A masked client close frame with status 1000 (RFC 6455 §5.5.1). Its
	// write failing does not make the backend less alive.
	var frame [8]byte
	frame[0] = 0x88 // FIN, close
	frame[1] = 0x80 | 2
	rand.Read(frame[2:6])
	frame[6] = 0x03 ^ frame[2]
	frame[7] = 0xe8 ^ frame[3]
	up.Conn.Write(frame[:])
	return nil
}

// probeError turns a failed probe's error into the reason it reports: a
// probe that ran out of time says so with the timeout.
func probeError(ctx context.Context, c *Check, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, fasthttp.ErrTimeout) {
		return fmt.Errorf("no answer within %v: %w", c.Timeout, err)
	}
	return err
}
