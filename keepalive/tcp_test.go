//go:build linux

package keepalive

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of a real loopback TCP connection, closed when
// the test ends.
func tcpPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); a.Close() })
	return c.(*net.TCPConn), a.(*net.TCPConn)
}

func mustRead(t *testing.T, c syscall.Conn) (TCP, bool) {
	t.Helper()
	o, on, err := Read(c)
	if err != nil {
		t.Fatal(err)
	}
	return o, on
}

// TestApplyReadBothEnds: different options on the two ends of one
// connection read back from each socket with getsockopt.
func TestApplyReadBothEnds(t *testing.T) {
	t.Parallel()
	dialed, accepted := tcpPair(t)
	od := TCP{Idle: 7 * time.Second, Interval: 3 * time.Second, Count: 4, UserTimeout: 2500 * time.Millisecond}
	oa := TCP{Idle: 11 * time.Second, Interval: 5 * time.Second, Count: 6, UserTimeout: 9 * time.Second}
	if err := Apply(dialed, od); err != nil {
		t.Fatal(err)
	}
	if err := Apply(accepted, oa); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		conn *net.TCPConn
		want TCP
	}{{"dialed", dialed, od}, {"accepted", accepted, oa}} {
		got, on := mustRead(t, c.conn)
		if !on || got != c.want {
			t.Errorf("%s: Read = %+v, enabled %v; want %+v, enabled", c.name, got, on, c.want)
		}
	}
}

// TestApplyDefaults: DefaultTCP as the kernel holds it.
func TestApplyDefaults(t *testing.T) {
	t.Parallel()
	dialed, accepted := tcpPair(t)
	for _, c := range []*net.TCPConn{dialed, accepted} {
		if err := Apply(c, DefaultTCP()); err != nil {
			t.Fatal(err)
		}
		if got, on := mustRead(t, c); !on || got != DefaultTCP() {
			t.Errorf("Read = %+v, %v; want %+v, enabled", got, on, DefaultTCP())
		}
	}
}

// TestGoNetDefaults checks what the doc of TCP says about sockets from Go's
// net package with the default KeepAlive, and that TCP{} changes none of it.
func TestGoNetDefaults(t *testing.T) {
	t.Parallel()
	dialed, accepted := tcpPair(t)
	want := TCP{Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}
	for _, c := range []*net.TCPConn{dialed, accepted} {
		if got, on := mustRead(t, c); !on || got != want {
			t.Errorf("net default: Read = %+v, %v; want %+v, enabled", got, on, want)
		}
		if err := Apply(c, TCP{}); err != nil {
			t.Fatal(err)
		}
		if got, on := mustRead(t, c); !on || got != want {
			t.Errorf("after TCP{}: Read = %+v, %v; want %+v, enabled", got, on, want)
		}
	}
}

// TestApplyRounding: keepalive times go up to whole seconds (at least one),
// the user timeout up to whole milliseconds.
func TestApplyRounding(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)
	if err := Apply(c, TCP{Idle: 1500 * time.Millisecond, Interval: time.Nanosecond, Count: 1, UserTimeout: 1500 * time.Microsecond}); err != nil {
		t.Fatal(err)
	}
	want := TCP{Idle: 2 * time.Second, Interval: time.Second, Count: 1, UserTimeout: 2 * time.Millisecond}
	if got, _ := mustRead(t, c); got != want {
		t.Fatalf("Read = %+v, want %+v", got, want)
	}
}

// TestApplyZeroLeaves: zero fields leave what the socket had.
func TestApplyZeroLeaves(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)
	first := TCP{Idle: 20 * time.Second, Interval: 4 * time.Second, Count: 5, UserTimeout: 7 * time.Second}
	if err := Apply(c, first); err != nil {
		t.Fatal(err)
	}
	if err := Apply(c, TCP{Count: 2}); err != nil {
		t.Fatal(err)
	}
	want := first
	want.Count = 2
	if got, on := mustRead(t, c); !on || got != want {
		t.Fatalf("Read = %+v, %v; want %+v, enabled", got, on, want)
	}
}

