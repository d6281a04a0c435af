package consulstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/internal/retry"
)

// lockWait is how long one blocking query waits for a held lock to change
// before Lock asks again.
const lockWait = 15 * time.Second

// errLost says that a lock's session ended while it was held: another
// instance may hold the lock now.
var errLost = errors.New("lock lost: its Consul session expired or was destroyed")

// lease is one Consul session and the goroutine that renews it.
type lease struct {
	id   string
	stop chan struct{} // closed to end renewals
	done chan struct{} // closed when the renewer has returned
	lost chan struct{} // closed by the renewer when the session is gone
}

// heldLock is a lock this Store holds.
type heldLock struct {
	key   string
	lease *lease
}

// Lock acquires the lock name, waiting as long as another holds it, until
// ctx is done. It creates a session with the configured TTL and lock-delay
// (behaviour delete), acquires PREFIX/locks/NAME with it, and renews the
// session every TTL/2 until Unlock. The lock is freed by Unlock, and when
// the holder dies: its session is no longer renewed, Consul invalidates it
// within 2×TTL and deletes the key, and the lock may be taken again after
// the lock-delay.
//
// Each Lock has a session of its own, so two goroutines of one process
// exclude each other as two processes do.
func (s *Store) Lock(ctx context.Context, name string) error {
	_, err := s.acquire(ctx, name, false)
	return err
}

// TryLock acquires the lock name if nobody holds it, and reports whether it
// did, without waiting. A lock in its lock-delay counts as held.
func (s *Store) TryLock(ctx context.Context, name string) (bool, error) {
	return s.acquire(ctx, name, true)
}

// Unlock releases a lock this Store acquired: it deletes the lock key if
// the lock's session still holds it (so no lock-delay applies) and destroys
// the session. An error says the lock had been lost meanwhile, or that
// Consul could not be told (the session then ends by its TTL).
func (s *Store) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("consulstore: unlock %s: not locked by this store", name)
	}
	if err := s.release(ctx, h); err != nil {
		return fmt.Errorf("consulstore: unlock %s: %w", name, err)
	}
	return nil
}

// RenewLockLease renews the session of a held lock now and checks that the
// lock is still its own. The session goes on being renewed every TTL/2
// until Unlock, so a lease lasts as long as its holder lives whatever
// leaseDuration asks; the call is how a long operation learns, before its
// next step, that it lost the lock (an error wrapping errLost).
func (s *Store) RenewLockLease(ctx context.Context, name string, _ time.Duration) error {
	s.mu.Lock()
	h := s.held[name]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("consulstore: renew lock %s: not locked by this store", name)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	entry, _, err := s.session.Renew(h.lease.id, (&api.WriteOptions{}).WithContext(rctx))
	if err != nil {
		return fmt.Errorf("consulstore: renew lock %s: %w", name, err)
	}
	if entry == nil {
		return fmt.Errorf("consulstore: renew lock %s: %w", name, errLost)
	}
	p, _, err := s.kv.Get(h.key, s.readOpts(rctx))
	if err != nil {
		return fmt.Errorf("consulstore: renew lock %s: %w", name, err)
	}
	if p == nil || p.Session != h.lease.id {
		return fmt.Errorf("consulstore: renew lock %s: %w", name, errLost)
	}
	return nil
}

