package relay

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

// harness is a relay between a test "client" and a test "backend", both
// plain TCP sockets that speak raw frames.
type harness struct {
	client, backend net.Conn // the peers' ends
	done            chan *Session
	tls             bool        // the client speaks TLS
	took            atomic.Bool // its leg moved to the record layer
}

func startHarness(t testing.TB, cfg Config, clientPre, backendPre []byte) *harness {
	t.Helper()
	c, pc := tcpPair(t)
	b, pb := tcpPair(t)
	h := &harness{client: c, backend: b, done: make(chan *Session, 1)}
	if cfg.Pool == nil {
		cfg.Pool = NewPool(0)
	}
	cfg.Client.Masked = true
	cfg.OnDone = func(s *Session) { h.done <- s }
	var pcc, pbc net.Conn = pc, pb
	if strings.HasSuffix(t.Name(), "/tls") {
		// The client speaks TLS to the proxy, as a wss:// client does;
		// the loops take the TLS server connection over like a plain one.
		c, pcc = tlsPair(t, c, pc)
		h.client = c
		cfg.Loops = testLoops
		h.tls = true
		if cfg.recHook == nil {
			cfg.recHook = nonceCheck(t)
		}
		took := cfg.recHook.took
		cfg.recHook.took = func() {
			h.took.Store(true)
			if took != nil {
				took()
			}
		}
	} else if strings.HasSuffix(t.Name(), "/goroutines") {
		// Not a *net.TCPConn: the session keeps a goroutine per direction,
		// as it does for a TLS leg.
		pcc, pbc = opaqueConn{pc.(*net.TCPConn)}, opaqueConn{pb.(*net.TCPConn)}
	} else if cfg.Loops == nil {
		cfg.Loops = testLoops
	}
	NewSession(&cfg).Start(pcc, clientPre, pbc, backendPre)
	t.Cleanup(func() { c.Close(); b.Close() })
	return h
}

func (h *harness) wait(t testing.TB) *Session {
	t.Helper()
	select {
	case s := <-h.done:
		if h.tls && !h.took.Load() {
			t.Error("the TLS leg never moved to the record layer")
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end")
		return nil
	}
}

func readFull(t testing.TB, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// readFrame reads one whole frame and returns its header and raw bytes.
func readFrame(t testing.TB, c net.Conn) (Header, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 0, 64)
	one := make([]byte, 1)
	for {
		if h, ok := ParseHeader(buf); ok {
			rest := readFull(t, c, int(h.Length))
			return h, append(buf, rest...)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			t.Fatalf("reading frame header: %v (have %x)", err, buf)
		}
		buf = append(buf, one[0])
	}
}

func expectClose(t testing.TB, c net.Conn, code uint16) {
	t.Helper()
	h, f := readFrame(t, c)
	if h.Opcode != OpClose {
		t.Fatalf("got opcode %d, want close", h.Opcode)
	}
	got, reason := ClosePayload(f, &h, nil)
	if got != code {
		t.Fatalf("close code %d (%q), want %d", got, reason, code)
	}
}

func expectEOF(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	if n, err := c.Read(b); err == nil {
		t.Fatalf("read %d bytes (%x), want EOF", n, b[:n])
	}
}

var testMask = [4]byte{0x11, 0x22, 0x33, 0x44}

// testLoops serve every test that runs in loop mode.
var testLoops *Loops

func TestMain(m *testing.M) {
	ls, err := NewLoops(2, 0)
	if err != nil {
		panic(err)
	}
	testLoops = ls
	code := m.Run()
	ls.Close()
	os.Exit(code)
}

// opaqueConn hides a TCP connection's type, so the relay drives it with
// goroutines as it would a TLS connection.
type opaqueConn struct{ *net.TCPConn }

func (c opaqueConn) CloseWrite() error { return c.TCPConn.CloseWrite() }

// forModes runs a relay test on the event loops, with a TLS client on the
// loops, and with a goroutine per direction (the driver for connections
// the loops cannot take); startHarness picks the mode from the name.
func forModes(t *testing.T, body func(t *testing.T)) {
	for _, mode := range []string{"loop", "goroutines", "tls"} {
		t.Run(mode, func(t *testing.T) {
			if !strings.Contains(t.Name(), "NoGoroutineLeak") {
				t.Parallel()
			}
			body(t)
		})
	}
}

func TestRelayPassesFramesUntouched(t *testing.T) {
	forModes(t, func(t *testing.T) {
		h := startHarness(t, Config{}, nil, nil)
		for _, n := range []int{0, 1, 125, 126, 65535, 65536, 16 << 20} {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i * 7)
			}
			up := frame(true, 0, OpBinary, p, true, testMask)
			go h.client.Write(up)
			if got := readFull(t, h.backend, len(up)); !bytes.Equal(got, up) {
				t.Fatalf("client→backend %d bytes altered", n)
			}
			down := frame(true, 0, OpText, p, false, testMask)
			go h.backend.Write(down)
			if got := readFull(t, h.client, len(down)); !bytes.Equal(got, down) {
				t.Fatalf("backend→client %d bytes altered", n)
			}
		}
	})
}

