package upgrade

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzCheck parses arbitrary bytes as fasthttp's server does and runs
// IsAttempt and Check on every request that parses. Check must never panic,
// and an accepted request must satisfy RFC 6455 §4.1, and the upstream
// request built from it must parse and pass Check in turn.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		handshakeRequest(""),
		handshakeRequest("Origin: https://a.example.com\r\nSec-WebSocket-Protocol: chat\r\n"),
		strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: keep-alive, Upgrade", 1),
		strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: keep-alive,\r\n Upgrade, X-A\r\nX-A: 1", 1),
		strings.Replace(handshakeRequest(""), "GET", "POST", 1),
		strings.Replace(handshakeRequest(""), "HTTP/1.1", "HTTP/1.0", 1),
		strings.Replace(handshakeRequest(""), "Version: 13", "Version: 8", 1),
		strings.Replace(handshakeRequest(""), sampleKey, "short", 1),
		strings.Replace(handshakeRequest(""), "/chat?room=1", "http://h/x?y", 1),
		handshakeRequest("Origin: https://evil.test\r\n"),
		handshakeRequest("Sec-WebSocket-Key: " + sampleKey + "\r\n"),
		handshakeRequest("Cookie: a=\"b, c\"; d\r\nX-Forwarded-For: 1.2.3.4\r\n"),
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	policy, err := CompileOrigins([]string{"https://*.example.com", "http://localhost:*"}, true)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(bytes.NewReader(data))); err != nil {
			return
		}
		attempt := IsAttempt(&h)
		info, rej := Check(&h, policy)
		if rej != nil {
			switch rej.Status {
			case 400, 403, 405, 426:
			default:
				t.Fatalf("status %d", rej.Status)
			}
			return
		}
		if !attempt {
			t.Fatal("accepted a request that IsAttempt calls plain HTTP")
		}
		if !h.IsGet() || len(h.Host()) == 0 || !protoAtLeast11(h.Protocol()) {
			t.Fatalf("accepted %q", data)
		}
		if k, err := base64.StdEncoding.DecodeString(string(info.Key)); err != nil || len(k) != 16 {
			t.Fatalf("accepted key %q", info.Key)
		}
		if !policy.Allow(info.Origin) {
			t.Fatalf("accepted origin %q", info.Origin)
		}
		key := string(info.Key)

		up := AppendRequest(nil, &UpstreamRequest{Header: &h, ClientIP: netip.MustParseAddr("192.0.2.1")})
		var uh fasthttp.RequestHeader
		if err := uh.Read(bufio.NewReader(bytes.NewReader(up))); err != nil {
			t.Fatalf("upstream request does not parse: %v\n%q", err, up)
		}
		uinfo, urej := Check(&uh, nil)
		if urej != nil {
			t.Fatalf("upstream request rejected: %v\n%q", urej, up)
		}
		if string(uinfo.Key) != key {
			t.Fatalf("upstream key %q, client key %q", uinfo.Key, key)
		}
	})
}
