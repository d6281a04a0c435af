//go:build linux

package keepalive

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests make a peer really vanish: both ends of a loopback
// connection live in a private network namespace, made on one locked OS
// thread, whose loopback interface the test then takes down. From then on
// nothing either end sends arrives (no route, nothing answers, no RST), as
// when a host or a NAT mapping disappears, and the kernel's own timers have
// to notice. They need CAP_SYS_ADMIN and CAP_NET_ADMIN and are skipped
// without them. The namespace goes away with its thread: the goroutine
// never unlocks it, so the runtime ends the thread when the goroutine
// returns, and no other goroutine ever runs in that namespace.

// vanish is the outcome of one run: how a blocked Read on the conn ended.
type vanish struct {
	skip    string
	err     error
	elapsed time.Duration
}

// readAfterVanish opens a loopback connection in a private namespace,
// applies o to the dialing end, optionally leaves write bytes of
// unacknowledged data on it, takes the loopback down and reports how a
// Read blocked on the dialing end ends (deadline after wait).
func readAfterVanish(o TCP, write int, wait time.Duration) vanish {
	ch := make(chan vanish, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		ch <- func() vanish {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return vanish{skip: "no private network namespace: " + err.Error()}
			}
			if err := setLoopback(true); err != nil {
				return vanish{skip: "cannot bring lo up: " + err.Error()}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return vanish{err: err}
			}
			defer ln.Close()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return vanish{err: err}
			}
			defer c.Close()
			peer, err := ln.Accept()
			if err != nil {
				return vanish{err: err}
			}
			defer peer.Close()
			if err := Apply(c.(*net.TCPConn), o); err != nil {
				return vanish{err: err}
			}
			if err := setLoopback(false); err != nil {
				return vanish{err: err}
			}
			start := time.Now()
			if write > 0 {
				if _, err := c.Write(make([]byte, write)); err != nil {
					return vanish{err: err, elapsed: time.Since(start)}
				}
			}
			c.SetReadDeadline(start.Add(wait))
			_, err = c.Read(make([]byte, 1))
			return vanish{err: err, elapsed: time.Since(start)}
		}()
	}()
	return <-ch
}

// setLoopback brings lo of the calling thread's namespace up or down.
func setLoopback(up bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	flags := ifr.Uint16()
	if up {
		flags |= unix.IFF_UP
	} else {
		flags &^= unix.IFF_UP
	}
	ifr.SetUint16(flags)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func checkVanish(t *testing.T, v vanish, want error, min, max time.Duration) {
	t.Helper()
	if v.skip != "" {
		t.Skip(v.skip)
	}
	t.Logf("read ended after %v: %v", v.elapsed.Round(time.Millisecond), v.err)
	if !errors.Is(v.err, want) {
		t.Fatalf("read ended by %v after %v, want %v", v.err, v.elapsed, want)
	}
	if v.elapsed < min || v.elapsed > max {
		t.Fatalf("read ended after %v, want within [%v, %v]", v.elapsed, min, max)
	}
}

// TestKeepaliveFindsVanishedPeer: on a quiet connection, keepalive with
// Idle 1s, Interval 1s, Count 2 drops the connection about Idle +
// Interval·Count = 3s after the peer vanished; without keepalive the
// connection is still there after 5s.
func TestKeepaliveFindsVanishedPeer(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 5s")
	}
	t.Run("on", func(t *testing.T) {
		t.Parallel()
		v := readAfterVanish(TCP{Idle: time.Second, Interval: time.Second, Count: 2}, 0, 10*time.Second)
		checkVanish(t, v, unix.ETIMEDOUT, 2*time.Second, 5*time.Second)
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		v := readAfterVanish(TCP{Idle: -1}, 0, 5*time.Second)
		checkVanish(t, v, os.ErrDeadlineExceeded, 5*time.Second, 7*time.Second)
	})
}

// TestUserTimeoutFindsVanishedPeer: with data left unacknowledged, keepalive
// does not probe; a 1s user timeout drops the connection about 1s after the
// peer vanished, while without it the kernel is still retransmitting
// (for about 15 minutes) when the 4s read deadline ends the test.
func TestUserTimeoutFindsVanishedPeer(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 4s")
	}
	t.Run("on", func(t *testing.T) {
		t.Parallel()
		v := readAfterVanish(TCP{Idle: -1, UserTimeout: time.Second}, 1000, 10*time.Second)
		checkVanish(t, v, unix.ETIMEDOUT, time.Second, 3*time.Second)
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		// Keepalive on, with times that would have ended it by now on a
		// quiet connection: it does not run while data is in flight.
		v := readAfterVanish(TCP{Idle: time.Second, Interval: time.Second, Count: 1, UserTimeout: -1}, 1000, 4*time.Second)
		checkVanish(t, v, os.ErrDeadlineExceeded, 4*time.Second, 6*time.Second)
	})
}
