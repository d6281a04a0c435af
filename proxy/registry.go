package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/wsproxy/wsproxy/proxy/relay"
)

// registry is the set of live relayed connections, so that reloads and
// shutdown can reach them. Its lock is its own and is never held while
// anything is sent: closing a session only posts to its loop.
type registry struct {
	mu     sync.Mutex
	m      map[*relay.Session]struct{}
	closed bool
	empty  chan struct{} // closed when the set empties after closeAll
}

func (r *registry) init() { r.m = map[*relay.Session]struct{}{} }

// add registers a session; false once closeAll has run (the caller closes
// the newcomer: the proxy is shutting down).
func (r *registry) add(ss *relay.Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[ss] = struct{}{}
	if r.closed && r.empty == nil {
		r.empty = make(chan struct{})
	}
	return !r.closed
}

func (r *registry) remove(ss *relay.Session) {
	r.mu.Lock()
	delete(r.m, ss)
	if r.closed && len(r.m) == 0 && r.empty != nil {
		close(r.empty)
		r.empty = nil
	}
	r.mu.Unlock()
}

func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// list returns the sessions for which keep is true (all if keep is nil).
func (r *registry) list(keep func(*relay.Session) bool) []*relay.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*relay.Session, 0, len(r.m))
	for ss := range r.m {
		if keep == nil || keep(ss) {
			out = append(out, ss)
		}
	}
	return out
}

// closeAll marks the registry closed (later sessions are refused) and
// returns the live ones.
func (r *registry) closeAll() []*relay.Session {
	r.mu.Lock()
	r.closed = true
	if r.empty == nil && len(r.m) > 0 {
		r.empty = make(chan struct{})
	}
	r.mu.Unlock()
	return r.list(nil)
}

// wait waits until every session has ended after closeAll, or ctx is done;
// it reports whether they all ended.
func (r *registry) wait(ctx context.Context) bool {
	r.mu.Lock()
	ch := r.empty
	n := len(r.m)
	r.mu.Unlock()
	if n == 0 || ch == nil {
		return n == 0
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return r.len() == 0
	}
}

// shutdown refuses new sessions, closes the live ones with 1001 at random
// times within spread (see closeSpread) and waits until they end or ctx
// is done; then it aborts what is left and gives the loops two seconds to
// report them done. It returns ctx's error if it had to abort.
func (r *registry) shutdown(ctx context.Context, spread time.Duration) error {
	closeSpread(r.closeAll(), spread, relay.CloseGoingAway, relay.CloseGoingAway, "proxy shutting down")
	if r.wait(ctx) {
		return nil
	}
	// Abort only posts to the loops, so a session stuck behind a peer
	// that does not read cannot hold this up.
	for _, ss := range r.list(nil) {
		ss.Abort()
	}
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	r.wait(wctx)
	cancel()
	return ctx.Err()
}
