package tls

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// decide returns an on-demand site's certmagic DecisionFunc: the name must be
// one the site serves, and the Ask URL must approve it. certmagic calls it
// when a handshake's name has no certificate in memory, before it loads one
// from storage or obtains one.
func (m *Manager) decide(s *site) func(ctx context.Context, name string) error {
	return func(ctx context.Context, name string) error {
		name = normalizeName(name)
		if m.lookup(name) != s {
			return fmt.Errorf("%s is not a name of site %s", name, s.label)
		}
		if err := m.ask(ctx, s.policy.Ask, name); err != nil {
			return err
		}
		m.mu.Lock()
		m.approved[name] = struct{}{}
		m.mu.Unlock()
		return nil
	}
}

// ask GETs askURL with ?domain=name added; 200 approves.
func (m *Manager) ask(ctx context.Context, askURL, name string) error {
	u, err := url.Parse(askURL)
	if err != nil {
		return fmt.Errorf("ask URL: %w", err)
	}
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("ask: %w", err)
	}
	resp, err := m.askClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask %s about %s: %w", u.Redacted(), name, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ask %s refused %s: status %d", u.Redacted(), name, resp.StatusCode)
	}
	return nil
}

// onEvent enforces an on-demand site's rate limit: certmagic emits
// cert_obtaining just before it asks the CA for a new certificate (after the
// storage check and under the issuance lock), so loads and renewals are not
// counted. ErrNoRetry makes the handshake fail now instead of retrying.
func (s *site) onEvent(_ context.Context, event string, data map[string]any) error {
	if event != "cert_obtaining" || s.limiter.allow(time.Now()) {
		return nil
	}
	return certmagic.ErrNoRetry{Err: fmt.Errorf("on-demand rate limit of %d certificates per %v reached for site %s; not obtaining %v",
		s.limiter.rl.Burst, s.limiter.rl.Interval, s.label, data["identifier"])}
}

// limiter allows rl.Burst events in any rl.Interval (a sliding window).
type limiter struct {
	rl    RateLimit
	mu    sync.Mutex
	times []time.Time // of allowed events, oldest first
}

func (l *limiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := now.Add(-l.rl.Interval)
	i := 0
	for i < len(l.times) && !l.times[i].After(cut) {
		i++
	}
	l.times = append(l.times[:0], l.times[i:]...)
	if len(l.times) >= l.rl.Burst {
		return false
	}
	l.times = append(l.times, now)
	return true
}
