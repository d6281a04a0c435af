package discovery

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/internal/retry"
)

// watch is the blocking-query loop of one distinct Query and the state its
// subscribers share.
type watch struct {
	c      *Consul
	key    string
	q      Query
	ctx    context.Context // canceled when the last subscriber leaves, or by Close
	cancel context.CancelFunc
	log    *slog.Logger

	mu          sync.Mutex
	subs        map[*subscriber]struct{}
	cur         Update // the last Update delivered
	published   bool   // cur holds one
	hadAnswer   bool   // a query has succeeded (cur.Instances is a known set)
	healthy     bool
	lastErr     error
	lastSuccess time.Time
	index       uint64
	updates     uint64
	queries     uint64
	errors      uint64
}

func (c *Consul) newWatch(key string, q Query) *watch {
	ctx, cancel := context.WithCancel(c.ctx)
	return &watch{
		c:      c,
		key:    key,
		q:      q,
		ctx:    ctx,
		cancel: cancel,
		log:    c.log.With("service", q.Service, "datacenter", q.Datacenter, "tags", q.Tags),
		subs:   make(map[*subscriber]struct{}),
	}
}

// subscribe adds s, handing it the current Update if there is one.
func (w *watch) subscribe(s *subscriber) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subs[s] = struct{}{}
	if w.published {
		s.offer(w.cur)
	}
}

// unsubscribe removes s and returns how many subscribers are left.
func (w *watch) unsubscribe(s *subscriber) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.subs, s)
	return len(w.subs)
}

// publishLocked makes u the current Update and hands it to every
// subscriber. w.mu must be held.
func (w *watch) publishLocked(u Update) {
	w.cur, w.published = u, true
	w.updates++
	for s := range w.subs {
		s.offer(u)
	}
}

func (w *watch) state() WatchState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WatchState{
		Key:         w.key,
		Service:     w.q.Service,
		Datacenter:  w.q.Datacenter,
		Subscribers: len(w.subs),
		Healthy:     w.healthy,
		Stale:       w.cur.Stale,
		LastError:   w.lastErr,
		LastSuccess: w.lastSuccess,
		Index:       w.index,
		Instances:   len(w.cur.Instances),
		Updates:     w.updates,
		Queries:     w.queries,
		Errors:      w.errors,
	}
}

// run is the blocking-query loop. It follows Consul's rules for blocking
// queries (https://developer.hashicorp.com/consul/api-docs/features/blocking):
//
//   - the index of each answer is the wait index of the next query;
//   - an index lower than the previous one resets it to 0, so the next query
//     does not block and the loop starts over;
//   - an index of 0 in an answer is never waited on (it would not block, and
//     the loop would spin): 1 is used instead, which is always safe;
//   - the loop limits its own rate (MinInterval between query starts);
//   - after a failure the index is reset too, so the first answer after
//     Consul comes back is immediate and carries the current set, even if
//     Consul restarted with a lower index.
func (w *watch) run() {
	cfg := &w.c.cfg
	var (
		index     uint64
		failures  int
		lastStart time.Time
	)
	for {
		if !lastStart.IsZero() {
			if !retry.Sleep(w.ctx, cfg.MinInterval-time.Since(lastStart)) {
				return
			}
		}
		lastStart = time.Now()
		entries, meta, err := w.query(index)
		if w.ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			index = 0
			wait := retry.Backoff(failures, cfg.BackoffMin, cfg.BackoffMax)
			w.fail(err, failures, wait)
			if !retry.Sleep(w.ctx, wait) {
				return
			}
			continue
		}
		failures = 0
		index = nextIndex(index, meta.LastIndex)
		w.succeed(instances(entries, &w.q), meta.LastIndex)
	}
}

// nextIndex returns the wait index to use after an answer with index got,
// when the last wait index was prev.
func nextIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0 // went backwards: start over with a non-blocking query
	case got == 0:
		return 1 // never wait on 0
	default:
		return got
	}
}

// query asks Consul for the health of q's service, blocking until the
// service changes after index (if index > 0) or WaitTime passes. The
// request ends early when the watch stops.
func (w *watch) query(index uint64) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	cfg := &w.c.cfg
	w.mu.Lock()
	w.queries++
	w.mu.Unlock()
	timeout := cfg.RequestTimeout
	opts := &api.QueryOptions{
		Datacenter: w.q.Datacenter,
		NodeMeta:   w.q.NodeMeta,
	}
	if index > 0 {
		opts.WaitIndex = index
		opts.WaitTime = cfg.WaitTime
		timeout += cfg.WaitTime + cfg.WaitTime/16
	}
	ctx, cancel := context.WithTimeout(w.ctx, timeout)
	defer cancel()
	// passingOnly=false: the health of each instance is decided here from
	// all its checks, so that warning instances can be admitted.
	return w.c.client.Health().ServiceMultipleTags(w.q.Service, w.q.Tags, false, opts.WithContext(ctx))
}

// fail records a failed query. Subscribers hear of it once per outage, with
// the last known set kept; the log says so once too, then at debug level
// for each retry.
func (w *watch) fail(err error, failures int, retry time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errors++
	w.lastErr = err
	first := !w.published || errKind(w.cur.Err) != errKindQuery
	w.healthy = false
	if !first {
		w.log.Debug("consul query failed again", "err", err, "failures", failures, "retry_in", retry)
		return
	}
	u := Update{
		Instances: w.cur.Instances,
		Err:       err,
		Stale:     w.hadAnswer,
		Index:     w.cur.Index,
		At:        time.Now(),
	}
	w.publishLocked(u)
	if w.hadAnswer {
		w.log.Warn("consul query failed: keeping the last known instances", "err", err, "instances", len(u.Instances), "retry_in", retry)
	} else {
		w.log.Warn("consul query failed: no instances known yet", "err", err, "retry_in", retry)
	}
}

// succeed records an answer and delivers it if it changes what subscribers
// have.
func (w *watch) succeed(ins []Instance, index uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	recovered := w.published && errKind(w.cur.Err) == errKindQuery
	w.healthy, w.lastErr, w.lastSuccess, w.index = true, nil, now, index
	w.hadAnswer = true

	u := Update{Instances: ins, Index: index, At: now}
	if len(ins) == 0 && w.q.KeepStaleOnEmpty && len(w.cur.Instances) > 0 {
		u = Update{Instances: w.cur.Instances, Err: ErrNoInstances, Stale: true, Index: index, At: now}
	}
	if recovered {
		w.log.Info("consul reachable again", "instances", len(u.Instances))
	}
	if w.published && sameInstances(u.Instances, w.cur.Instances) &&
		u.Stale == w.cur.Stale && errKind(u.Err) == errKind(w.cur.Err) {
		return // nothing new for subscribers
	}
	if u.Err != nil && errKind(w.cur.Err) != errKindEmpty {
		w.log.Warn("no instance passes: keeping the last non-empty set", "instances", len(u.Instances))
	}
	w.publishLocked(u)
	w.log.Debug("consul service updated", "instances", len(u.Instances), "index", index)
}

// Kinds of Update.Err: two Updates whose errors are of the same kind (and
// whose instances are the same) are the same state for subscribers.
const (
	errKindNone  = iota
	errKindEmpty // ErrNoInstances: a kept set
	errKindQuery // Consul failed
)

func errKind(err error) int {
	switch {
	case err == nil:
		return errKindNone
	case errors.Is(err, ErrNoInstances):
		return errKindEmpty
	default:
		return errKindQuery
	}
}