func TestRelayFragmentsAndControlFramesByteByByte(t *testing.T) {
	forModes(t, func(t *testing.T) {
		h := startHarness(t, Config{}, nil, nil)
		var s []byte
		s = append(s, frame(false, 0, OpText, []byte("frag-1 "), true, testMask)...)
		s = append(s, frame(true, 0, OpPing, []byte("ping"), true, testMask)...)
		s = append(s, frame(false, 0, OpContinuation, bytes.Repeat([]byte("x"), 300), true, testMask)...)
		s = append(s, frame(true, 0, OpPong, []byte("pong"), true, testMask)...)
		s = append(s, frame(true, 0, OpContinuation, []byte("end"), true, testMask)...)
		go func() {
			for i := range s {
				h.client.Write(s[i : i+1])
			}
		}()
		if got := readFull(t, h.backend, len(s)); !bytes.Equal(got, s) {
			t.Fatal("stream altered when sent a byte at a time")
		}
	})
}

func TestRelayForwardsPreReadBytes(t *testing.T) {
	forModes(t, func(t *testing.T) {
		up := frame(true, 0, OpText, []byte("early client"), true, testMask)
		down := frame(true, 0, OpText, []byte("hello from backend"), false, testMask)
		// The client's pre-read bytes end mid-frame: the rest comes from the socket.
		next := frame(true, 0, OpText, []byte("second"), true, testMask)
		pre := append(append([]byte{}, up...), next[:3]...)
		h := startHarness(t, Config{}, pre, down)
		h.client.Write(next[3:])
		want := append(append([]byte{}, up...), next...)
		if got := readFull(t, h.backend, len(want)); !bytes.Equal(got, want) {
			t.Fatal("client pre-read bytes not forwarded intact")
		}
		if got := readFull(t, h.client, len(down)); !bytes.Equal(got, down) {
			t.Fatal("backend pre-read bytes not forwarded")
		}
	})
}

func TestRelayCloseHandshakePassesThrough(t *testing.T) {
	forModes(t, func(t *testing.T) {
		h := startHarness(t, Config{}, nil, nil)
		h.client.Write(AppendClose(nil, 4001, "client done", testMask, true))
		expectClose(t, h.backend, 4001)
		h.backend.Write(AppendClose(nil, 4001, "ok", [4]byte{}, false))
		expectClose(t, h.client, 4001)
		// Close frames went both ways: the proxy FINs the client by itself.
		expectEOF(t, h.client)
		h.client.Close()
		expectEOF(t, h.backend)
		h.backend.Close()
		s := h.wait(t)
		if s.CloseCode != 4001 || s.ClosedBy != SideClient {
			t.Fatalf("close %d by %v", s.CloseCode, s.ClosedBy)
		}
		if s.ClientToBackend.Frames != 1 || s.BackendToClient.Frames != 1 {
			t.Fatalf("frames %+v %+v", s.ClientToBackend, s.BackendToClient)
		}
	})
}

// On the loops the proxy closes the client's socket outright once close
// frames have gone both ways: the session ends when the backend's FIN
// comes, whether or not the client ever closes its end.
func TestRelayCloseHandshakeDoesNotWaitForClientFIN(t *testing.T) {
	for _, mode := range []string{"loop", "tls"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			// No close timeout ends it instead within wait's 10 s.
			h := startHarness(t, Config{CloseTimeout: time.Minute}, nil, nil)
			h.client.Write(AppendClose(nil, 1000, "bye", testMask, true))
			expectClose(t, h.backend, 1000)
			h.backend.Write(AppendClose(nil, 1000, "", [4]byte{}, false))
			expectClose(t, h.client, 1000)
			expectEOF(t, h.client)
			h.backend.Close() // the backend closes its end; the client never does
			s := h.wait(t)
			if s.CloseCode != 1000 || s.ClosedBy != SideClient {
				t.Fatalf("close %d by %v", s.CloseCode, s.ClosedBy)
			}
		})
	}
}

func TestRelayClientVanishesBackendGets1001(t *testing.T) {
	forModes(t, func(t *testing.T) {
		h := startHarness(t, Config{}, nil, nil)
		h.client.Close()
		expectClose(t, h.backend, CloseGoingAway)
		expectEOF(t, h.backend)
		h.backend.Close()
		if s := h.wait(t); s.CloseCode != CloseGoingAway || s.ClosedBy != SideProxy {
			t.Fatalf("close %d by %v", s.CloseCode, s.ClosedBy)
		}
	})
}

