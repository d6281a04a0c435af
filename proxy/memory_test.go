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

// TestMemReleaserFollowUp: a burst's release is followed by one more once
// the workers that served it have exited (their stacks are garbage only
// then), unless handshakes came in between.
func TestMemReleaserFollowUp(t *testing.T) {
	m := &memReleaser{}
	t0 := time.Unix(1000, 0)
	for i := 0; i < releaseAfter; i++ {
		m.handshake()
	}
	m.due(t0)
	if !m.due(t0.Add(releaseTick)) {
		t.Fatal("not released after a quiet tick")
	}
	first := t0.Add(releaseTick)
	if m.due(first.Add(workersGone - releaseTick)) {
		t.Fatal("followed up before the workers were gone")
	}
	if !m.due(first.Add(workersGone)) {
		t.Fatal("no follow-up once the workers were gone")
	}
	if m.due(first.Add(workersGone + releaseEvery)) {
		t.Fatal("followed up twice")
	}

	// A handshake between the release and the follow-up: no follow-up
	// (a trickle is not worth a collection; a new burst gets its own).
	m = &memReleaser{}
	for i := 0; i < releaseAfter; i++ {
		m.handshake()
	}
	m.due(t0)
	m.due(t0.Add(releaseTick))
	m.handshake()
	m.due(t0.Add(2 * releaseTick))
	if m.due(t0.Add(releaseTick + workersGone)) {
		t.Fatal("followed up after new handshakes")
	}
}
