package discovery

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/internal/retry"
)

// Defaults of RegistrarOptions.
const (
	DefaultVerifyInterval      = 15 * time.Second
	DefaultRegisterBackoffMin  = time.Second
	DefaultRegisterBackoffMax  = 30 * time.Second
	defaultRegistrarCloseGrace = 5 * time.Second
)

// RegistrarOptions tune a Registrar. Zero fields take their defaults.
type RegistrarOptions struct {
	// VerifyInterval is how often the agent is asked whether every
	// registration is still there; a missing one (an agent that restarted
	// without its state, an operator's deregister) is registered again.
	// Default DefaultVerifyInterval (15s).
	VerifyInterval time.Duration
	// BackoffMin and BackoffMax bound the jittered wait after a failed
	// round (Consul unreachable, an ACL refusal): doubling from BackoffMin
	// up to BackoffMax. Defaults 1s and 30s.
	BackoffMin, BackoffMax time.Duration
}

// Registrar keeps a set of registrations in the Consul agent while it
// runs: it registers each with retries (jittered backoff) until the agent
// takes it, verifies every VerifyInterval that the agent still has it and
// registers it again if not, applies a new set at once (Set: changed ones
// registered again, removed ones deregistered), and deregisters them all
// on Close. Consul being unreachable only delays all of that. Its methods
// are safe for concurrent use.
type Registrar struct {
	c    *Consul
	opts RegistrarOptions

	kick   chan struct{} // cap 1: the wanted set changed
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	closeOnce sync.Once
	closed    chan struct{} // closed when the first Close has finished
	closeErr  error         // its result; read after closed

	mu      sync.Mutex
	want    []Registration          // normalized, by Set
	applied map[string]Registration // what the agent was last given, by ID
	lastErr error
}

// NewRegistrar starts a Registrar with nothing to register; Set gives it
// its registrations.
func (c *Consul) NewRegistrar(o RegistrarOptions) *Registrar {
	if o.VerifyInterval <= 0 {
		o.VerifyInterval = DefaultVerifyInterval
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultRegisterBackoffMin
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(DefaultRegisterBackoffMax, o.BackoffMin)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registrar{
		c: c, opts: o,
		kick: make(chan struct{}, 1),
		ctx:  ctx, cancel: cancel,
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
		applied: make(map[string]Registration),
	}
	go r.run()
	return r
}

// Set replaces the registrations to keep; the agent is updated in the
// background, at once. Invalid registrations (no name, a bad port) are
// left out and reported by the returned error; the others are kept.
func (r *Registrar) Set(regs []Registration) error {
	var want []Registration
	var errs []error
	for _, reg := range regs {
		n, err := reg.normalize()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.Tags, n.Meta = slices.Clone(n.Tags), cloneMap(n.Meta)
		want = append(want, n)
	}
	r.mu.Lock()
	r.want = want
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return errors.Join(errs...)
}

// Registered returns the IDs the agent was given and has not lost as far as
// the Registrar knows, sorted.
func (r *Registrar) Registered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.applied))
	for id := range r.applied {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Err returns the error of the last round, nil if it succeeded.
func (r *Registrar) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Close stops the Registrar and deregisters what it registered, within ctx
// (or 5 seconds if ctx has no deadline). A Close while another runs waits
// for it (within ctx) and returns its result, so a caller can start the
// deregistration early and wait for it later.
func (r *Registrar) Close(ctx context.Context) error {
	first := false
	r.closeOnce.Do(func() { first = true })
	if !first {
		select {
		case <-r.closed:
			return r.closeErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(r.closed)
	r.closeErr = r.close(ctx)
	return r.closeErr
}

func (r *Registrar) close(ctx context.Context) error {
	r.cancel()
	<-r.done
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRegistrarCloseGrace)
		defer cancel()
	}
	r.mu.Lock()
	applied := r.applied
	r.applied = make(map[string]Registration)
	r.mu.Unlock()
	var errs []error
	for _, id := range sortedKeys(applied) {
		if err := r.c.deregister(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]Registration) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// run syncs at each Set, every VerifyInterval, and after a failure with
// backoff, until Close.
func (r *Registrar) run() {
	defer close(r.done)
	fails := 0
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
		}
		err := r.sync(r.ctx)
		if r.ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
		wait := r.opts.VerifyInterval
		if err != nil {
			fails++
			wait = retry.Backoff(fails, r.opts.BackoffMin, r.opts.BackoffMax)
			r.c.log.Warn("consul self-registration failed; retrying", "in", wait.Round(time.Millisecond), "attempt", fails, "err", err)
		} else {
			fails = 0
		}
		t.Reset(wait)
	}
}

// sync makes the agent hold exactly the wanted registrations among those
// the Registrar manages: registers the missing and changed ones,
// deregisters the ones no longer wanted.
func (r *Registrar) sync(ctx context.Context) error {
	r.mu.Lock()
	want := r.want
	applied := make(map[string]Registration, len(r.applied))
	for id, reg := range r.applied {
		applied[id] = reg
	}
	r.mu.Unlock()

	// One look at the agent's services says which are still there.
	lctx, cancel := context.WithTimeout(ctx, r.c.cfg.RequestTimeout)
	services, err := r.c.client.Agent().ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(lctx))
	cancel()
	if err != nil {
		return err
	}
	var errs []error
	wanted := make(map[string]bool, len(want))
	for _, reg := range want {
		wanted[reg.ID] = true
		prev, had := applied[reg.ID]
		_, present := services[reg.ID]
		if had && present && reflect.DeepEqual(prev, reg) {
			continue
		}
		if had && !present {
			r.c.log.Warn("consul lost this proxy's registration (agent restarted?); registering again", "id", reg.ID)
		}
		if err := r.c.register(ctx, reg); err != nil {
			errs = append(errs, err)
			delete(applied, reg.ID)
			continue
		}
		applied[reg.ID] = reg
	}
	for id := range applied {
		if wanted[id] {
			continue
		}
		if _, present := services[id]; !present {
			delete(applied, id) // gone already
			continue
		}
		if err := r.c.deregister(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(applied, id)
	}
	r.mu.Lock()
	r.applied = applied
	r.mu.Unlock()
	return errors.Join(errs...)
}
