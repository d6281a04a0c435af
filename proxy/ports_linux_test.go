//go:build linux

package proxy

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/internal/testnet"
)

// TestListenTCPIsPlainTCP: the ports listen with plain TCP, not the
// Multipath TCP Go defaults to, which would refuse the options the event
// loops set on the listening socket and cost every accept more; and the
// sockets Go accepts there (TLS ports) start with delayed ACKs.
func TestListenTCPIsPlainTCP(t *testing.T) {
	ln, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if proto := testnet.SockoptInt(t, ln.(*net.TCPListener), unix.SOL_SOCKET, unix.SO_PROTOCOL); proto != unix.IPPROTO_TCP {
		t.Fatalf("listening socket protocol %d; want IPPROTO_TCP (%d)", proto, unix.IPPROTO_TCP)
	}
	ac := testnet.Accepted(t, ln)
	if quick := testnet.SockoptInt(t, ac.(*net.TCPConn), unix.IPPROTO_TCP, unix.TCP_QUICKACK); quick != 0 {
		t.Fatalf("accepted socket: TCP_QUICKACK %d; want 0, delayed ACKs", quick)
	}
}
