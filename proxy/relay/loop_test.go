//go:build linux

package relay

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rssBytes is this process's resident set size.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// flood writes frames to c until a write has waited 300ms (the socket
// and everything behind it are full) and keeps trying until stop is closed.
// blocked is set once a write has timed out.
func flood(c net.Conn, masked bool, blocked *atomic.Bool, stop chan struct{}) {
	f := frame(true, 0, OpBinary, make([]byte, 16<<10), masked, testMask)
	for {
		select {
		case <-stop:
			return
		default:
		}
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write(f); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				blocked.Store(true)
				// A timed-out write may have sent part of a frame; the
				// stream is no longer well framed, so stop writing.
				<-stop
			}
			return
		}
	}
}

// TestLoopStalledReaderIsBoundedAndCut: a client that never reads while its
// backend floods costs the proxy at most one buffer, the backend's writes
// block (TCP pushes back), and write_timeout ends the session: the client
// is dropped and the backend gets 1001.
func TestLoopStalledReaderIsBoundedAndCut(t *testing.T) {
	for _, stalled := range []Side{SideClient, SideBackend} {
		t.Run(stalled.String(), func(t *testing.T) {
			const wt = 3 * time.Second
			started := make(chan *Session, 1)
			h := startHarness(t, Config{WriteTimeout: wt, OnStart: func(s *Session) { started <- s }}, nil, nil)
			<-started
			sender, reader, masked, want := h.backend, h.client, false, uint16(CloseGoingAway)
			if stalled == SideBackend {
				sender, reader, masked, want = h.client, h.backend, true, CloseInternalError
			}
			before := rssBytes(t)
			start0 := time.Now()
			var blocked atomic.Bool
			stop := make(chan struct{})
			defer close(stop)
			go flood(sender, masked, &blocked, stop)
			// Loopback buffers autotune to megabytes: under -race on a busy
			// machine filling them takes a while.
			deadline := time.Now().Add(wt)
			for !blocked.Load() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !blocked.Load() {
				t.Fatal("the flooding peer's writes never blocked: nothing pushed back")
			}
			if grew := rssBytes(t) - before; grew > 1<<20 {
				t.Errorf("RSS grew by %d KiB for one stalled connection, want < 1 MiB", grew>>10)
			}
			// write_timeout: the sender is told its peer went away.
			expectClose(t, sender, want)
			if took := time.Since(start0); took < wt || took > wt+3*time.Second {
				t.Errorf("cut after %v, want write_timeout (%v) after the stall", took, wt)
			}
			sender.Close() // answering the close ends the session at once
			s := h.wait(t)
			if s.Stalled != stalled || !strings.HasPrefix(s.Reason, "slow consumer") {
				t.Fatalf("stalled %v reason %q, want %v and a slow consumer", s.Stalled, s.Reason, stalled)
			}
			// The stalled side was reset: after what was buffered, an error.
			reader.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64<<10)
			for {
				if _, err := reader.Read(buf); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatal("the stalled side was never dropped")
					}
					break
				}
			}
		})
	}
}

// TestLoopStalledSessionsCloseOnTime: a proxy close (drain, shutdown), the
// idle timeout and the lifetime all end a session whose client does not
// read, within CloseTimeout of when they fire, even with write_timeout off:
// on the loops, with a TLS client, and with a goroutine per direction,
// whose blocked write must not keep the close from being armed.
func TestLoopStalledSessionsCloseOnTime(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		by   time.Duration // when the session must have ended
	}{
		{"close", Config{}, 3 * time.Second},
		{"idle", Config{IdleTimeout: 500 * time.Millisecond}, 3 * time.Second},
		{"lifetime", Config{MaxLifetime: 1500 * time.Millisecond}, 4 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forModes(t, func(t *testing.T) {
				started := make(chan *Session, 1)
				cfg := tc.cfg
				cfg.CloseTimeout = 500 * time.Millisecond
				cfg.Wheel = testWheel(t)
				cfg.OnStart = func(s *Session) { started <- s }
				h := startHarness(t, cfg, nil, nil)
				s := <-started
				var blocked atomic.Bool
				stop := make(chan struct{})
				defer close(stop)
				start := time.Now()
				go flood(h.backend, false, &blocked, stop)
				for !blocked.Load() && time.Since(start) < 3*time.Second {
					time.Sleep(10 * time.Millisecond)
				}
				if tc.name == "close" {
					s.Close(CloseGoingAway, CloseGoingAway, "shutdown")
				}
				select {
				case <-h.done:
				case <-time.After(tc.by):
					t.Fatalf("a session with a stalled reader was still open %v after it should have closed", tc.by)
				}
			})
		})
	}
}

// TestLoopFirstPingAfterLastActivity: a peer that spoke once and went
// quiet is pinged one interval after it spoke, not an interval after the
// check that noticed it spoke.
func TestLoopFirstPingAfterLastActivity(t *testing.T) {
	const iv = 600 * time.Millisecond
	h := startHarness(t, Config{Wheel: testWheel(t), ClientPing: Ping{Interval: iv, Timeout: 5 * time.Second}}, nil, nil)
	time.Sleep(iv / 2)
	msg := frame(true, 0, OpText, []byte("once"), true, testMask)
	spoke := time.Now()
	h.client.Write(msg)
	readFull(t, h.backend, len(msg))
	expectPing(t, h, false)
	if d := time.Since(spoke); d < iv-50*time.Millisecond || d > iv+iv/3 {
		t.Fatalf("pinged %v after the client last spoke, want about %v", d, iv)
	}
}
