package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/balancer"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// fast is a check that decides within a few tens of milliseconds.
func fast(kind Kind, path string) Check {
	return Check{Kind: kind, Path: path, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 3}
}

// newChecker returns a Checker closed when the test ends.
func newChecker(t *testing.T) *Checker {
	t.Helper()
	c := NewChecker(nil)
	t.Cleanup(c.Close)
	return c
}

// eventually polls cond until it holds or testTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// httpBackend is a loopback HTTP server whose answer the test sets.
type httpBackend struct {
	srv      *httptest.Server
	status   atomic.Int32
	requests atomic.Int64
	path     atomic.Pointer[string]
	host     atomic.Pointer[string]
	// hang, while set, makes the handler wait for release (or the
	// request's end) before answering.
	hang    atomic.Bool
	release chan struct{}
}

func newHTTPBackend(t *testing.T) *httpBackend {
	t.Helper()
	hb := &httpBackend{release: make(chan struct{})}
	hb.status.Store(http.StatusOK)
	hb.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hb.requests.Add(1)
		p, h := r.URL.Path, r.Host
		hb.path.Store(&p)
		hb.host.Store(&h)
		if hb.hang.Load() {
			select {
			case <-hb.release:
			case <-r.Context().Done():
			case <-time.After(testTimeout):
			}
		}
		w.WriteHeader(int(hb.status.Load()))
	}))
	t.Cleanup(func() {
		close(hb.release)
		hb.srv.Close()
	})
	return hb
}

func (hb *httpBackend) addr() string { return hb.srv.Listener.Addr().String() }

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// backendState returns c's state of addr, or the zero BackendState.
func backendState(c *Checker, addr string) BackendState {
	for _, s := range c.State() {
		if s.Addr == addr {
			return s
		}
	}
	return BackendState{}
}

// checkState returns the state of addr's only check.
func checkState(t *testing.T, c *Checker, addr string) CheckState {
	t.Helper()
	s := backendState(c, addr)
	if len(s.Checks) != 1 {
		t.Fatalf("%s has %d checks, want 1", addr, len(s.Checks))
	}
	return s.Checks[0]
}

// backends returns n Backends with distinct fake addresses.
func backends(n int) []*balancer.Backend {
	var reg balancer.Registry
	bs := make([]*balancer.Backend, n)
	for i := range bs {
		bs[i] = reg.Backend(fmt.Sprintf("192.0.2.1:%d", 1000+i), 1)
	}
	return bs
}

// fakeProber adds an active check of b whose results the test records by
// hand (record), with no goroutine behind it.
func fakeProber(c *Checker, b *balancer.Backend, chk Check) *prober {
	chk = chk.WithDefaults()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stateLocked(b, time.Now())
	p := &prober{key: probeKey{addr: b.Addr, check: chk}, st: st, refs: 1, done: make(chan struct{})}
	c.probers[p.key] = p
	st.probers = append(st.probers, p)
	return p
}

var errProbe = errors.New("probe failed")

// fail and pass record one probe result on p.
func fail(c *Checker, p *prober) { c.record(p, errProbe, time.Now(), 0) }
func pass(c *Checker, p *prober) { c.record(p, nil, time.Now(), 0) }

// ctxTimeout returns a context ended after testTimeout.
func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}
