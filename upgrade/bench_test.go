package upgrade

import (
	"net/netip"
	"testing"
)

func BenchmarkCheck(b *testing.B) {
	policy, err := CompileOrigins([]string{"https://a.test", "https://*.example.com"}, false)
	if err != nil {
		b.Fatal(err)
	}
	h := parseRequest(b, handshakeRequest("Origin: https://chat.example.com\r\n"+
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36\r\n"+
		"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nCache-Control: no-cache\r\n"+
		"Cookie: session=0123456789abcdef; theme=dark\r\n"+
		"Sec-WebSocket-Protocol: chat, superchat\r\n"+
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"))
	b.ReportAllocs()
	for b.Loop() {
		if !IsAttempt(h) {
			b.Fatal("not an attempt")
		}
		if _, rej := Check(h, policy); rej != nil {
			b.Fatal(rej)
		}
	}
}

func BenchmarkAppendAcceptKey(b *testing.B) {
	key := []byte(sampleKey)
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendAcceptKey(buf[:0], key)
	}
}

func BenchmarkAppendRequest(b *testing.B) {
	h := parseRequest(b, handshakeRequest("Origin: https://chat.example.com\r\n"+
		"Cookie: session=0123456789abcdef; theme=dark\r\nX-Forwarded-For: 10.0.0.1\r\n"+
		"Sec-WebSocket-Protocol: chat, superchat\r\n"))
	req := &UpstreamRequest{Header: h, ClientIP: netip.MustParseAddr("192.0.2.1")}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRequest(buf[:0], req)
	}
}

func BenchmarkOriginAllow(b *testing.B) {
	policy, err := CompileOrigins([]string{"https://a.test", "https://b.test", "https://*.example.com"}, false)
	if err != nil {
		b.Fatal(err)
	}
	origin := []byte("https://chat.example.com")
	b.ReportAllocs()
	for b.Loop() {
		if !policy.Allow(origin) {
			b.Fatal("denied")
		}
	}
}
