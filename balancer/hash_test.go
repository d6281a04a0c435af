package balancer

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// capOf is the bound of the paper in exact integer arithmetic:
// ⌈c·(load+1)·w/W⌉ with c = cNum/cDen.
func capOf(cNum, cDen, load, w, total int64) int64 {
	num, den := cNum*(load+1)*w, cDen*total
	return (num + den - 1) / den
}

// TestBoundedLoads: under skewed keys (80% of connections on 5 keys, or a
// Zipf law), with c = 1.25 no backend ever holds more than
// ⌈c × its weighted share of the connections⌉, every connection goes to
// the first backend in its key's preference order that was under its bound,
// and the same keys without the bound overload a backend well past it.
func TestBoundedLoads(t *testing.T) {
	t.Parallel()
	const conns = 20_000
	for _, dist := range []struct {
		name string
		keys [][]byte
	}{
		{"hot5", skewedKeys(conns, 1)},
		{"zipf", zipfKeys(conns, 1)},
	} {
		for _, weighted := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/weighted=%v", dist.name, weighted), func(t *testing.T) {
				t.Parallel()
				var weight func(int) int
				if weighted {
					weight = func(i int) int { return 1 + i%4 }
				}
				bs := backends(nil, 10, weight)
				s := NewSet(bs)
				var total int64
				for _, b := range s.Backends() {
					total += int64(b.Weight)
				}
				h, err := NewHash(1.25, nil)
				if err != nil {
					t.Fatal(err)
				}
				var load int64
				pref := make([]*Backend, 0, 10)
				for i, k := range dist.keys {
					// The model: first backend under its bound, in preference order.
					var want *Backend
					for _, b := range s.AppendPreference(pref[:0], k) {
						if b.Conns() < capOf(5, 4, load, int64(b.Weight), total) {
							want = b
							break
						}
					}
					got := h.Pick(s, k, Tried{})
					load++
					if got != want {
						t.Fatalf("connection %d (key %q) went to %s, want %s", i, k, got.Addr, want.Addr)
					}
					if limit := capOf(5, 4, load-1, int64(got.Weight), total); got.Conns() > limit {
						t.Fatalf("connection %d: %s holds %d, above its bound %d", i, got.Addr, got.Conns(), limit)
					}
				}
				maxRatio, firstChoice := 0.0, 0
				for _, b := range s.Backends() {
					share := float64(load) * float64(b.Weight) / float64(total)
					maxRatio = max(maxRatio, float64(b.Conns())/share)
					if limit := capOf(5, 4, load-1, int64(b.Weight), total); b.Conns() > limit {
						t.Errorf("%s holds %d connections, above ⌈1.25 × %.0f⌉ = %d", b.Addr, b.Conns(), share, limit)
					}
				}
				for _, k := range dist.keys {
					if s.Lookup(k).Conns() > 0 {
						firstChoice++
					}
				}
				releaseAll(bs)

				// The same keys, unbounded.
				free, _ := NewHash(0, nil)
				for _, k := range dist.keys {
					free.Pick(s, k, Tried{})
				}
				freeRatio := 0.0
				for _, b := range s.Backends() {
					share := float64(load) * float64(b.Weight) / float64(total)
					freeRatio = max(freeRatio, float64(b.Conns())/share)
				}
				t.Logf("max load / weighted average: %.3f bounded (c=1.25), %.2f unbounded", maxRatio, freeRatio)
				if freeRatio < 1.5 {
					t.Errorf("unbounded max/avg = %.2f: the keys are not skewed enough to test the bound", freeRatio)
				}
			})
		}
	}
}

// TestBoundedLoadsChurn: with connections closing at random as others
// open, every new connection still lands on a backend under its bound at
// that moment.
func TestBoundedLoadsChurn(t *testing.T) {
	t.Parallel()
	bs := backends(nil, 10, nil)
	s := NewSet(bs)
	h, _ := NewHash(1.25, nil)
	r := rand.New(rand.NewPCG(3, 3))
	var open []*Backend
	for i, k := range skewedKeys(30_000, 9) {
		if len(open) > 0 && r.IntN(10) < 4 {
			j := r.IntN(len(open))
			open[j].Release()
			open[j] = open[len(open)-1]
			open = open[:len(open)-1]
		}
		limit := capOf(5, 4, int64(len(open)), 1, 10)
		b := h.Pick(s, k, Tried{})
		if b.Conns() > limit {
			t.Fatalf("connection %d: %s holds %d, above its bound %d", i, b.Addr, b.Conns(), limit)
		}
		open = append(open, b)
	}
}

// TestBoundedLoadsConcurrent: picks racing on 4 goroutines cannot push a
// backend past its bound, because check and count are one atomic step.
func TestBoundedLoadsConcurrent(t *testing.T) {
	t.Parallel()
	bs := backends(nil, 10, func(i int) int { return 1 + i%2 })
	s := NewSet(bs)
	h, _ := NewHash(1.25, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for _, k := range skewedKeys(5_000, uint64(g)) {
				h.Pick(s, k, Tried{})
			}
		})
	}
	wg.Wait()
	var load, total int64
	for _, b := range bs {
		load += b.Conns()
		total += int64(b.Weight)
	}
	for _, b := range bs {
		if limit := capOf(5, 4, load-1, int64(b.Weight), total); b.Conns() > limit {
			t.Errorf("%s holds %d of %d, above its bound %d", b.Addr, b.Conns(), load, limit)
		}
	}
}

