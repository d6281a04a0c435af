//go:build linux && !race

package keepalive

import "testing"

// TestApplyAllocs pins the allocations of Apply and Read: the *rawConn
// from SyscallConn, the Control callback and the variable it sets. They
// happen once per connection, not per ping.
func TestApplyAllocs(t *testing.T) {
	c, _ := tcpPair(t)
	o := DefaultTCP()
	if n := testing.AllocsPerRun(100, func() { Apply(c, o) }); n > 3 {
		t.Errorf("%v allocations per Apply, want at most 3", n)
	}
	if n := testing.AllocsPerRun(100, func() { Read(c) }); n > 3 {
		t.Errorf("%v allocations per Read, want at most 3", n)
	}
}
