package relay

import (
	"errors"
	"time"
)

// Upstream is the backend handshake of a session that a loop performs
// itself (Loops.Dial): which backends to try, what to send each, how to
// judge the answer, and what the client is told. The loop connects with a
// non-blocking socket of its own, so the backend never enters Go's poller
// and no goroutine waits for it. Every method runs on the loop's thread
// and must not block.
type Upstream interface {
	// Next returns the next backend to try: with nil before the first
	// attempt, then with the previous attempt's error (an
	// *UpstreamError, or what Response returned). ok false gives up.
	Next(prev error) (a Attempt, ok bool)
	// Response judges what the backend has sent so far (eof: it has
	// closed, so that is all). It returns the length of the response head
	// when the head is a good 101 (the bytes after it are frames for the
	// client), 0 and nil to wait for more, or the attempt's error.
	Response(b []byte, eof bool) (head int, err error)
	// Switched is called after a good response, before any byte is
	// relayed. It returns the session's Config and sets what Start would
	// need (Tag, First, Keys) on s.
	Switched(s *Session) *Config
	// Failed returns the complete HTTP response for the client once Next
	// has given up; last is the last attempt's error, nil if none was made.
	// With ErrClientGone there is nobody to answer; with ErrStopping the
	// proxy is going away.
	Failed(last error) []byte
}

// Attempt is one backend to try.
type Attempt struct {
	// Addr is the backend's "host:port"; a host that is not an IP address
	// is resolved off the loop.
	Addr string
	// Request is the handshake request, written as is.
	Request []byte
	// DialTimeout bounds connecting, Timeout writing the request and
	// reading the response.
	DialTimeout, Timeout time.Duration
}

// ErrClientGone ends a handshake whose client closed its connection (or
// its sending side: it can send no frame, not even a close) before the
// backend answered. No backend is to blame.
var ErrClientGone = errors.New("relay: the client closed its connection before its handshake was answered")

// ErrStopping ends a handshake still in progress when its loop stops (the
// proxy's shutdown is over): not the backend's failure either.
var ErrStopping = errors.New("relay: the proxy is shutting down")

// UpstreamError is an attempt that failed in the loop's hands: connecting
// (Dial true) or exchanging the handshake.
type UpstreamError struct {
	Addr    string
	Dial    bool
	Timeout bool
	Err     error // the system error, if any
	Reason  string
}

func (e *UpstreamError) Error() string {
	what := "handshake with "
	if e.Dial {
		what = "dial "
	}
	s := "relay: " + what + e.Addr + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *UpstreamError) Unwrap() error { return e.Err }
