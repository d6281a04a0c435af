//go:build linux

package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// seqUpstream offers its attempts in order and fails every response.
type seqUpstream struct {
	attempts []Attempt
	next     int // loop thread only
}

func (u *seqUpstream) Next(prev error) (Attempt, bool) {
	if u.next >= len(u.attempts) {
		return Attempt{}, false
	}
	u.next++
	return u.attempts[u.next-1], true
}

func (u *seqUpstream) Response(b []byte, eof bool) (int, error) {
	if eof {
		return 0, errors.New("closed")
	}
	return 0, nil
}

func (u *seqUpstream) Switched(s *Session) *Config { return &Config{} }

func (u *seqUpstream) Failed(last error) []byte {
	return []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

// TestLateLookupIsNotTakenForTheNextAttempt: an attempt whose host name
// lookup outlived its dial timeout leaves the lookup behind; its late
// answer must not be connected to in place of the next attempt's, which
// leaked a socket and dialled the wrong backend.
func TestLateLookupIsNotTakenForTheNextAttempt(t *testing.T) {
	ls, err := NewLoops(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	slow, fast := make(chan struct{}), make(chan struct{})
	ls.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		// A resolver that answers late, whatever the context says.
		switch host {
		case "slow.test":
			<-slow
		case "fast.test":
			<-fast
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	var lns [2]*net.TCPListener
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns[i] = ln.(*net.TCPListener)
	}
	port := func(i int) string { return strconv.Itoa(lns[i].Addr().(*net.TCPAddr).Port) }
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	up := &seqUpstream{attempts: []Attempt{
		{Addr: "slow.test:" + port(0), Request: req, DialTimeout: 100 * time.Millisecond, Timeout: time.Second},
		{Addr: "fast.test:" + port(1), Request: req, DialTimeout: 5 * time.Second, Timeout: 5 * time.Second},
	}}
	client, owned := tcpPair(t)
	defer client.Close()
	if !ls.Dial(owned, nil, up) {
		t.Fatal("Dial refused the connection")
	}
	owned.Close() // the loop has its own descriptor

	time.Sleep(500 * time.Millisecond) // the first attempt times out in its lookup
	close(slow)                        // its answer arrives during the second's
	time.Sleep(200 * time.Millisecond)
	close(fast)

	lns[1].SetDeadline(time.Now().Add(5 * time.Second))
	b, err := lns[1].Accept()
	if err != nil {
		t.Fatalf("the second attempt's backend was not dialled: %v", err)
	}
	lns[0].SetDeadline(time.Now().Add(300 * time.Millisecond))
	if c, err := lns[0].Accept(); err == nil {
		c.Close()
		t.Fatal("the first attempt's late lookup was dialled")
	}
	b.Close()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(client)
	if !strings.HasPrefix(string(got), "HTTP/1.1 502") {
		t.Fatalf("the client got %q, want the 502", got)
	}
}
