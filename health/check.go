package health

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind is what an active check does to a backend.
type Kind int

const (
	// HTTP sends "GET Path" and expects a status (Check.Status). The zero
	// Kind.
	HTTP Kind = iota
	// WebSocket performs a full WebSocket handshake on Path, then closes
	// with status 1000: a backend that accepts a handshake is alive. Any
	// answer other than a valid 101 is a failure.
	WebSocket
)

// String returns "http" or "websocket".
func (k Kind) String() string {
	switch k {
	case HTTP:
		return "http"
	case WebSocket:
		return "websocket"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind returns the Kind named s, "http" or "websocket" (also "ws"),
// case-insensitively.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case "http":
		return HTTP, nil
	case "websocket", "ws":
		return WebSocket, nil
	}
	return 0, fmt.Errorf("health: unknown check kind %q (want http or websocket)", s)
}

// Defaults for Check.
const (
	DefaultPath     = "/"
	DefaultInterval = 10 * time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultRise     = 2
	DefaultFall     = 3
)

// Check describes an active health check of a static backend. The zero
// value is valid: an HTTP GET / every 10s expecting any 2xx within 2s,
// healthy after 2 successes in a row and unhealthy after 3 failures in a
// row.
//
// Check is a comparable value: Checker runs one probe per distinct
// (backend address, Check with defaults filled in), however many routes
// watch it. A Check must not be changed while a Checker uses it (it is
// copied by Watch, so changing the caller's copy is harmless).
type Check struct {
	// Kind is the probe: HTTP (default) or WebSocket.
	Kind Kind
	// Path is the request target, starting with '/'. Default "/".
	Path string
	// Status is the HTTP status an HTTP check expects; 0 accepts any 2xx.
	// WebSocket checks ignore it: they need a 101.
	Status int
	// Interval is the time between the end of one probe and the start of
	// the next, give or take a random 10% so that the checks of many
	// backends do not align. Default 10s.
	Interval time.Duration
	// Timeout bounds one probe: connecting, sending the request and reading
	// the response head. Default 2s.
	Timeout time.Duration
	// Rise is the number of consecutive successes that make an unhealthy
	// backend healthy again. Default 2.
	Rise int
	// Fall is the number of consecutive failures that make a healthy
	// backend unhealthy. Default 3.
	Fall int
	// Host is the Host header of the probe request. Default: the backend's
	// address (host:port).
	Host string
}

// CheckPath reports what is wrong with a check's Path, if anything: it
// must start with '/' and hold no spaces or control characters. (The
// config checks each setting as it parses it, with these rules.)
func CheckPath(path string) error {
	if path == "" || path[0] != '/' {
		return fmt.Errorf("path %q does not start with '/'", path)
	}
	if !printable(path) {
		return fmt.Errorf("path %q has spaces or control characters", path)
	}
	return nil
}

// CheckStatus reports whether n is a status an HTTP check can expect.
func CheckStatus(n int) error {
	if n < 100 || n > 599 {
		return fmt.Errorf("status %d is not between 100 and 599", n)
	}
	return nil
}

// Validate reports what is wrong with c, if anything. Zero fields are
// valid (they take their defaults); negative durations and counts are not.
func (c Check) Validate() error {
	var errs []error
	if c.Kind != HTTP && c.Kind != WebSocket {
		errs = append(errs, fmt.Errorf("unknown kind %d", int(c.Kind)))
	}
	if c.Path != "" {
		if err := CheckPath(c.Path); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Status != 0 {
		if err := CheckStatus(c.Status); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("negative interval %v", c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("negative timeout %v", c.Timeout))
	}
	if c.Rise < 0 {
		errs = append(errs, fmt.Errorf("negative rise %d", c.Rise))
	}
	if c.Fall < 0 {
		errs = append(errs, fmt.Errorf("negative fall %d", c.Fall))
	}
	if c.Host != "" && !printable(c.Host) {
		errs = append(errs, fmt.Errorf("host %q has spaces or control characters", c.Host))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: invalid check: %w", err)
	}
	return nil
}

// WithDefaults returns c with every zero field that has a default set to
// it (Host stays empty: its default depends on the backend).
func (c Check) WithDefaults() Check {
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Rise == 0 {
		c.Rise = DefaultRise
	}
	if c.Fall == 0 {
		c.Fall = DefaultFall
	}
	return c
}

// statusOK reports whether an HTTP check accepts code.
func (c *Check) statusOK(code int) bool {
	if c.Status == 0 {
		return code >= 200 && code <= 299
	}
	return code == c.Status
}

// printable reports whether s is non-empty visible ASCII: no spaces, no
// control characters, nothing that could split a request line or header.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return s != ""
}
