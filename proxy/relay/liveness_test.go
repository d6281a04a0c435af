package relay

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

func testWheel(t *testing.T) *keepalive.Wheel {
	w := keepalive.NewWheel(10*time.Millisecond, 1)
	t.Cleanup(w.Close)
	return w
}

// expectPing reads the proxy's ping and returns its payload, which the
// pong answering it carries.
func expectPing(t *testing.T, h *harness, fromBackendSide bool) []byte {
	t.Helper()
	c := h.client
	if fromBackendSide {
		c = h.backend
	}
	hd, f := readFrame(t, c)
	p := append([]byte(nil), f[hd.Len:]...)
	if hd.Masked {
		for i := range p {
			p[i] ^= hd.Mask[i&3]
		}
	}
	if hd.Opcode != OpPing || len(p) != pingLen || string(p[:len(pingPrefix)]) != pingPrefix || hd.Masked != fromBackendSide {
		t.Fatalf("got opcode %d masked %v payload %q, want the proxy's ping", hd.Opcode, hd.Masked, p)
	}
	return p
}

func TestLivenessSilentClientIsClosed(t *testing.T) {
	forModes(t, func(t *testing.T) {
		ping := Ping{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}
		h := startHarness(t, Config{Wheel: testWheel(t), ClientPing: ping}, nil, nil)
		start := time.Now()
		expectPing(t, h, false) // and never answer it
		expectClose(t, h.backend, CloseGoingAway)
		took := time.Since(start)
		if took < 200*time.Millisecond || took > 200*time.Millisecond+time.Second {
			t.Fatalf("closed after %v, want about interval+timeout (200ms)", took)
		}
		expectEOF(t, h.client)
		h.backend.Close()
		if s := h.wait(t); s.Reason != "client ping timeout" {
			t.Fatalf("reason %q", s.Reason)
		}
	})
}

func TestLivenessPongsAreSwallowedAndKeepAlive(t *testing.T) {
	forModes(t, func(t *testing.T) {
		// A generous timeout: this test is about which pongs pass, and a
		// loaded machine must not make a peer look dead.
		ping := Ping{Interval: 50 * time.Millisecond, Timeout: 5 * time.Second}
		h := startHarness(t, Config{Wheel: testWheel(t), ClientPing: ping, BackendPing: ping}, nil, nil)
		for i := 0; i < 4; i++ {
			p := expectPing(t, h, false)
			h.client.Write(frame(true, 0, OpPong, p, true, testMask))
			p = expectPing(t, h, true)
			h.backend.Write(frame(true, 0, OpPong, p, false, testMask))
		}
		// Neither side ever saw the other's pongs; an endpoint's own pong
		// passes through.
		own := frame(true, 0, OpPong, []byte("app"), true, testMask)
		h.client.Write(own)
		for {
			hd, f := readFrame(t, h.backend)
			if hd.Opcode == OpPing {
				p := f[hd.Len:] // unmasked: the proxy's ping to a backend is masked
				for i := range p {
					p[i] ^= hd.Mask[i&3]
				}
				h.backend.Write(frame(true, 0, OpPong, p, false, testMask))
				continue
			}
			if !bytes.Equal(f, own) {
				t.Fatalf("backend got opcode %d %q, want the client's own pong", hd.Opcode, f)
			}
			break
		}
		h.client.Close()
		h.backend.Close()
		h.wait(t)
	})
}

func TestLivenessBusyPeerIsNotPinged(t *testing.T) {
	forModes(t, func(t *testing.T) {
		ping := Ping{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond}
		h := startHarness(t, Config{Wheel: testWheel(t), ClientPing: ping}, nil, nil)
		msg := frame(true, 0, OpText, []byte("tick"), true, testMask)
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			h.client.Write(msg)
			readFull(t, h.backend, len(msg))
			time.Sleep(20 * time.Millisecond)
		}
		h.client.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if n, _ := h.client.Read(make([]byte, 1)); n != 0 {
			t.Fatal("a client that keeps talking was pinged")
		}
		h.client.Close()
		h.backend.Close()
		h.wait(t)
	})
}

func TestLivenessDeadBackendGivesClient1011(t *testing.T) {
	forModes(t, func(t *testing.T) {
		ping := Ping{Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond}
		h := startHarness(t, Config{Wheel: testWheel(t), BackendPing: ping}, nil, nil)
		expectPing(t, h, true) // the backend never answers
		expectClose(t, h.client, CloseInternalError)
		h.client.Close()
		if s := h.wait(t); s.Reason != "backend ping timeout" {
			t.Fatalf("reason %q", s.Reason)
		}
	})
}

