package proxy

import (
	"testing"
	"time"
)

// TestMemReleaserAfterBursts: memory is released once a burst of
// handshakes has been followed by a quiet tick, not during the burst, not
// for a trickle, and not more often than releaseEvery.
func TestMemReleaserAfterBursts(t *testing.T) {
	m := &memReleaser{}
	t0 := time.Unix(1000, 0)
	tick := func(i int) bool { return m.due(t0.Add(time.Duration(i) * releaseTick)) }
	at := func(d time.Duration) bool { return m.due(t0.Add(d)) }
	for i := 0; i < releaseAfter; i++ {
		m.handshake()
	}
	if tick(1) {
		t.Fatal("released during the burst")
	}
	if !tick(2) {
		t.Fatal("not released after a quiet tick")
	}
	if tick(3) {
		t.Fatal("released twice for one burst")
	}
	for i := 0; i < releaseAfter; i++ {
		m.handshake()
	}
	first := 2 * releaseTick // when the first burst was released
	at(first + releaseEvery/4)
	if at(first + releaseEvery/2) {
		t.Fatal("released again within releaseEvery")
	}
	if !tick(20) {
		t.Fatal("a second burst was never released")
	}
	m.handshake()
	tick(40)
	if tick(41) {
		t.Fatal("released after a single handshake")
	}
}
