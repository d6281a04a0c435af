package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/examples/echoserver"
	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/upgrade"
)

// testProxy is a Server on a loopback port with its own echo backends.
type testProxy struct {
	srv      *Server
	addr     string // host:port of the proxy
	port     int
	backends []*echoserver.Server
}

// startProxy starts n echo backends and a proxy whose Caddyfile is conf with
// {port} replaced by the proxy's port and {b0}, {b1}... by the backends'
// addresses.
func startProxy(t testing.TB, conf string, n int, opts ...echoserver.Options) *testProxy {
	t.Helper()
	tp := &testProxy{}
	for i := 0; i < n; i++ {
		o := echoserver.Options{ID: fmt.Sprintf("b%d", i)}
		if i < len(opts) {
			o = opts[i]
		}
		b, err := echoserver.Listen("127.0.0.1:0", o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		tp.backends = append(tp.backends, b)
		conf = strings.ReplaceAll(conf, fmt.Sprintf("{b%d}", i), b.Addr())
	}
	ln, err := listenTCP("127.0.0.1:0") // as Start opens its own
	if err != nil {
		t.Fatal(err)
	}
	tp.port = ln.Addr().(*net.TCPAddr).Port
	tp.addr = ln.Addr().String()
	conf = strings.ReplaceAll(conf, "{port}", strconv.Itoa(tp.port))
	cfg, err := config.Parse("test.Caddyfile", []byte(conf))
	if err != nil {
		ln.Close()
		t.Fatalf("config: %v\n%s", err, conf)
	}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := New(cfg, Options{Logger: log, Listeners: map[int]net.Listener{tp.port: ln}, ListenersWithoutKeepAlive: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	tp.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return tp
}

const simpleConf = `
:{port} {
	route /* {
		to {b0}
	}
}`

// rawClient speaks WebSocket frames by hand over a TCP connection.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	// Status and Header of the handshake response.
	Status int
	Header map[string]string
}

// rawRequest sends a request head verbatim and reads the response head.
func rawRequest(t testing.TB, addr, head string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return rawRequestOver(t, c, head)
}

// rawRequestOver is rawRequest on a connection the caller opened (TLS).
func rawRequestOver(t testing.TB, c net.Conn, head string) *rawClient {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{t: t, conn: c, br: bufio.NewReader(c), Header: map[string]string{}}
	line, err := rc.br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading status line: %v", err)
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		t.Fatalf("bad status line %q", line)
	}
	rc.Status, _ = strconv.Atoi(f[1])
	for {
		l, err := rc.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading header: %v", err)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		rc.Header[strings.ToLower(k)] = strings.TrimSpace(v)
	}
	c.SetDeadline(time.Time{})
	return rc
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// wsHead is a valid handshake request for path with extra header lines.
func wsHead(path string, extra ...string) string {
	h := "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\n"
}

func dialRaw(t testing.TB, addr, path string, extra ...string) *rawClient {
	t.Helper()
	rc := rawRequest(t, addr, wsHead(path, extra...))
	if rc.Status != 101 {
		t.Fatalf("handshake status %d", rc.Status)
	}
	return rc
}

var clientMask = [4]byte{0xA1, 0xB2, 0xC3, 0xD4}

// wireFrame builds one frame of any size.
func wireFrame(fin bool, rsv, op byte, payload []byte, masked bool) []byte {
	b0 := rsv | op
	if fin {
		b0 |= 0x80
	}
	var m byte
	if masked {
		m = 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n <= 0xFFFF:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if masked {
		out = append(out, clientMask[:]...)
	}
	start := len(out)
	out = append(out, payload...)
	if masked {
		for i := range payload {
			out[start+i] ^= clientMask[i&3]
		}
	}
	return out
}

func (rc *rawClient) send(b []byte) {
	rc.t.Helper()
	if _, err := rc.conn.Write(b); err != nil {
		rc.t.Fatal(err)
	}
}

// next reads one frame: header and unmasked payload.
func (rc *rawClient) next() (relay.Header, []byte) {
	rc.t.Helper()
	rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hb []byte
	for {
		if h, ok := relay.ParseHeader(hb); ok {
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(rc.br, p); err != nil {
				rc.t.Fatalf("reading payload: %v", err)
			}
			if h.Masked {
				for i := range p {
					p[i] ^= h.Mask[i&3]
				}
			}
			return h, p
		}
		c, err := rc.br.ReadByte()
		if err != nil {
			rc.t.Fatalf("reading frame: %v", err)
		}
		hb = append(hb, c)
	}
}

func (rc *rawClient) expectClose(code uint16) {
	rc.t.Helper()
	h, p := rc.next()
	if h.Opcode != relay.OpClose {
		rc.t.Fatalf("opcode %d (%q), want close %d", h.Opcode, p, code)
	}
	if got := binary.BigEndian.Uint16(p); got != code {
		rc.t.Fatalf("close code %d (%q), want %d", got, p[2:], code)
	}
}

func (rc *rawClient) expectEOF() {
	rc.t.Helper()
	rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(rc.br)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		rc.t.Fatalf("waiting for EOF: %v", err)
	}
	if len(b) > 0 {
		rc.t.Fatalf("%d bytes before EOF: %q", len(b), b)
	}
}

func repeat(n int) []byte {
	return bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
}

// recordingBackend is a raw WebSocket backend that accepts one handshake
// and reports the code of the first close frame it receives.
func recordingBackend(t *testing.T) (addr string, closeCode <-chan uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan uint16, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		key := ""
		for _, l := range strings.Split(string(buf[:n]), "\r\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Key") {
				key = strings.TrimSpace(v)
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", upgrade.AcceptKey([]byte(key)))
		rc := &rawClient{t: t, conn: c, br: bufio.NewReader(c)}
		for {
			h, p := rc.next()
			if h.Opcode == relay.OpClose && len(p) >= 2 {
				got <- uint16(p[0])<<8 | uint16(p[1])
				return
			}
		}
	}()
	return ln.Addr().String(), got
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
