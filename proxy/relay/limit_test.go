package relay

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTrackerBudget: with Limited set, a new data message and a ping each
// take one from Budget, continuation frames and pongs take none, and
// Advance stops before a message or ping when the budget is spent,
// accepting nothing of it.
func TestTrackerBudget(t *testing.T) {
	t.Parallel()
	m := [4]byte{1, 2, 3, 4}
	var s []byte
	s = append(s, frame(false, 0, OpText, []byte("a"), true, m)...)
	s = append(s, frame(false, 0, OpContinuation, []byte("b"), true, m)...)
	s = append(s, frame(true, 0, OpPong, nil, true, m)...)
	pingAt := len(s)
	s = append(s, frame(true, 0, OpPing, nil, true, m)...)
	s = append(s, frame(true, 0, OpContinuation, []byte("c"), true, m)...)
	second := len(s)
	s = append(s, frame(true, 0, OpBinary, []byte("d"), true, m)...)
	tr := Tracker{Rules: clientRules(), Limited: true, Budget: 1}
	fwd, ev := tr.Advance(s)
	if ev != EvControl || tr.Budget != 0 || tr.Control.Opcode != OpPong {
		t.Fatalf("event %d, budget %d; want the pong first, for free", ev, tr.Budget)
	}
	n, ev := tr.Advance(s[fwd:])
	if ev != EvLimit || fwd+n != pingAt {
		t.Fatalf("stopped at %d with event %d; want EvLimit before the ping at %d", fwd+n, ev, pingAt)
	}
	tr.Budget = 1
	n, ev = tr.Advance(s[pingAt:])
	if ev != EvControl || tr.Budget != 0 {
		t.Fatalf("event %d, budget %d; want the ping, for one", ev, tr.Budget)
	}
	at := pingAt + n
	n, ev = tr.Advance(s[at:])
	if ev != EvLimit || at+n != second || tr.Messages != 1 {
		t.Fatalf("stopped at %d with event %d, %d messages; want EvLimit at %d, 1", at+n, ev, tr.Messages, second)
	}
	if n2, ev := tr.Advance(s[second:]); n2 != 0 || ev != EvLimit {
		t.Fatalf("without budget: %d bytes, event %d", n2, ev)
	}
	tr.Budget = 5
	if n2, ev := tr.Advance(s[second:]); n2 != len(s)-second || ev != EvNone || tr.Budget != 4 || tr.Messages != 2 {
		t.Fatalf("with budget: %d bytes, event %d, budget %d", n2, ev, tr.Budget)
	}
}

// TestGCRA: a bucket gives its burst at once, then one token per interval.
func TestGCRA(t *testing.T) {
	t.Parallel()
	b := ownBucket{g: newGCRA(MessageRate{Interval: 10 * time.Millisecond, Burst: 5})}
	now := int64(1e12)
	if n := b.g.avail(b.tat, now); n != 5 {
		t.Fatalf("full bucket has %d tokens, want 5", n)
	}
	b.tat = b.g.charge(b.tat, now, 5)
	if n := b.g.avail(b.tat, now); n != 0 {
		t.Fatalf("after the burst: %d tokens", n)
	}
	if at := b.g.next(b.tat, now); at != now+int64(10*time.Millisecond) {
		t.Fatalf("next token at +%v, want +10ms", time.Duration(at-now))
	}
	if n := b.g.avail(b.tat, now+int64(35*time.Millisecond)); n != 3 {
		t.Fatalf("35ms later: %d tokens, want 3", n)
	}
	if n := b.g.avail(b.tat, now+int64(time.Hour)); n != 5 {
		t.Fatalf("an hour later: %d tokens, want the burst of 5", n)
	}
}

var zeroMask [4]byte

// seqFrame is a masked binary frame carrying i, as a client sends it.
func seqFrame(i int) []byte {
	var p [8]byte
	binary.BigEndian.PutUint32(p[:], uint32(i))
	return frame(true, 0, OpBinary, p[:], true, zeroMask)
}