func TestLivenessIdleTimeoutAndLifetime(t *testing.T) {
	forModes(t, func(t *testing.T) {
		// Gaps a third of the timeout: a loaded machine (race detector,
		// parallel packages) can stretch one by tens of milliseconds.
		h := startHarness(t, Config{Wheel: testWheel(t), IdleTimeout: 150 * time.Millisecond}, nil, nil)
		msg := frame(true, 0, OpText, []byte("x"), true, testMask)
		for i := 0; i < 8; i++ { // activity keeps it open past the timeout
			h.client.Write(msg)
			readFull(t, h.backend, len(msg))
			time.Sleep(30 * time.Millisecond)
		}
		expectClose(t, h.client, CloseGoingAway)
		expectClose(t, h.backend, CloseGoingAway)
		h.client.Close()
		h.backend.Close()
		if s := h.wait(t); s.Reason != "idle timeout" {
			t.Fatalf("reason %q", s.Reason)
		}

		start := time.Now()
		h = startHarness(t, Config{Wheel: testWheel(t), MaxLifetime: 200 * time.Millisecond}, nil, nil)
		for time.Since(start) < 150*time.Millisecond { // busy or not, it ends
			h.client.Write(msg)
			readFull(t, h.backend, len(msg))
		}
		expectClose(t, h.backend, CloseGoingAway)
		if took := time.Since(start); took < 180*time.Millisecond || took > 2*time.Second {
			t.Fatalf("lifetime ended after %v, want 180-200ms", took)
		}
		h.client.Close()
		h.backend.Close()
		if s := h.wait(t); s.Reason != "connection lifetime reached" {
			t.Fatalf("reason %q", s.Reason)
		}
	})
}

// A silent client receiving one large message is pinged after the
// message ends, and the pong deadline runs from then: a ping held back
// by a frame still being relayed is not a missed pong.
func TestLivenessPingWaitsForFrameEnd(t *testing.T) {
	forModes(t, func(t *testing.T) {
		ping := Ping{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond}
		h := startHarness(t, Config{Wheel: testWheel(t), ClientPing: ping}, nil, nil)
		big := frame(true, 0, OpBinary, make([]byte, 64<<10), false, testMask)
		go func() {
			// 64 KiB over about a second: longer than interval+timeout.
			for b := big; len(b) > 0; {
				n := min(len(b), 1<<10)
				if _, err := h.backend.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
				time.Sleep(15 * time.Millisecond)
			}
		}()
		readFull(t, h.client, len(big))
		p := expectPing(t, h, false)
		h.client.Write(frame(true, 0, OpPong, p, true, testMask))
		msg := frame(true, 0, OpText, []byte("still here"), true, testMask)
		h.client.Write(msg)
		if got := readFull(t, h.backend, len(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("backend got %q", got)
		}
		h.client.Close()
		h.backend.Close()
		if s := h.wait(t); s.Reason == "client ping timeout" {
			t.Fatal("the client was dropped as dead while a frame to it was relayed")
		}
	})
}

// Pings and pongs with a payload like the proxy's (another wsproxy's, in
// front of or behind this one) pass through: only the pong answering this
// proxy's own ping is swallowed.
func TestLivenessForeignProxyPongsPass(t *testing.T) {
	forModes(t, func(t *testing.T) {
		ping := Ping{Interval: time.Hour, Timeout: time.Hour}
		h := startHarness(t, Config{Wheel: testWheel(t), ClientPing: ping, BackendPing: ping}, nil, nil)
		for _, p := range [][]byte{[]byte(pingPrefix), append([]byte(pingPrefix), 1, 2, 3, 4, 5, 6, 7, 9)} {
			in := frame(true, 0, OpPing, p, false, testMask)
			h.backend.Write(in)
			if got := readFull(t, h.client, len(in)); !bytes.Equal(got, in) {
				t.Fatalf("client got %q, want the backend's ping", got)
			}
			pong := frame(true, 0, OpPong, p, true, testMask)
			h.client.Write(pong)
			if got := readFull(t, h.backend, len(pong)); !bytes.Equal(got, pong) {
				t.Fatalf("backend got %q, want the client's pong", got)
			}
		}
		h.client.Close()
		h.backend.Close()
		h.wait(t)
	})
}

// While the proxy does not read the client (its backend has stopped
// reading, and write_timeout is off), the client's pongs wait unread: it is
// not dropped as dead.
func TestLivenessUnreadPeerIsNotJudged(t *testing.T) {
	forModes(t, func(t *testing.T) {
		ping := Ping{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}
		h := startHarness(t, Config{Wheel: testWheel(t), ClientPing: ping}, nil, nil)
		msg := frame(true, 0, OpBinary, make([]byte, 64<<10), true, testMask)
		stop := time.Now().Add(time.Second)
		var pings atomic.Int64
		go func() {
			// Answer every ping; the client's writes block once the
			// backend's buffers and the proxy's are full.
			for {
				var hd [2]byte
				if _, err := io.ReadFull(h.client, hd[:]); err != nil || hd[0]&0x0f != OpPing || hd[1] > 125 {
					return
				}
				p := make([]byte, hd[1])
				if _, err := io.ReadFull(h.client, p); err != nil {
					return
				}
				pings.Add(1)
				h.client.Write(frame(true, 0, OpPong, p, true, testMask))
			}
		}()
		for time.Now().Before(stop) {
			h.client.SetWriteDeadline(stop)
			if _, err := h.client.Write(msg); err != nil {
				break
			}
		}
		time.Sleep(500 * time.Millisecond) // five ping intervals, not reading the client
		h.client.Close()
		h.backend.Close()
		if s := h.wait(t); s.Reason == "client ping timeout" {
			t.Fatalf("the client was dropped while the proxy did not read it (%d pings answered)", pings.Load())
		}
	})
}
