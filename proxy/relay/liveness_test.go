package relay

import (
	"bytes"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/keepalive"
)

func testWheel(t *testing.T) *keepalive.Wheel {
	w := keepalive.NewWheel(10*time.Millisecond, 1)
	t.Cleanup(w.Close)
	return w
}

// expectPing reads the proxy's ping and returns its frame.
func expectPing(t *testing.T, h *harness, fromBackendSide bool) Header {
	t.Helper()
	c := h.client
	if fromBackendSide {
		c = h.backend
	}
	hd, f := readFrame(t, c)
	if hd.Opcode != OpPing || !isOwnPong(f, &hd) || hd.Masked != fromBackendSide {
		t.Fatalf("got opcode %d masked %v payload %q, want the proxy's ping", hd.Opcode, hd.Masked, f[hd.Len:])
	}
	return hd
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
			expectPing(t, h, false)
			h.client.Write(frame(true, 0, OpPong, pingPayload, true, testMask))
			expectPing(t, h, true)
			h.backend.Write(frame(true, 0, OpPong, pingPayload, false, testMask))
		}
		// Neither side ever saw the other's pongs; an endpoint's own pong
		// passes through.
		own := frame(true, 0, OpPong, []byte("app"), true, testMask)
		h.client.Write(own)
		for {
			hd, f := readFrame(t, h.backend)
			if hd.Opcode == OpPing {
				h.backend.Write(frame(true, 0, OpPong, pingPayload, false, testMask))
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