// startLimited is startHarness with the session's key buckets set.
func startLimited(t testing.TB, cfg Config, keys *KeyBucket) *harness {
	t.Helper()
	c, pc := tcpPair(t)
	b, pb := tcpPair(t)
	h := &harness{client: c, backend: b, done: make(chan *Session, 1)}
	cfg.Pool = NewPool(0)
	cfg.Client.Masked = true
	cfg.OnDone = func(s *Session) { h.done <- s }
	var pcc, pbc net.Conn = pc, pb
	if strings.Contains(t.Name(), "/goroutines") {
		pcc, pbc = opaqueConn{pc.(*net.TCPConn)}, opaqueConn{pb.(*net.TCPConn)}
	} else {
		cfg.Loops = testLoops
	}
	ss := NewSession(&cfg)
	ss.Keys = keys
	ss.Start(pcc, nil, pbc, nil)
	t.Cleanup(func() { c.Close(); b.Close() })
	return h
}

// TestRelayMessageRateCloses: a client over its rate gets 1008 when the
// message past its burst arrives, and that message does not reach the
// backend (which gets 1008 too).
func TestRelayMessageRateCloses(t *testing.T) {
	forModes(t, func(t *testing.T) {
		const burst = 5
		h := startLimited(t, Config{ClientRate: MessageRate{Interval: time.Second, Burst: burst}}, nil)
		var all []byte
		for i := 0; i < 20; i++ {
			all = append(all, seqFrame(i)...)
		}
		h.client.Write(all)
		got := 0
		for {
			hd, _ := readFrame(t, h.backend)
			if hd.Opcode == OpClose {
				break
			}
			got++
		}
		// One token per second: at most one more can have come back.
		if got < burst || got > burst+1 {
			t.Fatalf("backend got %d messages before the close, want %d (+1)", got, burst)
		}
		hd, f := readFrame(t, h.client)
		code, reason := ClosePayload(f, &hd, nil)
		if hd.Opcode != OpClose || code != ClosePolicyViolation || !strings.Contains(string(reason), "rate") {
			t.Fatalf("client got opcode %d code %d %q, want a 1008 close about the rate", hd.Opcode, code, reason)
		}
		h.client.Close()
		h.backend.Close()
		s := h.wait(t)
		if s.LimitClosed != SideClient || s.CloseCode != ClosePolicyViolation {
			t.Fatalf("LimitClosed %v, close code %d", s.LimitClosed, s.CloseCode)
		}
		if l := s.Live().ClientToBackend.Limited; l != 1 {
			t.Fatalf("Limited = %d, want 1", l)
		}
	})
}

// receiveSeq reads n sequenced frames from c, in order, and returns when
// the first and last arrived.
func receiveSeq(t testing.TB, c net.Conn, n int, seen func(i int)) (first, last time.Time) {
	t.Helper()
	for i := 0; i < n; i++ {
		hd, f := readFrame(t, c)
		if hd.Opcode != OpBinary {
			t.Errorf("frame %d: opcode %d", i, hd.Opcode)
			return
		}
		seq := int(binary.BigEndian.Uint32(f[hd.Len:]))
		seen(seq)
		if i == 0 {
			first = time.Now()
		}
		last = time.Now()
	}
	return first, last
}

// TestRelayMessageRatePauses: with pause, a client that sends as fast as
// it can is throttled to its rate (within 10% over 5 s), and every
// message arrives, in order.
func TestRelayMessageRatePauses(t *testing.T) {
	forModes(t, func(t *testing.T) {
		const rate, burst, n = 200, 10, 1000
		h := startLimited(t, Config{ClientRate: MessageRate{Interval: time.Second / rate, Burst: burst}, OverLimit: LimitPause}, nil)
		var all []byte
		for i := 0; i < n; i++ {
			all = append(all, seqFrame(i)...)
		}
		go h.client.Write(all) // blocks while the relay pushes back
		next := 0
		first, last := receiveSeq(t, h.backend, n, func(i int) {
			if i != next {
				t.Fatalf("got message %d, want %d", i, next)
			}
			next++
		})
		took := last.Sub(first)
		want := time.Duration(n-burst) * time.Second / rate
		t.Logf("%d messages in %v (%.1f/s after the burst of %d), want %v", n, took, float64(n-burst)/took.Seconds(), burst, want)
		if took < want*9/10 || took > want*11/10 {
			t.Fatalf("%d messages took %v, want %v ±10%%", n, took, want)
		}
		h.client.Close()
		h.backend.Close()
		s := h.wait(t)
		if s.ClientToBackend.Messages != n || s.Live().ClientToBackend.Limited == 0 {
			t.Fatalf("%d messages relayed, %d limited", s.ClientToBackend.Messages, s.Live().ClientToBackend.Limited)
		}
	})
}

