package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Update is what a watch tells its subscribers: the instances to route to
// now, and whether Consul could be asked.
type Update struct {
	// Instances are the instances that pass the Query, sorted by Addr, one
	// per Addr. Read-only: every subscriber gets the same slice. Empty
	// means no instance passes (or, with Err set and Stale false, that
	// Consul was never reached); the route then has no backend.
	Instances []Instance

	// Err is why Instances are not a fresh answer: a failed query (Consul
	// unreachable, an ACL or server error), or ErrNoInstances when
	// Query.KeepStaleOnEmpty kept the last non-empty set. Nil on a fresh
	// answer.
	Err error

	// Stale reports that Instances are an earlier answer kept because of
	// Err: the last known good set. It is false on a fresh answer, and on
	// an error before any answer (Instances is then empty).
	Stale bool

	// Index is Consul's X-Consul-Index of the answer Instances come from.
	Index uint64

	// At is when the watch produced this Update.
	At time.Time
}

// WatchState describes one watch (one distinct Query) for the admin API and
// metrics.
type WatchState struct {
	Key         string // Query.Key
	Service     string
	Datacenter  string // as asked; empty for the default
	Subscribers int

	// Healthy reports that the last query succeeded. It is false before
	// the first answer and while Consul fails.
	Healthy bool
	// Stale reports that subscribers hold a kept set (see Update.Stale).
	Stale bool
	// LastError is the error of the last failed query while !Healthy, nil
	// otherwise.
	LastError error
	// LastSuccess is when a query last succeeded (zero if never).
	LastSuccess time.Time
	// Index is the X-Consul-Index of the last answer.
	Index uint64

	Instances int    // in the current Update
	Updates   uint64 // Updates delivered since the watch started
	Queries   uint64 // queries sent
	Errors    uint64 // queries failed
}

// Consul watches services in Consul and registers services there.
// Create it with NewConsul; its methods are safe for concurrent use.
type Consul struct {
	client *api.Client
	http   *http.Client
	cfg    ConsulConfig
	log    *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of c

	mu      sync.Mutex
	watches map[string]*watch
	closed  bool
}

// NewConsul returns a client for the Consul agent that cfg describes, with
// its empty fields taken from Consul's environment or their defaults (see
// ConsulConfig). It does not contact Consul: an unreachable Consul shows in
// the Updates of Watch. log receives the watches' state changes; nil means
// slog.Default().
func NewConsul(cfg ConsulConfig, log *slog.Logger) (*Consul, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	ac := cfg.apiConfig()
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("discovery: consul client for %s: %w", ac.Address, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Consul{
		client:  client,
		http:    ac.HttpClient, // NewClient filled it in
		cfg:     cfg,
		log:     log.With("component", "consul"),
		ctx:     ctx,
		cancel:  cancel,
		watches: make(map[string]*watch),
	}, nil
}

// Watch calls fn with q's instance set now (if the watch already has an
// answer) and each time it changes, until the returned stop is called.
//
// Watches of Queries with the same Key share one blocking-query loop: the
// first starts it, the last stop ends it. Each subscriber has a goroutine of
// its own that calls fn, so a slow fn delays nobody else; calls to one fn
// never overlap and come in order, and when fn is slower than the changes,
// intermediate Updates are skipped: the next call has the latest. fn must
// not modify the Update's Instances.
//
// stop may be called more than once, and from within fn. Once it has
// returned, no new call to fn starts (one already running is not waited
// for). If q is invalid (see Query.Validate), fn gets one Update with the
// error and nothing else; if c is closed, fn is never called.
func (c *Consul) Watch(q Query, fn func(Update)) (stop func()) {
	if fn == nil {
		panic("discovery: Watch with a nil func")
	}
	s := &subscriber{fn: fn, signal: make(chan struct{}, 1), quit: make(chan struct{})}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return func() {}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		s.run(c.ctx)
	}()

	if err := q.Validate(); err != nil {
		s.offer(Update{Err: err, At: time.Now()})
		return s.stop
	}
	q = normalize(q)
	key := q.Key()
	w := c.watches[key]
	if w == nil {
		w = c.newWatch(key, q)
		c.watches[key] = w
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			w.run()
		}()
	}
	w.subscribe(s)

	var once sync.Once
	return func() {
		once.Do(func() {
			s.stop()
			c.mu.Lock()
			defer c.mu.Unlock()
			if w.unsubscribe(s) == 0 && c.watches[key] == w {
				delete(c.watches, key)
				w.cancel()
			}
		})
	}
}

// API returns the official client c talks to Consul with, for the other
// users of the same agent settings (such as the certificate storage in
// Consul KV). It stays usable after Close, which only ends c's own work.
func (c *Consul) API() *api.Client { return c.client }

// normalize returns q with its tags sorted and without duplicates, and its
// maps copied, so that the watch owns what it reads.
func normalize(q Query) Query {
	q.Tags = slices.Clone(q.Tags)
	slices.Sort(q.Tags)
	q.Tags = slices.Compact(q.Tags)
	q.ServiceMeta = cloneMap(q.ServiceMeta)
	q.NodeMeta = cloneMap(q.NodeMeta)
	return q
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// State returns the state of every running watch, ordered by Key.
func (c *Consul) State() []WatchState {
	c.mu.Lock()
	ws := make([]*watch, 0, len(c.watches))
	for _, w := range c.watches {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	out := make([]WatchState, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.state())
	}
	slices.SortFunc(out, func(a, b WatchState) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// Closed reports whether Close has been called.
func (c *Consul) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close stops every watch and waits for all of c's goroutines to end,
// including calls to subscribers' fn already running (so fn must not wait
// for Close). Watch after Close does nothing. Close is idempotent.
func (c *Consul) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for _, w := range c.watches {
			w.cancel()
		}
		clear(c.watches)
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.http.CloseIdleConnections()
	return nil
}

// subscriber is one Watch call: its fn, and a mailbox of size one holding
// the latest Update not yet delivered.
type subscriber struct {
	fn     func(Update)
	signal chan struct{} // cap 1: an Update is pending
	quit   chan struct{} // closed by stop

	mu      sync.Mutex
	pending Update
	has     bool
	stopped bool
}

// offer makes u the next Update to deliver, replacing one not yet
// delivered. It never blocks.
func (s *subscriber) offer(u Update) {
	s.mu.Lock()
	s.pending, s.has = u, true
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *subscriber) stop() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.quit)
	}
	s.mu.Unlock()
}

// run delivers Updates to fn until stop or ctx is done.
func (s *subscriber) run(ctx context.Context) {
	for {
		select {
		case <-s.quit:
			return
		case <-ctx.Done():
			return
		case <-s.signal:
		}
		s.mu.Lock()
		u, ok := s.pending, s.has && !s.stopped
		s.pending, s.has = Update{}, false
		s.mu.Unlock()
		if ok {
			s.fn(u)
		}
	}
}

var errClosed = errors.New("discovery: consul client closed")