// TestApplyDisable: a negative Idle turns keepalive off on both ends and
// a later Apply turns it on again; a negative UserTimeout clears it.
func TestApplyDisable(t *testing.T) {
	t.Parallel()
	dialed, accepted := tcpPair(t)
	for _, c := range []*net.TCPConn{dialed, accepted} {
		if err := Apply(c, DefaultTCP()); err != nil {
			t.Fatal(err)
		}
		if err := Apply(c, TCP{Idle: -1, Interval: time.Second, UserTimeout: -1}); err != nil {
			t.Fatal(err)
		}
		got, on := mustRead(t, c)
		if on {
			t.Fatal("keepalive still on after a negative Idle")
		}
		want := DefaultTCP()
		want.UserTimeout = 0 // Interval was ignored
		if got != want {
			t.Fatalf("Read = %+v, want %+v", got, want)
		}
		if err := Apply(c, TCP{Idle: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if got, on := mustRead(t, c); !on || got.Idle != time.Minute {
			t.Fatalf("Read = %+v, %v after turning keepalive on again", got, on)
		}
	}
}

// TestApplyInvalid: options beyond the kernel's limits are refused before
// the socket is touched.
func TestApplyInvalid(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)
	if err := Apply(c, DefaultTCP()); err != nil {
		t.Fatal(err)
	}
	for _, o := range []TCP{
		{Idle: 32768 * time.Second, Count: 1},
		{Interval: -time.Second, Count: 1},
		{Interval: 40000 * time.Second, Count: 1},
		{Count: -1},
		{Count: 128},
		{UserTimeout: 25 * 24 * time.Hour, Count: 1},
	} {
		if err := Apply(c, o); err == nil {
			t.Errorf("Apply(%+v) = nil, want an error", o)
		}
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", o)
		}
	}
	if got, _ := mustRead(t, c); got != DefaultTCP() {
		t.Fatalf("a refused Apply changed the socket: %+v", got)
	}
	if err := (TCP{Idle: 32767 * time.Second, Interval: 32767 * time.Second, Count: 127, UserTimeout: 24 * 24 * time.Hour}).Validate(); err != nil {
		t.Fatalf("the largest options are refused: %v", err)
	}
}

// TestApplyErrors: a socket that is not TCP, and a closed connection.
func TestApplyErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	err = Apply(u.(*net.UnixConn), DefaultTCP())
	var se *os.SyscallError
	if !errors.As(err, &se) {
		t.Fatalf("Apply on a unix socket: %v, want an *os.SyscallError", err)
	}
	t.Logf("unix socket: %v", err)
	if _, _, err := Read(u.(*net.UnixConn)); err == nil {
		t.Fatal("Read on a unix socket = nil error")
	}

	c, _ := tcpPair(t)
	c.Close()
	if err := Apply(c, DefaultTCP()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Apply on a closed connection: %v, want net.ErrClosed", err)
	}
}

// TestUserTimeoutCutsBlockedWrite shows TCP_USER_TIMEOUT ending a write on
// loopback. A peer that stops ACKing cannot be made without privileges or
// netem, but a peer that stops reading can: its receive window closes, our
// send buffer fills and the write blocks while the kernel sends zero-window
// probes. Since Linux 5.11 the user timeout bounds that probing too, so with
// a user timeout of 1s the blocked write fails with ETIMEDOUT, while on a
// connection without it the write is still blocked when its own 3s deadline
// ends it. This is the zero-window path of the option, not the
// retransmission path (a peer that vanished), which shares the option but
// not the code.
func TestUserTimeoutCutsBlockedWrite(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 3s")
	}
	type result struct {
		err     error
		elapsed time.Duration
	}
	run := func(userTimeout time.Duration) result {
		sender, receiver := tcpPair(t)
		// Small buffers so that the window closes after little data.
		receiver.SetReadBuffer(4096)
		sender.SetWriteBuffer(4096)
		if userTimeout > 0 {
			if err := Apply(sender, TCP{Idle: -1, UserTimeout: userTimeout}); err != nil {
				t.Error(err)
				return result{}
			}
		}
		sender.SetWriteDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64<<10)
		start := time.Now()
		for {
			if _, err := sender.Write(buf); err != nil {
				return result{err, time.Since(start)}
			}
		}
	}
	with, without := make(chan result, 1), make(chan result, 1)
	go func() { with <- run(time.Second) }()
	go func() { without <- run(0) }()

	r := <-with
	if !errors.Is(r.err, unix.ETIMEDOUT) {
		t.Errorf("with a 1s user timeout: write ended by %v after %v, want ETIMEDOUT", r.err, r.elapsed)
	} else if r.elapsed < time.Second {
		t.Errorf("with a 1s user timeout: ETIMEDOUT after only %v", r.elapsed)
	}
	t.Logf("with a 1s user timeout: %v after %v", r.err, r.elapsed)
	r = <-without
	if !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Errorf("without a user timeout: write ended by %v after %v, want the 3s deadline", r.err, r.elapsed)
	}
	t.Logf("without a user timeout: %v after %v", r.err, r.elapsed)
}