func TestRelayBackendVanishesClientGets1011(t *testing.T) {
	forModes(t, func(t *testing.T) {
		h := startHarness(t, Config{}, nil, nil)
		start := time.Now()
		h.backend.Close()
		expectClose(t, h.client, CloseInternalError)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("close frame took %v", d)
		}
		expectEOF(t, h.client)
		h.client.Close()
		h.wait(t)
	})
}

func TestRelayViolationClosesBothWith1002(t *testing.T) {
	forModes(t, func(t *testing.T) {
		h := startHarness(t, Config{}, nil, nil)
		good := frame(true, 0, OpText, []byte("fine"), true, testMask)
		bad := frame(true, 0, 0x3, nil, true, testMask)
		h.client.Write(append(append([]byte{}, good...), bad...))
		if got := readFull(t, h.backend, len(good)); !bytes.Equal(got, good) {
			t.Fatal("frame before the violation not forwarded")
		}
		expectClose(t, h.backend, CloseProtocolError)
		expectClose(t, h.client, CloseProtocolError)
		// The backend answers the close; the client must not get a second one.
		h.backend.Write(AppendClose(nil, CloseProtocolError, "", [4]byte{}, false))
		h.backend.Close()
		h.client.Close()
		if s := h.wait(t); s.CloseCode != CloseProtocolError {
			t.Fatalf("close code %d", s.CloseCode)
		}
	})
}

// TestRelayBackendViolationIsBadGateway: a backend that breaks the
// protocol is an invalid upstream response: the client gets 1014 and the
// backend is reset, whether the bad bytes came with the 101 or later.
func TestRelayBackendViolationIsBadGateway(t *testing.T) {
	cases := map[string]struct{ pre, later []byte }{
		"rsv":              {later: frame(true, RSV1, OpText, []byte("x"), false, testMask)},
		"garbage with 101": {pre: []byte("HTTP/1.1 20")},
		"garbage later":    {later: []byte("\x03\x01hello world")},
		"masked":           {later: frame(true, 0, OpText, []byte("x"), true, testMask)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			forModes(t, func(t *testing.T) {
				h := startHarness(t, Config{}, nil, tc.pre)
				if tc.later != nil {
					h.backend.Write(tc.later)
				}
				expectClose(t, h.client, CloseBadGateway)
				expectEOF(t, h.backend)
				h.client.Close()
				if s := h.wait(t); s.CloseCode != CloseBadGateway {
					t.Fatalf("close code %d", s.CloseCode)
				}
			})
		})
	}
}

// TestRelayCloseFramesAreJudged: a close frame with 1005 on the wire is a
// protocol error (1002), and one whose reason is not UTF-8 is 1007.
func TestRelayCloseFramesAreJudged(t *testing.T) {
	forModes(t, func(t *testing.T) {
		for _, tc := range []struct {
			payload []byte
			want    uint16
		}{
			{[]byte{0x03, 0xED}, CloseProtocolError},
			{[]byte{0x03, 0xE8, 0xff, 0xfe}, CloseInvalidPayload},
		} {
			h := startHarness(t, Config{}, nil, nil)
			h.client.Write(frame(true, 0, OpClose, tc.payload, true, testMask))
			expectClose(t, h.client, tc.want)
			expectClose(t, h.backend, tc.want)
			h.client.Close()
			h.backend.Close()
			if s := h.wait(t); s.CloseCode != tc.want {
				t.Fatalf("payload %x: close code %d, want %d", tc.payload, s.CloseCode, tc.want)
			}
		}
	})
}

func TestRelayProxyCloseWaitsForFrameBoundary(t *testing.T) {
	forModes(t, func(t *testing.T) {
		started := make(chan *Session, 1)
		h := startHarness(t, Config{OnStart: func(s *Session) { started <- s }}, nil, nil)
		s := <-started
		big := frame(true, 0, OpBinary, make([]byte, 1000), false, testMask)
		h.backend.Write(big[:400])
		readFull(t, h.client, 400)
		s.Close(CloseServiceRestart, CloseGoingAway, "draining")
		// The backend leg is at a boundary: its close goes out at once, masked.
		bh, bf := readFrame(t, h.backend)
		if code, _ := ClosePayload(bf, &bh, nil); bh.Opcode != OpClose || code != CloseGoingAway || !bh.Masked {
			t.Fatalf("backend got opcode %d code %d masked %v", bh.Opcode, code, bh.Masked)
		}
		// The client leg is mid-frame: the rest of the frame, then the close.
		h.backend.Write(big[400:])
		if got := readFull(t, h.client, len(big)-400); !bytes.Equal(got, big[400:]) {
			t.Fatal("rest of frame altered")
		}
		expectClose(t, h.client, CloseServiceRestart)
		h.client.Write(AppendClose(nil, CloseServiceRestart, "", testMask, true))
		h.backend.Write(AppendClose(nil, CloseGoingAway, "", [4]byte{}, false))
		h.backend.Close() // a server closes TCP after the close handshake
		expectEOF(t, h.client)
		h.client.Close()
		if s := h.wait(t); s.CloseCode != CloseServiceRestart || s.ClosedBy != SideProxy {
			t.Fatalf("close %d by %v", s.CloseCode, s.ClosedBy)
		}
	})
}

