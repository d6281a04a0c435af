// Package keepalive holds the liveness mechanisms of a proxied WebSocket
// connection: a timing wheel that drives proxy pings, pong deadlines and
// connection timeouts for very many connections, and the TCP keepalive and
// user-timeout options of each leg's socket.
//
// # Three ways a dead peer is found
//
// Proxy pings (Wheel). Every ping interval the proxy sends its own ping
// frame to a peer, at a frame boundary, and swallows the pong; a peer whose
// pong is not back within the pong timeout is closed. This works at the
// WebSocket level, so it finds what TCP cannot: a peer whose application
// hangs while its kernel still ACKs, and a peer behind a NAT, load
// balancer or other L7 middlebox that terminates TCP itself and keeps its
// own side of the connection alive. The pings also count as traffic for
// middleboxes that drop WebSocket connections idle for too long. The cost
// is in user space: a timer per connection, a frame written and read per
// interval. The client leg and the backend leg have their own interval and
// timeout.
//
// TCP keepalive (TCP.Idle, Interval, Count). When nothing has been received
// for Idle and nothing is in flight, the kernel sends empty probes every
// Interval and drops the connection after Count unanswered ones. It finds a
// vanished host or a lost NAT/conntrack mapping on a quiet connection with
// no user-space work at all, and keeps such mappings fresh, but it only
// proves that the peer's kernel is there, and only up to the first
// middlebox that terminates TCP.
//
// TCP_USER_TIMEOUT (TCP.UserTimeout). Keepalive probes do not run while
// data is unacknowledged, and the kernel's own retransmissions give up only
// after about 15 minutes. The user timeout drops the connection once sent
// data has stayed unacknowledged (or the peer's window has stayed shut) for
// that long: it catches a peer that disappears while we are writing to it.
//
// In short: on a quiet connection, TCP keepalive notices a dead host
// first and cheaply; while writing, the user timeout does; and a pong
// deadline notices everything else, end to end, at the WebSocket level.
//
// # Using the wheel
//
// One Wheel serves the whole process. A connection embeds a Timer and
// implements Func, so arming a timer allocates nothing:
//
//	type conn struct {
//		keepalive.Timer
//		lastRead atomic.Int64 // updated by the relay on each read
//		...
//	}
//
//	func (c *conn) Fire(now time.Time) {
//		// compare now with the connection's deadlines: send a ping (without
//		// blocking), close a peer whose pong is overdue, end an idle or too
//		// old connection; then Schedule again for the next deadline.
//	}
//
//	c.Init(c)
//	wheel.Schedule(&c.Timer, pingInterval)
//
// One Timer per connection, scheduled for the earliest of its deadlines,
// is cheaper than one per deadline. Deadlines that move with every frame
// (an idle timeout) are best not rescheduled per frame: record the time of
// the last activity in an atomic and let Fire compare it and reschedule for
// the remainder. Fire runs on a wheel goroutine shared by many
// connections, so it must never block (see Func).
//
// A maximum connection lifetime of hours is an ordinary Schedule; Jitter
// spreads the ends of connections opened together.
package keepalive