// TestRelayMessageRatePerKey: three connections with the same key share
// one bucket: together they pass at the key's rate, and lose nothing.
func TestRelayMessageRatePerKey(t *testing.T) {
	t.Parallel()
	// A burst of 200ms of tokens: three legs on two loops, under a loaded
	// test run, must not lose tokens to the cap while their timers are late.
	const rate, burst, each = 300, 60, 300
	kl := NewKeyLimits(MessageRate{Interval: time.Second / rate, Burst: burst}, MessageRate{})
	var hs []*harness
	for i := 0; i < 3; i++ {
		hs = append(hs, startLimited(t, Config{OverLimit: LimitPause}, kl.Acquire("user-1")))
	}
	if kl.Len() != 1 {
		t.Fatalf("%d keys, want 1", kl.Len())
	}
	var mu sync.Mutex
	var first, last time.Time
	var wg sync.WaitGroup
	var total atomic.Int64
	for _, h := range hs {
		var all []byte
		for i := 0; i < each; i++ {
			all = append(all, seqFrame(i)...)
		}
		go h.client.Write(all)
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := 0
			f, l := receiveSeq(t, h.backend, each, func(i int) {
				if i != next {
					t.Errorf("got message %d, want %d", i, next)
				}
				next++
				total.Add(1)
			})
			mu.Lock()
			if first.IsZero() || f.Before(first) {
				first = f
			}
			if l.After(last) {
				last = l
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := last.Sub(first)
	want := time.Duration(3*each-burst) * time.Second / rate
	t.Logf("%d messages on 3 connections in %v, want %v", total.Load(), took, want)
	if total.Load() != 3*each || took < want*9/10 || took > want*11/10 {
		t.Fatalf("%d messages in %v, want %d in %v ±10%%", total.Load(), took, 3*each, want)
	}
	for _, h := range hs {
		h.client.Close()
		h.backend.Close()
		kl.Release(h.wait(t).Keys)
	}
	if kl.Len() != 0 {
		t.Fatalf("%d keys left after every connection ended", kl.Len())
	}
}

// TestRelayLiveFlush: while a connection is open its figures reach
// OnFlush and Session.Live at most once a second, and the flushes add
// up to the final figures.
func TestRelayLiveFlush(t *testing.T) {
	forModes(t, func(t *testing.T) {
		var mu sync.Mutex
		var calls []time.Time
		var sum Counts
		cfg := Config{OnFlush: func(s *Session, up, down Counts) {
			mu.Lock()
			calls = append(calls, time.Now())
			sum.Bytes += up.Bytes + down.Bytes
			sum.Messages += up.Messages + down.Messages
			sum.Frames += up.Frames + down.Frames
			mu.Unlock()
		}}
		h := startLimited(t, cfg, nil)
		start := time.Now()
		msg := seqFrame(0)
		sent := 0
		for time.Since(start) < 2500*time.Millisecond {
			h.client.Write(msg)
			readFull(t, h.backend, len(msg))
			sent++
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		during := len(calls)
		openSum := sum
		mu.Unlock()
		if during < 2 || during > 3 {
			t.Fatalf("%d flushes in 2.5 s of traffic, want 2 or 3", during)
		}
		if openSum.Messages == 0 || openSum.Bytes == 0 {
			t.Fatal("nothing counted while the connection was open")
		}
		h.client.Close()
		h.backend.Close()
		s := h.wait(t)
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i < len(calls); i++ {
			if d := calls[i].Sub(calls[i-1]); d < 900*time.Millisecond && i < len(calls)-1 {
				t.Errorf("flushes %v apart", d)
			}
		}
		want := s.ClientToBackend.Bytes + s.BackendToClient.Bytes
		if sum.Bytes != want || sum.Messages != uint64(sent) {
			t.Fatalf("flushed %d bytes and %d messages; the session relayed %d and %d", sum.Bytes, sum.Messages, want, sent)
		}
		if lv := s.Live(); lv.ClientToBackend.Messages != uint64(sent) || lv.LastActivity.IsZero() {
			t.Fatalf("Live() = %+v", lv)
		}
	})
}
