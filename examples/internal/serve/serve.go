// Package serve is the connection plumbing the example backends share: an
// accept loop that feeds fasthttp one tracked connection at a time, and the
// bookkeeping that lets a server's Close reach every connection it accepted
// and wait for every goroutine serving one, hijacked WebSockets included.
package serve

import (
	"errors"
	"iter"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// maxAcceptBackoff caps the wait after a temporary Accept error.
const maxAcceptBackoff = time.Second

// Conns accepts connections on a listener, serves each with a fasthttp
// server, and tracks them until they close. T is the per-connection state
// the owner couples to a connection (see Conn.Data).
//
// Conns shares its owner's mutex rather than keeping its own, so that the
// owner can check Closed, change Data and update its own state (rooms,
// counters) in one critical section. Methods say whether they take the
// lock or expect the caller to hold it.
type Conns[T any] struct {
	ln   net.Listener
	http *fasthttp.Server
	done chan struct{} // closed by Stop, ends the accept loop's backoff

	// wg counts the accept loop, one goroutine per accepted connection
	// running fasthttp's ServeConn, every upgrade from the moment its
	// handshake is accepted until fasthttp closes the hijacked connection,
	// and every goroutine started by Go. Every Add but Start's happens on a
	// goroutine that wg already counts, and Start comes before the owner
	// can be closed, so no Add can race with Wait.
	wg sync.WaitGroup

	mu     *sync.Mutex // the owner's; guards closed, conns and every Data
	closed bool
	conns  map[*Conn[T]]struct{} // every accepted connection still open
}

// New returns a Conns that will accept on ln and serve with srv, guarded by
// mu. Nothing is accepted until Start, so the owner can finish setting
// itself up (srv's handler may use the Conns) first.
func New[T any](ln net.Listener, srv *fasthttp.Server, mu *sync.Mutex) *Conns[T] {
	return &Conns[T]{
		ln:    ln,
		http:  srv,
		done:  make(chan struct{}),
		mu:    mu,
		conns: make(map[*Conn[T]]struct{}),
	}
}

// Start starts the accept loop, which runs until Stop.
func (cs *Conns[T]) Start() {
	cs.wg.Add(1)
	go cs.acceptLoop()
}

// Closed reports whether Stop has been called. The caller holds the lock.
func (cs *Conns[T]) Closed() bool { return cs.closed }

// Stop marks the Conns closed and closes the listener, which ends the
// accept loop; open connections are left alone (see CloseAll). It reports
// false if Stop had already been called. The caller holds the lock.
func (cs *Conns[T]) Stop() (first bool, err error) {
	if cs.closed {
		return false, nil
	}
	cs.closed = true
	close(cs.done)
	err = cs.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return true, err
}

// All yields every connection still open. The caller holds the lock
// throughout the iteration, so the connections' Data stays put.
func (cs *Conns[T]) All() iter.Seq[*Conn[T]] {
	return func(yield func(*Conn[T]) bool) {
		for c := range cs.conns {
			if !yield(c) {
				return
			}
		}
	}
}

// CloseAll closes every open connection underneath fasthttp and the
// WebSocket layer. The goroutines serving them notice on their next read
// or write and return. It takes the lock.
func (cs *Conns[T]) CloseAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.conns {
		_ = c.Conn.Close()
	}
}

// Go runs f on a new goroutine that Wait waits for. It must be called from
// a goroutine the Conns already counts (one serving a connection or an
// upgrade), so that it cannot race with Wait.
func (cs *Conns[T]) Go(f func()) { cs.wg.Go(f) }

// Wait returns once the accept loop and every goroutine serving a
// connection, an upgrade or started by Go have ended. It does not take the
// lock; call it after Stop.
func (cs *Conns[T]) Wait() { cs.wg.Wait() }

func (cs *Conns[T]) acceptLoop() {
	defer cs.wg.Done()
	var backoff time.Duration
	for {
		nc, err := cs.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary trouble such as running out of file descriptors:
			// back off as net/http does, but stop at once on Stop.
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			timer := time.NewTimer(backoff)
			select {
			case <-cs.done:
				timer.Stop()
				return
			case <-timer.C:
			}
			continue
		}
		backoff = 0
		c := &Conn[T]{Conn: nc, owner: cs}
		cs.mu.Lock()
		if cs.closed {
			cs.mu.Unlock()
			_ = nc.Close()
			return
		}
		cs.conns[c] = struct{}{}
		cs.wg.Add(1)
		cs.mu.Unlock()
		go cs.serveConn(c)
	}
}

// serveConn runs fasthttp on one connection. ServeConn returns when the
// connection is closed or hijacked; a hijacked connection stays counted in
// wg through its upgrade (see Conn.BeginUpgrade).
func (cs *Conns[T]) serveConn(c *Conn[T]) {
	defer cs.wg.Done()
	_ = cs.http.ServeConn(c)
}

// Conn is an accepted TCP connection; a fasthttp handler finds it as
// ctx.Conn(). fasthttp sees it as a plain net.Conn and calls Close exactly
// once when it is done with it; the owner closes the embedded Conn
// directly, so that the bookkeeping in Close always runs on fasthttp's
// schedule.
type Conn[T any] struct {
	net.Conn
	owner     *Conns[T]
	upgrading atomic.Bool // an upgrade counted in owner.wg is outstanding

	// Data is the owner's state for the connection, guarded by the lock.
	Data T
}

// BeginUpgrade counts an upgrade before the handshake is answered, so that
// Wait covers the hijacked connection's handler. It runs on the
// connection's serving goroutine and takes the lock; it reports false,
// counting nothing, once Stop has been called. The count is released by
// Close, which fasthttp calls either when writing the 101 response fails
// or after the hijack handler has returned, or by AbortUpgrade when the
// upgrader refuses the request.
func (c *Conn[T]) BeginUpgrade() bool {
	c.owner.mu.Lock()
	defer c.owner.mu.Unlock()
	if c.owner.closed {
		return false
	}
	c.owner.wg.Add(1)
	c.upgrading.Store(true)
	return true
}

// AbortUpgrade releases the count of an upgrade that did not happen. It
// may be called more than once, and after Close.
func (c *Conn[T]) AbortUpgrade() {
	if c.upgrading.CompareAndSwap(true, false) {
		c.owner.wg.Done()
	}
}

// Close closes the connection, forgets it, and releases its upgrade count.
// It takes the lock.
func (c *Conn[T]) Close() error {
	err := c.Conn.Close()
	c.owner.mu.Lock()
	delete(c.owner.conns, c)
	c.owner.mu.Unlock()
	c.AbortUpgrade()
	return err
}

// DiscardLogger is a fasthttp.Logger that drops everything: clients of the
// example backends vanish all the time, and fasthttp would log each one.
type DiscardLogger struct{}

// Printf does nothing.
func (DiscardLogger) Printf(string, ...any) {}
