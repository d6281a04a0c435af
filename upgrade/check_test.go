package upgrade

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestCheckAccepts(t *testing.T) {
	t.Parallel()
	policy, err := CompileOrigins([]string{"https://example.com", "https://*.example.org"}, true)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                          string
		raw                           string
		origin, protocols, extensions string
	}{
		{name: "minimal", raw: handshakeRequest("")},
		{name: "mixed case names and values", raw: "GET / HTTP/1.1\r\nhost: example.com\r\nUPGRADE: WebSocket\r\n" +
			"connection: UPGRADE\r\nsec-websocket-key: " + sampleKey + "\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n"},
		{name: "keep-alive, Upgrade", raw: strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: keep-alive, Upgrade", 1)},
		{name: "connection list without spaces", raw: strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: keep-alive,upgrade", 1)},
		{name: "connection over two fields", raw: strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: keep-alive\r\nConnection: Upgrade", 1)},
		{name: "upgrade list", raw: strings.Replace(handshakeRequest(""), "Upgrade: websocket", "Upgrade: h2c, WebSocket", 1)},
		{name: "folded connection", raw: strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: keep-alive,\r\n Upgrade", 1)},
		{name: "HTTP/1.2", raw: strings.Replace(handshakeRequest(""), "HTTP/1.1", "HTTP/1.2", 1)},
		{name: "host with port", raw: strings.Replace(handshakeRequest(""), "Host: example.com", "Host: example.com:8080", 1)},
		{name: "IPv6 host", raw: strings.Replace(handshakeRequest(""), "Host: example.com", "Host: [::1]:443", 1)},
		{name: "IPv4 host", raw: strings.Replace(handshakeRequest(""), "Host: example.com", "Host: 127.0.0.1", 1)},
		{name: "Content-Length 0", raw: handshakeRequest("Content-Length: 0\r\n")},
		{name: "32 Connection options", raw: strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: Upgrade"+strings.Repeat(", x", MaxConnectionOptions-1), 1)},
		{name: "absolute-form target", raw: strings.Replace(handshakeRequest(""), "/chat?room=1", "http://example.com/chat", 1)},
		{name: "allowed origin", raw: handshakeRequest("Origin: https://example.com\r\n"), origin: "https://example.com"},
		{name: "allowed origin default port", raw: handshakeRequest("Origin: HTTPS://EXAMPLE.COM:443\r\n"), origin: "HTTPS://EXAMPLE.COM:443"},
		{name: "wildcard origin", raw: handshakeRequest("Origin: https://a.b.example.org\r\n"), origin: "https://a.b.example.org"},
		{
			name: "protocols and extensions",
			raw: handshakeRequest("Sec-WebSocket-Protocol: chat, superchat\r\n" +
				"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
				"Sec-WebSocket-Protocol: other\r\n"),
			protocols:  "chat, superchat",
			extensions: "permessage-deflate; client_max_window_bits",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := parseRequest(t, tc.raw)
			if !IsAttempt(h) {
				t.Error("IsAttempt = false")
			}
			info, rej := Check(h, policy)
			if rej != nil {
				t.Fatalf("rejected: %v", rej)
			}
			if string(info.Key) != sampleKey {
				t.Errorf("Key = %q", info.Key)
			}
			if string(info.Origin) != tc.origin || string(info.Protocols) != tc.protocols || string(info.Extensions) != tc.extensions {
				t.Errorf("Info = {Origin %q, Protocols %q, Extensions %q}", info.Origin, info.Protocols, info.Extensions)
			}
		})
	}
}

func TestCheckRejects(t *testing.T) {
	t.Parallel()
	policy, err := CompileOrigins([]string{"https://example.com"}, false)
	if err != nil {
		t.Fatal(err)
	}
	base := handshakeRequest("Origin: https://example.com\r\n")
	swap := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("%q not in the base request", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	cases := []struct {
		name   string
		raw    string
		status int
	}{
		{"POST", swap("GET ", "POST "), 405},
		{"HEAD", swap("GET ", "HEAD "), 405},
		{"HTTP/1.0", swap("HTTP/1.1", "HTTP/1.0"), 400},
		{"no Upgrade", swap("Upgrade: websocket\r\n", ""), 400},
		{"Upgrade h2c", swap("Upgrade: websocket", "Upgrade: h2c"), 400},
		{"Upgrade websocketx", swap("Upgrade: websocket", "Upgrade: websocketx"), 400},
		{"empty Upgrade", swap("Upgrade: websocket", "Upgrade:"), 400},
		{"no Connection", swap("Connection: Upgrade\r\n", ""), 400},
		{"Connection close", swap("Connection: Upgrade", "Connection: close"), 400},
		{"Connection keep-alive", swap("Connection: Upgrade", "Connection: keep-alive"), 400},
		{"Connection upgrades", swap("Connection: Upgrade", "Connection: upgrades"), 400},
		{"33 Connection options", swap("Connection: Upgrade", "Connection: Upgrade"+strings.Repeat(", x", MaxConnectionOptions)), 400},
		{"Connection options over two fields", swap("Connection: Upgrade", "Connection: Upgrade"+strings.Repeat(",x", 20)+"\r\nConnection: y"+strings.Repeat(",y", 20)), 400},
		{"host with a space", swap("Host: example.com", "Host: exa mple.com"), 400},
		{"host with userinfo", swap("Host: example.com", "Host: user@example.com"), 400},
		{"host with a path", swap("Host: example.com", "Host: example.com/x"), 400},
		{"host with two colons", swap("Host: example.com", "Host: example.com:80:81"), 400},
		{"host with a bad port", swap("Host: example.com", "Host: example.com:8o"), 400},
		{"host with a long port", swap("Host: example.com", "Host: example.com:123456"), 400},
		{"unclosed IPv6 host", swap("Host: example.com", "Host: [::1"), 400},
		{"IPv6 host with junk", swap("Host: example.com", "Host: [::1]x"), 400},
		{"port only", swap("Host: example.com", "Host: :80"), 400},
		{"Content-Length", swap("Connection: Upgrade", "Connection: Upgrade\r\nContent-Length: 5"), 400},
		{"Transfer-Encoding", swap("Connection: Upgrade", "Connection: Upgrade\r\nTransfer-Encoding: chunked"), 400},
		{"no version", swap("Sec-WebSocket-Version: 13\r\n", ""), 426},
		{"version 8", swap("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), 426},
		{"version list", swap("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13, 8"), 426},
		{"version 130", swap("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 130"), 426},
		{"two versions", swap("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13"), 426},
		{"no key", swap("Sec-WebSocket-Key: "+sampleKey+"\r\n", ""), 400},
		{"empty key", swap("Sec-WebSocket-Key: "+sampleKey, "Sec-WebSocket-Key:"), 400},
		{"short key", swap(sampleKey, "dGhlIHNhbXBsZSBub25j"), 400},
		{"key of 17 bytes", swap(sampleKey, "dGhlIHNhbXBsZSBub25jZQ=A"), 400},
		{"key not base64", swap(sampleKey, "dGhlIHNhbXBsZSBub25jZQ!!"), 400},
		{"key unpadded", swap(sampleKey, "dGhlIHNhbXBsZSBub25jZQAA"), 400},
		{"two keys", swap("Sec-WebSocket-Key: "+sampleKey, "Sec-WebSocket-Key: "+sampleKey+"\r\nSec-WebSocket-Key: "+sampleKey), 400},
		{"no origin", swap("Origin: https://example.com\r\n", ""), 403},
		{"other origin", swap("https://example.com", "https://evil.com"), 403},
		{"other scheme", swap("https://example.com", "http://example.com"), 403},
		{"other port", swap("https://example.com", "https://example.com:8443"), 403},
		{"origin with path", swap("https://example.com", "https://example.com/"), 403},
		{"null origin", swap("https://example.com", "null"), 403},
		{"two origins", swap("Origin: https://example.com", "Origin: https://example.com\r\nOrigin: https://example.com"), 403},
		// The first failing rule decides, in the documented order.
		{"version before key", strings.Replace(swap("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 7"), sampleKey, "bad", 1), 426},
		{"method first", strings.Replace(swap("GET ", "PUT "), "Upgrade: websocket\r\n", "", 1), 405},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := parseRequest(t, tc.raw)
			info, rej := Check(h, policy)
			if rej == nil {
				t.Fatalf("accepted: %+v", info)
			}
			if rej.Status != tc.status {
				t.Fatalf("status %d (%s), want %d", rej.Status, rej.Reason, tc.status)
			}
			var err error = rej
			var target *Rejection
			if !errors.As(err, &target) || !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

// A header built in code has no raw block; Check reads its serialised form.
func TestCheckBuiltHeader(t *testing.T) {
	t.Parallel()
	var h fasthttp.RequestHeader
	h.SetMethod("GET")
	h.SetRequestURI("/ws")
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Key", sampleKey)
	h.Set("Sec-WebSocket-Version", "13")
	if _, rej := Check(&h, nil); rej == nil || rej.Status != 400 || rej != rejectHost {
		t.Fatalf("without Host: %v, want the Host rejection", rej)
	}
	h.SetHost("example.com")
	info, rej := Check(&h, nil)
	if rej != nil {
		t.Fatal(rej)
	}
	if string(info.Key) != sampleKey {
		t.Errorf("Key = %q", info.Key)
	}
}

func TestIsAttempt(t *testing.T) {
	t.Parallel()
	plain := "GET / HTTP/1.1\r\nHost: a\r\n"
	cases := []struct {
		raw  string
		want bool
	}{
		{plain + "\r\n", false},
		{plain + "Upgrade: websocket\r\n\r\n", true},
		{plain + "upgrade: WebSocket, foo\r\n\r\n", true},
		{plain + "Sec-WebSocket-Key: x\r\n\r\n", true},
		{plain + "sec-websocket-version: 13\r\n\r\n", true},
		{plain + "Connection: Upgrade\r\n\r\n", false},
		{plain + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n", false},
		{plain + "Sec-WebSocket-Protocol: chat\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n", true},
	}
	for _, tc := range cases {
		if got := IsAttempt(parseRequest(t, tc.raw)); got != tc.want {
			t.Errorf("IsAttempt(%q) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

func TestRejectionWriteResponse(t *testing.T) {
	t.Parallel()
	for _, r := range []*Rejection{rejectMethod, rejectUpgrade, rejectVersion, rejectOrigin} {
		var ctx fasthttp.RequestCtx
		ctx.Response.Header.Set("X-Stale", "1")
		r.WriteResponse(&ctx)
		resp := &ctx.Response
		if resp.StatusCode() != r.Status || !resp.ConnectionClose() {
			t.Errorf("%d: status %d, close %v", r.Status, resp.StatusCode(), resp.ConnectionClose())
		}
		if string(resp.Body()) != r.Reason+"\n" || len(resp.Header.Peek("X-Stale")) != 0 {
			t.Errorf("%d: body %q, X-Stale %q", r.Status, resp.Body(), resp.Header.Peek("X-Stale"))
		}
		wantAllow, wantVersion := "", ""
		switch r.Status {
		case 405:
			wantAllow = "GET"
		case 426:
			wantVersion = "13"
		}
		if got := string(resp.Header.Peek("Allow")); got != wantAllow {
			t.Errorf("%d: Allow %q", r.Status, got)
		}
		if got := string(resp.Header.Peek("Sec-WebSocket-Version")); got != wantVersion {
			t.Errorf("%d: Sec-WebSocket-Version %q", r.Status, got)
		}
	}
}

// TestCheckOverFasthttpServer sends raw requests to a real fasthttp server
// whose handler runs IsAttempt and Check, and reads the raw answers.
func TestCheckOverFasthttpServer(t *testing.T) {
	t.Parallel()
	policy, err := CompileOrigins([]string{"http://localhost:*"}, true)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if !IsAttempt(&ctx.Request.Header) {
				ctx.SetBodyString("plain")
				return
			}
			info, rej := Check(&ctx.Request.Header, policy)
			if rej != nil {
				rej.WriteResponse(ctx)
				return
			}
			ctx.SetBodyString("accept " + AcceptKey(info.Key))
		},
		ReadBufferSize: 4096,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })

	cases := []struct {
		raw    string
		status int
		body   string
		header [2]string
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, "plain", [2]string{}},
		{handshakeRequest("Origin: http://localhost:3000\r\n"), 200, "accept " + sampleAccept, [2]string{}},
		{strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: keep-alive, Upgrade", 1), 200, "accept " + sampleAccept, [2]string{}},
		{strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: close", 1), 400, rejectConnection.Reason + "\n", [2]string{"Connection", "close"}},
		{strings.Replace(handshakeRequest(""), "HTTP/1.1", "HTTP/1.0", 1), 400, rejectProtocol.Reason + "\n", [2]string{}},
		{strings.Replace(handshakeRequest(""), "GET", "DELETE", 1), 405, rejectMethod.Reason + "\n", [2]string{"Allow", "GET"}},
		{strings.Replace(handshakeRequest(""), "Version: 13", "Version: 12", 1), 426, rejectVersion.Reason + "\n", [2]string{"Sec-WebSocket-Version", "13"}},
		{handshakeRequest("Origin: https://evil.example\r\n"), 403, rejectOrigin.Reason + "\n", [2]string{}},
		{handshakeRequest("X-Big: " + strings.Repeat("x", 5000) + "\r\n"), 431, "", [2]string{}},
	}
	for _, tc := range cases {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(tc.raw)); err != nil {
			t.Fatal(err)
		}
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(conn)); err != nil {
			t.Fatalf("%q: %v", tc.raw, err)
		}
		conn.Close()
		if resp.StatusCode() != tc.status {
			t.Errorf("%.40q: status %d, want %d", tc.raw, resp.StatusCode(), tc.status)
			continue
		}
		if tc.body != "" && string(resp.Body()) != tc.body {
			t.Errorf("%.40q: body %q, want %q", tc.raw, resp.Body(), tc.body)
		}
		if k := tc.header[0]; k != "" && string(resp.Header.Peek(k)) != tc.header[1] {
			t.Errorf("%.40q: %s = %q, want %q", tc.raw, k, resp.Header.Peek(k), tc.header[1])
		}
		if tc.status != 200 && !resp.ConnectionClose() {
			t.Errorf("%.40q: no Connection: close", tc.raw)
		}
	}
}
