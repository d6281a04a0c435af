//go:build linux && !race

package relay

import (
	"io"
	"testing"
)

// TestLoopForwardsWithoutAllocating: in steady state the loops allocate
// nothing per forwarded frame, small or large, in either direction.
// AllocsPerRun counts the whole process's allocations, so the test's own
// socket calls must not allocate either (they do not).
func TestLoopForwardsWithoutAllocating(t *testing.T) {
	for _, size := range []int{64, 64 << 10} {
		h := startHarness(t, Config{}, nil, nil)
		round := roundTrip(t, h, size)
		round() // warm the pools
		if n := testing.AllocsPerRun(200, round); n != 0 {
			t.Errorf("%d-byte frames: %v allocations per round trip, want 0", size, n)
		}
		h.client.Close()
		h.backend.Close()
		h.wait(t)
	}
}

// TestRecordsWithoutAllocating: a wss leg on the loop's record layer opens
// and seals records without allocating, once the loop's AEAD cache holds
// the leg's. The client is our own record layer too: crypto/tls's client
// allocates per record it reads.
func TestRecordsWithoutAllocating(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		for _, size := range []int{64, 64 << 10} {
			h, _ := startRecHarness(t, Config{recHook: &recHook{sealed: func(_, _ []byte) {}}})
			round := roundTrip(t, h, size)
			round()
			if n := testing.AllocsPerRun(200, round); n != 0 {
				t.Errorf("%d-byte frames: %v allocations per round trip, want 0", size, n)
			}
			h.client.Close()
			h.backend.Close()
			h.wait(t)
		}
	})
}

// roundTrip returns a function that sends one frame of size bytes each way
// through h and reads it on the other side, allocating nothing itself.
func roundTrip(t *testing.T, h *harness, size int) func() {
	up := frame(true, 0, OpBinary, make([]byte, size), true, testMask)
	down := frame(true, 0, OpBinary, make([]byte, size), false, testMask)
	in := make([]byte, len(up))
	return func() {
		if _, err := h.client.Write(up); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(h.backend, in[:len(up)]); err != nil {
			t.Fatal(err)
		}
		if _, err := h.backend.Write(down); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(h.client, in[:len(down)]); err != nil {
			t.Fatal(err)
		}
	}
}
