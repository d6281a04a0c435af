package upgrade

import (
	"errors"
	"testing"
)

func TestOriginPolicy(t *testing.T) {
	t.Parallel()
	cases := []struct {
		patterns   []string
		allowEmpty bool
		allow      []string
		deny       []string
	}{
		{
			patterns: nil, allowEmpty: false,
			allow: []string{"", "https://anything.test", "null", "garbage"},
		},
		{
			patterns: []string{"*"}, allowEmpty: false,
			allow: []string{"https://anything.test", "null"},
			deny:  []string{""},
		},
		{
			patterns: []string{"https://example.com"}, allowEmpty: true,
			allow: []string{"", "https://example.com", "HTTPS://Example.COM", "https://example.com:443"},
			deny: []string{"http://example.com", "https://example.com:8443", "https://a.example.com",
				"https://example.com.evil.test", "https://example.co", "https://example.com/", "https://example.com/path",
				"https://user@example.com", "https://example.com:", "https://example.com:443x", "https://example.com:99999",
				"https://example..com", "example.com", "null", "https//example.com", "https:/example.com"},
		},
		{
			patterns: []string{"http://example.com"},
			allow:    []string{"http://example.com", "http://example.com:80"},
			deny:     []string{"", "http://example.com:8080", "https://example.com"},
		},
		{
			patterns: []string{"https://example.com:8443"},
			allow:    []string{"https://example.com:8443"},
			deny:     []string{"https://example.com", "https://example.com:443", "http://example.com:8443"},
		},
		{
			patterns: []string{"https://*.example.com"},
			allow:    []string{"https://a.example.com", "https://A.B.Example.Com", "https://x-y.example.com:443"},
			deny: []string{"https://example.com", "https://.example.com", "https://a..example.com",
				"https://aexample.com", "http://a.example.com", "https://a.example.com:8443", "https://a.example.com.evil"},
		},
		{
			patterns: []string{"https://*.example.com:*"},
			allow:    []string{"https://a.example.com:8443", "https://a.example.com"},
			deny:     []string{"https://example.com:8443"},
		},
		{
			patterns: []string{"http://localhost:*"},
			allow:    []string{"http://localhost", "http://localhost:3000", "http://LOCALHOST:65535"},
			deny:     []string{"https://localhost:3000", "http://localhost.evil:3000", "http://127.0.0.1:3000"},
		},
		{
			patterns: []string{"http://[::1]:8080", "HTTP://127.0.0.1"},
			allow:    []string{"http://[::1]:8080", "http://127.0.0.1", "http://127.0.0.1:80"},
			deny:     []string{"http://[::1]", "http://[::2]:8080", "http://[::1:8080", "http://127.0.0.2"},
		},
		{
			patterns: []string{"chrome-extension://abcdef"},
			allow:    []string{"chrome-extension://abcdef"},
			deny:     []string{"chrome-extension://abcdef:80", "chrome-extension://other"},
		},
		{
			patterns: []string{"https://a.test", "https://b.test", "*"},
			allow:    []string{"https://c.test"},
			deny:     []string{""},
		},
	}
	for _, tc := range cases {
		p, err := CompileOrigins(tc.patterns, tc.allowEmpty)
		if err != nil {
			t.Fatalf("%q: %v", tc.patterns, err)
		}
		for _, o := range tc.allow {
			if !p.Allow([]byte(o)) {
				t.Errorf("%q (allowEmpty %v) denies %q", tc.patterns, tc.allowEmpty, o)
			}
		}
		for _, o := range tc.deny {
			if p.Allow([]byte(o)) {
				t.Errorf("%q (allowEmpty %v) allows %q", tc.patterns, tc.allowEmpty, o)
			}
		}
	}
	var nilPolicy *OriginPolicy
	if !nilPolicy.Allow(nil) || !nilPolicy.Allow([]byte("https://x.test")) {
		t.Error("a nil policy must allow everything")
	}
}

func TestCompileOriginsErrors(t *testing.T) {
	t.Parallel()
	for _, pat := range []string{
		"", "example.com", "https://", "https://example.com/", "https://example.com/path",
		"https://example.com?q", "https://u@example.com", "https://example.com:0", "https://example.com:65536",
		"https://example.com:+1", "https://example.com:x", "https://*", "https://*example.com",
		"https://a.*.example.com", "https://*.*.example.com", "https://exa mple.com", "https://[::1",
		"https://[1.2.3.4]", "https://[::1]x", "1https://example.com", "https://example..com", "*.example.com",
	} {
		_, err := CompileOrigins([]string{"https://ok.test", pat}, true)
		var pe *OriginPatternError
		if !errors.As(err, &pe) || pe.Pattern != pat {
			t.Errorf("CompileOrigins(%q) = %v, want an *OriginPatternError", pat, err)
		}
	}
}
