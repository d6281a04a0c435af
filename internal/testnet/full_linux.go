//go:build linux

package testnet

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// FullListener is a listening socket on 127.0.0.1 whose accept queue is
// full: the kernel drops the SYN of the next connection, which stays
// connecting until a retransmitted SYN finds room (a second or more after
// a connection is accepted, never if none is). The connection that fills
// the queue is the first Accept returns; it and the listener are closed
// when the test ends.
func FullListener(t testing.TB) *net.TCPListener {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // room for one
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "full")
	ln, err := net.FileListener(f) // a duplicate of fd
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	filler, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return ln.(*net.TCPListener)
}
