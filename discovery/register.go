package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Defaults of Registration.
const (
	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 5 * time.Second
)

// Registration describes the proxy itself as a Consul service, so that a
// fleet of wsproxy instances can be found.
type Registration struct {
	// Name is the service name. Required.
	Name string

	// ID is the instance ID, unique on the agent. Default
	// "<Name>-<hostname>-<Port>".
	ID string

	// Address is the address other services reach the proxy at. Default:
	// the agent's node address.
	Address string

	// Port is the proxy's port. Required (1–65535).
	Port int

	Tags []string
	Meta map[string]string

	// CheckHTTP, if set, is a URL the agent GETs every CheckInterval
	// (default DefaultCheckInterval) with a CheckTimeout (default
	// DefaultCheckTimeout); a 2xx answer is passing, 429 warning, anything
	// else critical. Without it the service has no check of its own.
	CheckHTTP     string
	CheckInterval time.Duration
	CheckTimeout  time.Duration

	// DeregisterCriticalAfter, if set, has Consul remove the instance when
	// its check has been critical that long (a proxy that died without
	// deregistering). Zero keeps it.
	DeregisterCriticalAfter time.Duration
}

// Register registers r with the Consul agent and returns the function that
// deregisters it. Registering an ID that exists replaces it (and its
// checks). deregister may be called more than once; calls after the first
// success do nothing. A Registrar keeps registrations in place over time.
func (c *Consul) Register(ctx context.Context, r Registration) (deregister func(context.Context) error, err error) {
	r, err = r.normalize()
	if err != nil {
		return nil, err
	}
	if err := c.register(ctx, r); err != nil {
		return nil, err
	}
	var (
		mu   sync.Mutex
		done bool
	)
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return nil
		}
		if err := c.deregister(ctx, r.ID); err != nil {
			return err
		}
		done = true
		return nil
	}, nil
}

// normalize checks r and fills its default ID.
func (r Registration) normalize() (Registration, error) {
	if r.Name == "" {
		return r, errors.New("discovery: register: no service name")
	}
	if r.Port < 1 || r.Port > 65535 {
		return r, fmt.Errorf("discovery: register %s: port %d is outside 1–65535", r.Name, r.Port)
	}
	if r.ID == "" {
		host, _ := os.Hostname()
		r.ID = strings.Join([]string{r.Name, host, strconv.Itoa(r.Port)}, "-")
	}
	return r, nil
}

// register sends one normalized registration to the agent.
func (c *Consul) register(ctx context.Context, r Registration) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("discovery: register %s: %w", r.ID, errClosed)
	}
	reg := &api.AgentServiceRegistration{
		ID:      r.ID,
		Name:    r.Name,
		Address: r.Address,
		Port:    r.Port,
		Tags:    slices.Clone(r.Tags),
		Meta:    maps.Clone(r.Meta),
	}
	if r.CheckHTTP != "" {
		interval := cmpOr(r.CheckInterval, DefaultCheckInterval)
		timeout := cmpOr(r.CheckTimeout, DefaultCheckTimeout)
		chk := &api.AgentServiceCheck{
			CheckID:  "service:" + r.ID,
			Name:     r.Name + " HTTP check",
			HTTP:     r.CheckHTTP,
			Method:   "GET",
			Interval: interval.String(),
			Timeout:  timeout.String(),
		}
		if r.DeregisterCriticalAfter > 0 {
			chk.DeregisterCriticalServiceAfter = r.DeregisterCriticalAfter.String()
		}
		reg.Check = chk
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := c.client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return fmt.Errorf("discovery: register %s in consul: %w", r.ID, err)
	}
	c.log.Info("registered in consul", "service", r.Name, "id", r.ID, "port", r.Port, "check", r.CheckHTTP)
	return nil
}

func (c *Consul) deregister(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := c.client.Agent().ServiceDeregisterOpts(id, q); err != nil {
		return fmt.Errorf("discovery: deregister %s from consul: %w", id, err)
	}
	c.log.Info("deregistered from consul", "id", id)
	return nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