func TestRelayCloseTimeoutEndsStuckSession(t *testing.T) {
	forModes(t, func(t *testing.T) {
		started := make(chan *Session, 1)
		h := startHarness(t, Config{CloseTimeout: 200 * time.Millisecond, OnStart: func(s *Session) { started <- s }}, nil, nil)
		s := <-started
		s.Close(CloseGoingAway, CloseGoingAway, "shutdown")
		// Neither peer answers: the proxy must still close both sockets.
		expectClose(t, h.client, CloseGoingAway)
		expectClose(t, h.backend, CloseGoingAway)
		expectEOF(t, h.client)
		expectEOF(t, h.backend)
		h.wait(t)
	})
}

// TestRelayNoGoroutineLeak runs many sessions to their end and checks the
// goroutine count comes back.
func TestRelayNoGoroutineLeak(t *testing.T) {
	forModes(t, func(t *testing.T) {
		base := runtime.NumGoroutine()
		for i := 0; i < 50; i++ {
			h := startHarness(t, Config{}, nil, nil)
			h.client.Write(frame(true, 0, OpText, []byte("hi"), true, testMask))
			readFull(t, h.backend, 4)
			if i%2 == 0 {
				h.client.Close()
			} else {
				h.backend.Close()
			}
			h.client.Close()
			h.backend.Close()
			h.wait(t)
		}
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > base {
			t.Fatalf("%d goroutines, baseline %d", n, base)
		}
	})
}

func benchRelay(b *testing.B, size int) { benchRelayWith(b, size, Config{Pool: NewPool(0)}) }

func benchRelayWith(b *testing.B, size int, cfg Config) {
	h := startHarness(b, cfg, nil, nil)
	msg := frame(true, 0, OpBinary, make([]byte, size), true, testMask)
	echo := frame(true, 0, OpBinary, make([]byte, size), false, testMask)
	// The backend echoes every frame with an unmasked one of the same size.
	go func() {
		in := make([]byte, len(msg))
		for {
			if _, err := io.ReadFull(h.backend, in); err != nil {
				return
			}
			if _, err := h.backend.Write(echo); err != nil {
				return
			}
		}
	}()
	in := make([]byte, len(echo))
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.client.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(h.client, in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if binary.BigEndian.Uint16(in[:2]) == 0 {
		b.Fatal("no frame")
	}
}

// BenchmarkRelayEcho measures one round trip client→proxy→backend→proxy→client
// over loopback TCP through the event loops. Allocations are the whole
// process's, so 0 allocs/op means the relay allocates nothing per frame.
func BenchmarkRelayEcho64(b *testing.B)  { benchRelay(b, 64) }
func BenchmarkRelayEcho4K(b *testing.B)  { benchRelay(b, 4096) }
func BenchmarkRelayEcho64K(b *testing.B) { benchRelay(b, 64<<10) }

// TestRelayIdleSessionsHoldNoGoroutine: sessions on the loops hold no
// goroutine, idle or busy, with plain and with TLS clients.
func TestRelayIdleSessionsHoldNoGoroutine(t *testing.T) {
	for _, mode := range []string{"loop", "tls"} {
		t.Run(mode, func(t *testing.T) {
			const n = 200
			base := runtime.NumGoroutine()
			hs := make([]*harness, n)
			for i := range hs {
				hs[i] = startHarness(t, Config{}, nil, nil)
			}
			waitGoroutines(t, base+2)
			msg := frame(true, 0, OpText, []byte("wake"), true, testMask)
			for _, h := range hs {
				h.client.Write(msg)
				if got := readFull(t, h.backend, len(msg)); !bytes.Equal(got, msg) {
					t.Fatal("frame altered")
				}
			}
			waitGoroutines(t, base+2)
			for _, h := range hs {
				h.client.Close()
				h.backend.Close()
				h.wait(t)
			}
		})
	}
}

func waitGoroutines(t *testing.T, max int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > max {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, want at most %d", runtime.NumGoroutine(), max)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