// TestHashRetry: each retry with the failed backends in tried returns the
// key's next choice, and nil once all are tried.
func TestHashRetry(t *testing.T) {
	t.Parallel()
	bs := backends(nil, 5, nil)
	s := NewSet(bs)
	for _, c := range []float64{0, 1.25} {
		h, _ := NewHash(c, nil)
		for _, k := range testKeys()[:100] {
			pref := s.AppendPreference(nil, k)
			var tried Tried
			for i, want := range pref {
				got := h.Pick(s, k, tried)
				if got != want {
					t.Fatalf("c=%v key %q attempt %d: %v, want %s", c, k, i, got, want.Addr)
				}
				got.Release()
				tried.Add(got)
			}
			if got := h.Pick(s, k, tried); got != nil {
				t.Fatalf("all backends tried, got %s", got.Addr)
			}
		}
	}
}

// TestHashHealth: an unhealthy first choice sends the key to its next
// choice, and back once healthy again.
func TestHashHealth(t *testing.T) {
	t.Parallel()
	bs := backends(nil, 10, nil)
	s := NewSet(bs)
	h, _ := NewHash(1.25, nil)
	k := []byte("room-7")
	pref := s.AppendPreference(nil, k)
	pref[0].SetHealthy(false)
	if got := h.Pick(s, k, Tried{}); got != pref[1] {
		t.Errorf("first choice down: got %s, want %s", got.Addr, pref[1].Addr)
	}
	pref[0].SetHealthy(true)
	if got := h.Pick(s, k, Tried{}); got != pref[0] {
		t.Errorf("first choice back: got %s, want %s", got.Addr, pref[0].Addr)
	}
	for _, b := range bs {
		b.SetHealthy(false)
	}
	if got := h.Pick(s, k, Tried{}); got != nil {
		t.Errorf("all down: got %s, want nil", got.Addr)
	}
}

// TestHashAllFull: when tried backends leave only full ones, the key's
// first eligible backend takes the connection anyway.
func TestHashAllFull(t *testing.T) {
	t.Parallel()
	bs := backends(nil, 2, nil)
	s := NewSet(bs)
	h, _ := NewHash(1, nil)
	k := []byte("k")
	pref := s.AppendPreference(nil, k)
	for range 10 {
		pref[0].Acquire()
	}
	// Bound: ⌈1·11/2⌉ = 6; pref[0] is full.
	if got := h.Pick(s, k, Tried{}); got != pref[1] {
		t.Fatalf("got %s, want the next choice %s", got.Addr, pref[1].Addr)
	}
	var tried Tried
	tried.Add(pref[1])
	if got := h.Pick(s, k, tried); got != pref[0] {
		t.Fatalf("got %v, want the full first choice %s", got, pref[0].Addr)
	}
}

func TestHashNilKey(t *testing.T) {
	t.Parallel()
	bs := backends(nil, 3, nil)
	s := NewSet(bs)
	bs[0].Acquire()
	bs[2].Acquire()
	h, _ := NewHash(1.25, nil)
	if got := h.Pick(s, nil, Tried{}); got != bs[1] {
		t.Errorf("nil key went to %v, want the least loaded %s", got, bs[1].Addr)
	}
	rr := NewRoundRobin()
	h, _ = NewHash(0, rr)
	if got := h.Pick(s, nil, Tried{}); got == nil {
		t.Error("nil key with a RoundRobin fallback found no backend")
	} else {
		got.Release()
	}
	bs[0].Release()
	bs[2].Release()
	bs[1].Acquire()
	bs[2].Acquire()
	h, _ = NewHash(0, nil)
	if got := h.Pick(s, []byte{}, Tried{}); got != bs[0] {
		t.Errorf("empty key went to %v, want the least loaded %s", got, bs[0].Addr)
	}
}

func TestNewHash(t *testing.T) {
	t.Parallel()
	for _, c := range []float64{0, 1, 1.25, 2, MaxLoadFactor} {
		h, err := NewHash(c, nil)
		if err != nil || h.LoadFactor() != c {
			t.Errorf("NewHash(%v) = %v, %v", c, h, err)
		}
	}
	for _, c := range []float64{-1, 0.5, 0.999, MaxLoadFactor + 1, nan()} {
		if _, err := NewHash(c, nil); err == nil {
			t.Errorf("NewHash(%v) accepted", c)
		}
	}
}

func nan() float64 { var z float64; return z / z }

func TestCapacity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ num, w, den, want uint64 }{
		{1250 * 11, 1, 1000 * 10, 2}, // ⌈1.25·11/10⌉
		{1250 * 8, 1, 1000 * 10, 1},  // ⌈1.0⌉
		{1000 * 1, 3, 1000 * 3, 1},   // exact
		{1250 * 1e9, 65536, 1000 * 10, 8192000000000},
	} {
		if got := capacity(tc.num, tc.w, tc.den); uint64(got) != tc.want {
			t.Errorf("capacity(%d,%d,%d) = %d, want %d", tc.num, tc.w, tc.den, got, tc.want)
		}
	}
}
