//go:build !race

package upgrade

import (
	"net/netip"
	"strings"
	"testing"
)

// The race detector allocates on its own, so these run only without it.

func TestCheckDoesNotAllocate(t *testing.T) {
	policy, err := CompileOrigins([]string{"https://a.test", "https://*.example.com", "http://localhost:*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	raws := map[string]string{
		"accept": handshakeRequest("Origin: https://chat.example.com\r\n" +
			"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n" +
			"Cookie: a=b\r\nUser-Agent: x\r\n"),
		"405": strings.Replace(handshakeRequest(""), "GET", "POST", 1),
		"426": strings.Replace(handshakeRequest(""), "Version: 13", "Version: 8", 1),
		"403": handshakeRequest("Origin: https://evil.test\r\n"),
	}
	for name, raw := range raws {
		h := parseRequest(t, raw)
		if n := testing.AllocsPerRun(100, func() {
			IsAttempt(h)
			Check(h, policy)
		}); n != 0 {
			t.Errorf("%s: %v allocations per Check", name, n)
		}
	}
}

func TestOriginAllowDoesNotAllocate(t *testing.T) {
	policy, err := CompileOrigins([]string{"https://a.test", "https://*.example.com", "http://[::1]:*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	origins := [][]byte{[]byte("https://x.example.com"), []byte("http://[::1]:8080"), []byte("https://evil.test"), nil, []byte("junk")}
	if n := testing.AllocsPerRun(100, func() {
		for _, o := range origins {
			policy.Allow(o)
		}
	}); n != 0 {
		t.Errorf("%v allocations per Allow", n)
	}
}

func TestAppendsDoNotAllocate(t *testing.T) {
	h := parseRequest(t, handshakeRequest("X-Forwarded-For: 10.0.0.1\r\nConnection: X-Hop\r\nX-Hop: 1\r\nCookie: a=b\r\n"))
	req := &UpstreamRequest{Header: h, ClientIP: netip.MustParseAddr("192.0.2.1"), TLS: true}
	abs := &UpstreamRequest{Header: parseRequest(t, strings.Replace(handshakeRequest(""), "/chat?room=1", "http://example.com?room=1", 1))}
	hs := &Handshake{Protocol: "chat", Extensions: "permessage-deflate", Header: []Field{{"Set-Cookie", "a=b"}}}
	buf := make([]byte, 0, 4096)
	key := []byte(sampleKey)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendAcceptKey(buf[:0], key)
		buf = AppendRequest(buf[:0], req)
		buf = AppendRequest(buf[:0], abs)
		buf = AppendSwitchingProtocols(buf[:0], key, hs)
		AllowedRSV("permessage-deflate; server_no_context_takeover, x-other")
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
