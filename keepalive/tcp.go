package keepalive

import (
	"fmt"
	"syscall"
	"time"
)

// Limits of the Linux kernel for the options Apply sets (MAX_TCP_KEEPIDLE,
// MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT; TCP_USER_TIMEOUT is an int of
// milliseconds).
const (
	maxKeepSecs    = 32767
	maxKeepCount   = MaxCount
	maxUserTimeout = time.Duration(1<<31-1) * time.Millisecond
)

// MaxCount is the most keepalive probes Linux takes (TCP_KEEPCNT).
const MaxCount = 127

// TCP is the kernel-side liveness of one TCP connection: keepalive probes
// while the connection is idle, and a bound on how long sent data may stay
// unacknowledged. A route has one for the client leg and one for the
// backend leg; DefaultTCP gives the defaults.
//
// A zero field leaves the socket's current value, which is the kernel's
// default (Linux: idle 7200s, interval 75s, 9 probes, no user timeout)
// unless Go's net package already set it: sockets dialed or accepted by
// net with the default KeepAlive have keepalive on, with idle and interval
// 15s and 9 probes. So TCP{} turns keepalive on and changes nothing else.
// A negative Idle turns keepalive off (the other keepalive fields are then
// ignored); a negative UserTimeout turns the user timeout off.
//
// The kernel counts keepalive times in whole seconds: Idle and Interval are
// rounded up to the next second (at least 1s). UserTimeout is rounded up to
// the next millisecond.
type TCP struct {
	// Idle is how long the connection must be idle (nothing received)
	// before the first keepalive probe (TCP_KEEPIDLE); at most 32767s.
	Idle time.Duration
	// Interval is the time between unanswered probes (TCP_KEEPINTVL); at
	// most 32767s.
	Interval time.Duration
	// Count is how many unanswered probes make the peer dead
	// (TCP_KEEPCNT); at most 127. When UserTimeout is set the kernel
	// ignores Count and drops the connection at the first probe that finds
	// nothing received for UserTimeout (see DefaultTCP).
	Count int
	// UserTimeout is how long sent data may stay unacknowledged before the
	// kernel drops the connection (TCP_USER_TIMEOUT); it also bounds a
	// window that stays shut (zero-window probes) and, with keepalive on,
	// replaces Count as above. At most about 24.8 days.
	UserTimeout time.Duration
}

// DefaultTCP returns the defaults for both legs: Idle 30s, Interval 10s,
// Count 3 and UserTimeout 60s.
//
// With these, a peer that vanished from a quiet connection (host gone,
// NAT or conntrack entry lost) is found in about Idle + Interval·Count =
// 60s, by three empty probes from the kernel and no work in user space; a
// 30s idle also keeps NAT mappings and stateful firewalls with idle
// timeouts of a minute or more from dropping a connection between pings.
// Keepalive probes are sent only when nothing is in flight, so they do not
// help while we are writing to a peer that stopped answering: without a
// user timeout the kernel retransmits for about 15 minutes
// (tcp_retries2=15) before it gives up, holding the connection and its
// send buffer. TCP_USER_TIMEOUT bounds that to 60s. It is set to
// Idle + Interval·Count on purpose: Linux uses the user timeout instead of
// Count to end keepalive probing (the connection is dropped at the first
// probe at which nothing has been received for UserTimeout), so a shorter
// user timeout would silently shorten keepalive detection and make Count
// meaningless.
func DefaultTCP() TCP {
	return TCP{Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3, UserTimeout: 60 * time.Second}
}

// Validate reports whether Apply can set o: the fields must be within the
// kernel's limits, and Interval and Count must not be negative.
func (o TCP) Validate() error {
	if o.Idle > maxKeepSecs*time.Second {
		return fmt.Errorf("keepalive: TCP idle %v is over %ds", o.Idle, maxKeepSecs)
	}
	if o.Interval < 0 || o.Interval > maxKeepSecs*time.Second {
		return fmt.Errorf("keepalive: TCP interval %v is not within 0..%ds", o.Interval, maxKeepSecs)
	}
	if o.Count < 0 || o.Count > maxKeepCount {
		return fmt.Errorf("keepalive: TCP count %d is not within 0..%d", o.Count, maxKeepCount)
	}
	if o.UserTimeout > maxUserTimeout {
		return fmt.Errorf("keepalive: TCP user timeout %v is over %v", o.UserTimeout, maxUserTimeout)
	}
	return nil
}

// Apply sets o on the TCP socket behind c (a *net.TCPConn; for TLS, the
// connection underneath). It first validates o and changes nothing if o is
// invalid; an error from the kernel is returned wrapped in an
// *os.SyscallError naming the option; on platforms other than Linux the
// error wraps errors.ErrUnsupported. Apply is safe to call while the
// connection is in use by other goroutines. It allocates only what
// SyscallConn and the Control callback need (three small objects).
func Apply(c syscall.Conn, o TCP) error {
	return apply(c, o, setOpts)
}

// ApplyUserTimeout sets only o's TCP_USER_TIMEOUT on c (nothing if it is
// 0): for a socket that inherited the keepalive settings from its
// listener, where the user timeout cannot be set (Linux refuses it on a
// listening socket).
func ApplyUserTimeout(c syscall.Conn, o TCP) error {
	return apply(c, TCP{UserTimeout: o.UserTimeout}, setUserTimeout)
}

// Keepalive returns o without its user timeout: what a listening socket
// can hold for the sockets it accepts.
func (o TCP) Keepalive() TCP {
	o.UserTimeout = 0
	return o
}

func apply(c syscall.Conn, o TCP, set func(uintptr, TCP) error) error {
	if err := o.Validate(); err != nil {
		return err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("keepalive: apply: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = set(fd, o) }); err != nil {
		return fmt.Errorf("keepalive: apply: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("keepalive: apply: %w", serr)
	}
	return nil
}

// Read returns the options of the TCP socket behind c as the kernel holds
// them, and whether keepalive is on. The keepalive fields are returned even
// when it is off (they apply if it is turned on again). It is meant for
// tests and for the admin API.
func Read(c syscall.Conn) (TCP, bool, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return TCP{}, false, fmt.Errorf("keepalive: read: %w", err)
	}
	var r struct {
		o   TCP
		on  bool
		err error
	}
	if err := raw.Control(func(fd uintptr) { r.o, r.on, r.err = getOpts(fd) }); err != nil {
		return TCP{}, false, fmt.Errorf("keepalive: read: %w", err)
	}
	if r.err != nil {
		return TCP{}, false, fmt.Errorf("keepalive: read: %w", r.err)
	}
	return r.o, r.on, nil
}

// seconds converts a keepalive time to the kernel's whole seconds, rounded
// up, at least 1.
func seconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// millis converts the user timeout to milliseconds, rounded up, at least 1.
func millis(d time.Duration) int {
	return max(1, int((d+time.Millisecond-1)/time.Millisecond))
}
