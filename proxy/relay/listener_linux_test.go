//go:build linux

package relay

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/internal/testnet"
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

// TestAcceptedSocketsDelayACKs: a connection the loops accept starts with
// delayed ACKs (the listener's TCP_QUICKACK 0 is inherited), so the ACK of
// a client's request leaves with the answer rather than alone.
func TestAcceptedSocketsDelayACKs(t *testing.T) {
	ls, err := NewLoops(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // as the proxy listens: an MPTCP listener refuses the option
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ls.Listen(ln, handAllFront{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sc := testnet.Accepted(t, l)
	if quick := testnet.SockoptInt(t, sc.(*net.TCPConn), unix.IPPROTO_TCP, unix.TCP_QUICKACK); quick != 0 {
		t.Fatalf("accepted socket: TCP_QUICKACK %d; want 0, delayed ACKs", quick)
	}
}