// Close releases every lock the Store holds and ends Lock calls still
// waiting. The Store must not be used afterwards.
func (s *Store) Close() error {
	s.closeFn()
	s.mu.Lock()
	s.closed = true
	held := s.held
	s.held = make(map[string]*heldLock)
	s.mu.Unlock()
	var errs []error
	for name, h := range held {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		if err := s.release(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("consulstore: release %s: %w", name, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// acquire is Lock (try false) and TryLock (try true).
func (s *Store) acquire(ctx context.Context, name string, try bool) (ok bool, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("consulstore: lock %s: %w", name, err)
		}
	}()
	if s.isClosed() {
		return false, errors.New("store closed")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.closing, cancel)()
	key := s.lockKey(name)
	l, err := s.startLease(ctx, name)
	if err != nil {
		return false, err
	}
	var (
		index    uint64
		sawFree  bool // the last look found no holder
		freeWait int  // acquisitions refused in a row while no one held it
		errs     int  // failed requests in a row
	)
	for {
		select {
		case <-l.lost:
			// The session ended while we waited (Consul unreachable for
			// longer than its TTL): wait on with a new one.
			s.endLease(l)
			if l, err = s.startLease(ctx, name); err != nil {
				return false, err
			}
		default:
		}
		got, err := s.tryAcquire(ctx, key, l.id)
		if err == nil && got {
			s.mu.Lock()
			closed := s.closed
			if !closed {
				s.held[name] = &heldLock{key: key, lease: l}
			}
			s.mu.Unlock()
			if closed {
				_ = s.release(context.WithoutCancel(ctx), &heldLock{key: key, lease: l})
				return false, errors.New("store closed")
			}
			return true, nil
		}
		if try || ctx.Err() != nil || s.isClosed() {
			s.endLease(l)
			if err == nil {
				err = ctx.Err()
			}
			return false, err
		}
		if err != nil {
			errs++
			if !retry.Sleep(ctx, retry.Backoff(errs, 100*time.Millisecond, 5*time.Second)) {
				s.endLease(l)
				return false, ctx.Err()
			}
			continue
		}
		if sawFree {
			// Free, yet refused: the lock-delay of a session that ended.
			freeWait++
			if !retry.Sleep(ctx, retry.Backoff(freeWait, 50*time.Millisecond, time.Second)) {
				s.endLease(l)
				return false, ctx.Err()
			}
		}
		p, last, err := s.waitChange(ctx, key, index)
		if err != nil {
			if ctx.Err() != nil {
				s.endLease(l)
				return false, ctx.Err()
			}
			errs++
			index = 0
			if !retry.Sleep(ctx, retry.Backoff(errs, 100*time.Millisecond, 5*time.Second)) {
				s.endLease(l)
				return false, ctx.Err()
			}
			continue
		}
		errs = 0
		sawFree = p == nil || p.Session == ""
		if sawFree || last < index {
			index = 0
		} else {
			index = last
			freeWait = 0
		}
	}
}

// tryAcquire makes one attempt to take key with session id.
func (s *Store) tryAcquire(ctx context.Context, key, id string) (bool, error) {
	ctx, cancel := s.request(ctx)
	defer cancel()
	ok, _, err := s.kv.Acquire(&api.KVPair{Key: key, Value: holderInfo(), Session: id}, (&api.WriteOptions{}).WithContext(ctx))
	return ok, err
}

// waitChange returns the lock key once its index passes index (at once for
// index 0), or after lockWait.
func (s *Store) waitChange(ctx context.Context, key string, index uint64) (*api.KVPair, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, lockWait+s.cfg.RequestTimeout)
	defer cancel()
	p, meta, err := s.kv.Get(key, (&api.QueryOptions{WaitIndex: index, WaitTime: lockWait}).WithContext(ctx))
	if err != nil {
		return nil, 0, err
	}
	return p, meta.LastIndex, nil
}

// startLease creates a session for lock name and starts renewing it.
func (s *Store) startLease(ctx context.Context, name string) (*lease, error) {
	rctx, cancel := s.request(ctx)
	defer cancel()
	delay := s.cfg.LockDelay
	if delay < 0 {
		delay = 0 // omitted: Consul's default
	}
	id, _, err := s.session.Create(&api.SessionEntry{
		Name:      "wsproxy lock " + name,
		TTL:       s.cfg.SessionTTL.String(),
		LockDelay: delay,
		Behavior:  api.SessionBehaviorDelete,
	}, (&api.WriteOptions{}).WithContext(rctx))
	if err != nil {
		return nil, fmt.Errorf("creating a session: %w", err)
	}
	l := &lease{id: id, stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	go s.renew(l, name)
	return l, nil
}

// renew keeps l's session alive every TTL/2 (every second after a failure)
// until l.stop, and closes l.lost when Consul says the session is gone or
// no renewal has succeeded for a TTL (Consul may then have ended it).
func (s *Store) renew(l *lease, name string) {
	defer close(l.done)
	ttl := s.cfg.SessionTTL
	last := time.Now()
	t := time.NewTimer(ttl / 2)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(s.cfg.RequestTimeout, ttl/2))
		entry, _, err := s.session.Renew(l.id, (&api.WriteOptions{}).WithContext(ctx))
		cancel()
		switch {
		case err == nil && entry == nil:
			s.log.Warn("lock session ended", "lock", name, "session", l.id)
			close(l.lost)
			return
		case err == nil:
			last = time.Now()
			t.Reset(ttl / 2)
		case time.Since(last) >= ttl:
			s.log.Warn("lock session not renewed for its TTL; treating the lock as lost", "lock", name, "session", l.id, "err", err)
			close(l.lost)
			return
		default:
			t.Reset(time.Second)
		}
	}
}

// endLease stops renewing l and destroys its session (best effort: a
// session not destroyed ends by its TTL).
func (s *Store) endLease(l *lease) {
	close(l.stop)
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	_, _ = s.session.Destroy(l.id, (&api.WriteOptions{}).WithContext(ctx))
}

// release deletes a held lock's key if its session still holds it, then
// ends the session. Deleting first matters: destroying a session that holds
// a key would apply the lock-delay to the next holder.
func (s *Store) release(ctx context.Context, h *heldLock) error {
	rctx, cancel := s.request(context.WithoutCancel(ctx))
	defer cancel()
	ops := api.KVTxnOps{
		{Verb: api.KVCheckSession, Key: h.key, Session: h.lease.id},
		{Verb: api.KVDelete, Key: h.key},
	}
	ok, _, _, err := s.kv.Txn(ops, (&api.QueryOptions{}).WithContext(rctx))
	s.endLease(h.lease)
	switch {
	case err != nil:
		return err
	case !ok:
		return errLost
	}
	return nil
}

// holderInfo is the value of a lock key: who holds it, for people reading
// Consul.
func holderInfo() []byte {
	host, _ := os.Hostname()
	b, _ := json.Marshal(struct {
		Host  string    `json:"host"`
		PID   int       `json:"pid"`
		Since time.Time `json:"since"`
	}{host, os.Getpid(), time.Now().UTC()})
	return b
}
