//go:build linux

package relay

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/internal/testnet"
)

// TestAcceptRawAddresses: the raw accept reads the client's address and
// port itself, IPv4 and IPv6 (the access log, per-IP limits and the
// X-Forwarded-For sent to backends all start from it).
func TestAcceptRawAddresses(t *testing.T) {
	for _, c := range []struct{ listen, from string }{
		{"127.0.0.1:0", "127.0.0.3:0"},
		{"[::1]:0", "[::1]:0"},
	} {
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			if c.listen[0] == '[' {
				t.Logf("no IPv6 loopback: %v", err)
				continue
			}
			t.Fatal(err)
		}
		defer ln.Close()
		raw, _ := ln.(*net.TCPListener).SyscallConn()
		var lfd int
		raw.Control(func(s uintptr) { lfd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(lfd)
		d := net.Dialer{LocalAddr: mustTCPAddr(t, c.from)}
		conn, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var fd int
		var remote netip.AddrPort
		for deadline := time.Now().Add(5 * time.Second); ; {
			fd, remote, err = acceptRaw(lfd)
			if err != unix.EAGAIN || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s: accept: %v", c.listen, err)
		}
		unix.Close(fd)
		if want := conn.LocalAddr().(*net.TCPAddr).AddrPort(); remote != want {
			t.Errorf("%s: accepted from %v, the client is %v", c.listen, remote, want)
		}
	}
}

func mustTCPAddr(t *testing.T, s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRequestWaitsForASlowConnect: the request is written at once when
// the connection is up by the time connect returns (as on loopback); a
// backend whose SYN is not answered yet refuses that write, and the
// request must then go out, whole, when the connection completes.
func TestRequestWaitsForASlowConnect(t *testing.T) {
	ls, err := NewLoops(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	ln := testnet.FullListener(t)
	req := []byte("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	up := &seqUpstream{attempts: []Attempt{
		{Addr: ln.Addr().String(), Request: req, DialTimeout: 10 * time.Second, Timeout: 10 * time.Second},
	}}
	client, owned := tcpPair(t)
	defer client.Close()
	if !ls.Dial(owned, nil, up) {
		t.Fatal("Dial refused the connection")
	}
	owned.Close()

	time.Sleep(300 * time.Millisecond) // the SYN is dropped: the dial is connecting
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	first, err := ln.Accept() // the filler; its slot goes to the dial's next SYN
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	b, err := ln.Accept()
	if err != nil {
		t.Fatalf("the backend was not dialled: %v", err)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(req))
	if _, err := io.ReadFull(b, got); err != nil || string(got) != string(req) {
		t.Fatalf("the backend got %q (%v), want the request", got, err)
	}
	b.Close()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	ans, _ := io.ReadAll(client)
	if !strings.HasPrefix(string(ans), "HTTP/1.1 502") {
		t.Fatalf("the client got %q, want the 502", ans)
	}
}

// errUpstream hands over the errors its attempts ended with (Next runs on
// the loop's thread).
type errUpstream struct {
	seqUpstream
	errs chan error
}

func (u *errUpstream) Next(prev error) (Attempt, bool) {
	if prev != nil {
		u.errs <- prev
	}
	return u.seqUpstream.Next(prev)
}

// TestRefusedBackendIsADialError: on loopback a refused connection shows
// first in the write that follows connect; it must still count as a
// failed dial (safe to try the next backend), with its cause.
func TestRefusedBackendIsADialError(t *testing.T) {
	ls, err := NewLoops(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	live, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	up := &errUpstream{seqUpstream: seqUpstream{attempts: []Attempt{
		{Addr: deadAddr, Request: req, DialTimeout: 5 * time.Second, Timeout: 5 * time.Second},
		{Addr: live.Addr().String(), Request: req, DialTimeout: 5 * time.Second, Timeout: 5 * time.Second},
	}}, errs: make(chan error, 4)}
	client, owned := tcpPair(t)
	defer client.Close()
	if !ls.Dial(owned, nil, up) {
		t.Fatal("Dial refused the connection")
	}
	owned.Close()
	live.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	b, err := live.Accept()
	if err != nil {
		t.Fatalf("the second backend was not dialled: %v", err)
	}
	b.Close()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	var first error
	select {
	case first = <-up.errs:
	case <-time.After(5 * time.Second):
		t.Fatal("no error recorded for the refused backend")
	}
	var ue *UpstreamError
	if !errors.As(first, &ue) || !ue.Dial || !errors.Is(ue.Err, unix.ECONNREFUSED) {
		t.Fatalf("the refused backend ended with %v, want a dial error: connection refused", first)
	}
	if !strings.Contains(first.Error(), strconv.Itoa(dead.Addr().(*net.TCPAddr).Port)) {
		t.Errorf("the error %q does not name the backend", first)
	}
}
