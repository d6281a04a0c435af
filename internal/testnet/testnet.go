// Package testnet gives tests ports to listen on that nothing else on the
// machine will take first.
//
// Ports the kernel hands out for port 0 come from its ephemeral range
// (32768 and up here), the same range outgoing connections use: a port a
// test found free and closed can be taken by another test's connection
// before the process under test binds it. Ports below that range cannot.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FreePort returns a port below the ephemeral range that was free on every
// interface a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, release := HoldPorts(t, 1)
	release()
	return ports[0]
}

// HoldPorts returns n distinct such ports, each held open on every
// interface until release (or the end of the test), so that nothing takes
// them before the processes meant for them start.
func HoldPorts(t testing.TB, n int) (ports []int, release func()) {
	t.Helper()
	var lns []net.Listener
	release = func() {
		for _, ln := range lns {
			ln.Close()
		}
		lns = nil
	}
	t.Cleanup(release)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatal("testnet: no free ports below the ephemeral range")
		}
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			continue
		}
		lns = append(lns, ln)
		ports = append(ports, port)
	}
	return ports, release
}
