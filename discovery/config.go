package discovery

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// Defaults of ConsulConfig.
const (
	DefaultWaitTime       = 5 * time.Minute
	DefaultMinInterval    = 250 * time.Millisecond
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultRequestTimeout = 10 * time.Second

	// MaxWaitTime is the longest wait Consul accepts for a blocking query.
	MaxWaitTime = 10 * time.Minute
)

// ConsulConfig says how to reach Consul and how to poll it. The zero value
// is usable: every empty field takes the value of Consul's usual environment
// (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
// CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT, …, as read by the
// official client's api.DefaultConfig) or else the default stated on it.
//
// NewConsul copies the config; changing it afterwards has no effect.
type ConsulConfig struct {
	// Address of the Consul agent's HTTP API: "host:port", or a URL with an
	// http, https or unix scheme. Default CONSUL_HTTP_ADDR, else
	// "localhost:8500".
	Address string

	// Scheme is "http" or "https". Default CONSUL_HTTP_SSL, else "http"
	// (or "https" when Address is an https URL).
	Scheme string

	// Token is the ACL token. Default CONSUL_HTTP_TOKEN (or the content of
	// CONSUL_HTTP_TOKEN_FILE), else none.
	Token string

	// Datacenter queried when a Query names none. Default: the agent's.
	Datacenter string

	// TLS for an https Address.
	TLS TLSConfig

	// WaitTime is the longest a blocking query waits for a change before
	// Consul answers anyway. Default DefaultWaitTime (5m); at most
	// MaxWaitTime (10m).
	WaitTime time.Duration

	// MinInterval is the shortest time between the starts of two successive
	// queries of one watch, and so between two updates: a flapping service
	// costs at most one query per MinInterval. Default DefaultMinInterval
	// (250ms). It does not delay the first answer to a change after a quiet
	// period, which arrives at the end of a blocking query that has lasted
	// longer than that.
	MinInterval time.Duration

	// BackoffMin and BackoffMax bound the wait after a failed query: it
	// starts at BackoffMin and doubles with each failure in a row up to
	// BackoffMax, each wait drawn at random from its upper half (jitter).
	// Defaults DefaultBackoffMin (100ms) and DefaultBackoffMax (30s).
	BackoffMin, BackoffMax time.Duration

	// RequestTimeout bounds a request to Consul on top of the wait of a
	// blocking query (WaitTime plus the WaitTime/16 of jitter Consul may
	// add), so that a connection that hangs without failing (a partition,
	// a stopped process) is noticed. Default DefaultRequestTimeout (10s).
	RequestTimeout time.Duration
}

// TLSConfig is the TLS part of ConsulConfig. Empty fields take Consul's
// environment (CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
// CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY).
type TLSConfig struct {
	// CAFile and CAPath name the CA bundle, or a directory of CA
	// certificates, that Consul's certificate must chain to. Default: the
	// system roots.
	CAFile, CAPath string

	// CertFile and KeyFile are the client certificate and key, when Consul
	// verifies clients.
	CertFile, KeyFile string

	// InsecureSkipVerify disables verification of Consul's certificate.
	InsecureSkipVerify bool

	// ServerName is the name checked in Consul's certificate and sent in
	// SNI. Default: the host of Address.
	ServerName string
}

// withDefaults returns c with every zero duration replaced by its default,
// or an error if a value cannot work.
func (c ConsulConfig) withDefaults() (ConsulConfig, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.WaitTime, DefaultWaitTime)
	def(&c.MinInterval, DefaultMinInterval)
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	var errs []error
	if c.WaitTime < time.Millisecond || c.WaitTime > MaxWaitTime {
		errs = append(errs, fmt.Errorf("WaitTime %v is outside [1ms, %v]", c.WaitTime, MaxWaitTime))
	}
	if c.MinInterval < 0 || c.BackoffMin < 0 || c.RequestTimeout < 0 {
		errs = append(errs, errors.New("negative MinInterval, BackoffMin or RequestTimeout"))
	}
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("BackoffMax %v is below BackoffMin %v", c.BackoffMax, c.BackoffMin))
	}
	if c.Scheme != "" && c.Scheme != "http" && c.Scheme != "https" {
		errs = append(errs, fmt.Errorf("Scheme %q is neither http nor https", c.Scheme))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("discovery: consul config: %w", err)
	}
	return c, nil
}

// Check reports what NewConsul would refuse in c, from c and the files
// it names alone: no client, no socket, no goroutine (wsproxy validate).
func (c ConsulConfig) Check() error {
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	ac := c.apiConfig()
	if _, err := api.SetupTLSConfig(&ac.TLSConfig); err != nil {
		return fmt.Errorf("discovery: consul client for %s: %w", ac.Address, err)
	}
	return nil
}

// apiConfig returns the official client's config: its defaults read from
// the environment, overridden by every field of c that is set.
func (c *ConsulConfig) apiConfig() *api.Config {
	ac := api.DefaultConfig()
	if c.Address != "" {
		ac.Address = c.Address
	}
	if c.Scheme != "" {
		ac.Scheme = c.Scheme
	}
	if c.Token != "" {
		ac.Token = c.Token
		ac.TokenFile = "" // an explicit token beats CONSUL_HTTP_TOKEN_FILE
	}
	if c.Datacenter != "" {
		ac.Datacenter = c.Datacenter
	}
	t := &ac.TLSConfig
	if c.TLS.CAFile != "" {
		t.CAFile = c.TLS.CAFile
	}
	if c.TLS.CAPath != "" {
		t.CAPath = c.TLS.CAPath
	}
	if c.TLS.CertFile != "" {
		t.CertFile = c.TLS.CertFile
	}
	if c.TLS.KeyFile != "" {
		t.KeyFile = c.TLS.KeyFile
	}
	if c.TLS.InsecureSkipVerify {
		t.InsecureSkipVerify = true
	}
	if c.TLS.ServerName != "" {
		t.Address = c.TLS.ServerName
	}
	return ac
}
