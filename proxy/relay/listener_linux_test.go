//go:build linux

package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// handAllFront hands every connection to Go at once, as a TLS port does.
type handAllFront struct{}

func (handAllFront) Plain() bool                          { return false }
func (handAllFront) Limits() (int, time.Duration)         { return 4096, time.Second }
func (handAllFront) AcceptFailed(err error, refused bool) {}
func (handAllFront) Accepted()                            {}
func (handAllFront) Request(head, rest []byte, remote netip.AddrPort) (Upstream, []byte) {
	return nil, nil
}

// TestListenerCloseClosesUnacceptedConns: connections a loop handed to Go
// that nobody accepted are closed with the listener, not left open with
// nobody to serve them.
func TestListenerCloseClosesUnacceptedConns(t *testing.T) {
	ls, err := NewLoops(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ls.Listen(ln, handAllFront{})
	if err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	for deadline := time.Now().Add(5 * time.Second); len(l.conns) < len(clients); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections handed over", len(l.conns), len(clients))
		}
	}
	l.Close()
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
			t.Errorf("client %d: read %d, %v; want the connection closed", i, n, err)
		}
	}
}
