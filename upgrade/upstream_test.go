package upgrade

import (
	"bufio"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestAcceptKey(t *testing.T) {
	t.Parallel()
	if got := AcceptKey([]byte(sampleKey)); got != sampleAccept {
		t.Fatalf("AcceptKey = %q, want %q", got, sampleAccept)
	}
	// A long key takes the streaming path and must agree with it.
	long := strings.Repeat("k", 100)
	short := AppendAcceptKey([]byte("prefix:"), []byte(long))
	if !strings.HasPrefix(string(short), "prefix:") || len(short) != len("prefix:")+28 {
		t.Fatalf("AppendAcceptKey = %q", short)
	}
	for n := 20; n <= 40; n++ { // across the stack-buffer boundary
		k := []byte(strings.Repeat("a", n))
		if got, want := AcceptKey(k), referenceAccept(k); got != want {
			t.Errorf("len %d: %q, want %q", n, got, want)
		}
	}
}

func TestAppendRequest(t *testing.T) {
	t.Parallel()
	client := parseRequest(t, "GET /chat?room=1 HTTP/1.1\r\n"+
		"Host: Example.com:8080\r\n"+
		"User-Agent: test/1\r\n"+
		"Upgrade: websocket\r\n"+
		"Connection: keep-alive, Upgrade, X-Hop\r\n"+
		"Sec-WebSocket-Key: "+sampleKey+"\r\n"+
		"Sec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Protocol: chat, superchat\r\n"+
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"+
		"Origin: https://example.com\r\n"+
		"Cookie: a=b; c=\"d e\"; f\r\n"+
		"Authorization: Bearer xyz\r\n"+
		"X-Hop: secret\r\n"+
		"X-Custom: one\r\n"+
		"X-Custom: two\r\n"+
		"X-Folded: a,\r\n  b\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"Proxy-Authorization: Basic abc\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"TE: trailers\r\n"+
		"X-Forwarded-For: 203.0.113.7\r\n"+
		"X-Forwarded-For: 198.51.100.2, 10.0.0.1\r\n"+
		"X-Forwarded-Proto: https\r\n"+
		"X-Forwarded-Host: spoofed\r\n"+
		"Content-Length: 0\r\n"+
		"\r\n")
	// Reading cookies makes fasthttp re-serialise them lossily; the raw
	// fields must still be what is forwarded.
	_ = client.Cookie("a")

	req := &UpstreamRequest{Header: client, ClientIP: netip.MustParseAddr("192.0.2.1"), TLS: true, TrustForwarded: true}
	out := string(AppendRequest(nil, req))
	want := "GET /chat?room=1 HTTP/1.1\r\n" +
		"Host: Example.com:8080\r\n" +
		"User-Agent: test/1\r\n" +
		"Sec-WebSocket-Key: " + sampleKey + "\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: chat, superchat\r\n" +
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
		"Origin: https://example.com\r\n" +
		"Cookie: a=b; c=\"d e\"; f\r\n" +
		"Authorization: Bearer xyz\r\n" +
		"X-Custom: one\r\n" +
		"X-Custom: two\r\n" +
		"X-Folded: a,    b\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"X-Forwarded-For: 203.0.113.7, 198.51.100.2, 10.0.0.1, 192.0.2.1\r\n" +
		"X-Forwarded-Proto: https\r\n" +
		"X-Forwarded-Host: Example.com:8080\r\n" +
		"\r\n"
	if out != want {
		t.Fatalf("request:\n%s\nwant:\n%s", out, want)
	}
	if h := parseRequest(t, out); !IsAttempt(h) {
		t.Fatal("the upstream request is not a handshake")
	} else if _, rej := Check(h, nil); rej != nil {
		t.Fatalf("the upstream request fails Check: %v", rej)
	}

	// From a client that is not a trusted proxy, its own X-Forwarded-For,
	// Forwarded and X-Real-IP go nowhere: the backend hears its address.
	client = parseRequest(t, handshakeRequest("X-Forwarded-For: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\nX-Real-IP: 203.0.113.7\r\nX-Real-IPs: kept\r\n"))
	out = string(AppendRequest(nil, &UpstreamRequest{Header: client, ClientIP: netip.MustParseAddr("192.0.2.1")}))
	if strings.Contains(out, "203.0.113.7") || !strings.Contains(out, "X-Forwarded-For: 192.0.2.1\r\n") || !strings.Contains(out, "X-Real-IPs: kept\r\n") {
		t.Errorf("untrusted client's forwarding fields:\n%s", out)
	}
	out = string(AppendRequest(nil, &UpstreamRequest{Header: client, ClientIP: netip.MustParseAddr("192.0.2.1"), TrustForwarded: true}))
	for _, line := range []string{"X-Forwarded-For: 203.0.113.7, 192.0.2.1\r\n", "Forwarded: for=203.0.113.7\r\n", "X-Real-IP: 203.0.113.7\r\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("trusted proxy: missing %q in\n%s", line, out)
		}
	}

	// Host override, plain HTTP, no client IP, no X-Forwarded-For.
	client = parseRequest(t, handshakeRequest(""))
	out = string(AppendRequest(nil, &UpstreamRequest{Header: client, Host: "backend.internal"}))
	for _, line := range []string{"Host: backend.internal\r\n", "X-Forwarded-Proto: http\r\n", "X-Forwarded-Host: example.com\r\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("missing %q in\n%s", line, out)
		}
	}
	if strings.Contains(out, "X-Forwarded-For") || strings.Count(out, "Host: ") != 2 {
		t.Errorf("unexpected fields in\n%s", out)
	}

	// IPv6 client appended without zone; Sec-WebSocket-* survive being
	// named in Connection.
	client = parseRequest(t, strings.Replace(handshakeRequest(""), "Connection: Upgrade", "Connection: Upgrade, Sec-WebSocket-Key", 1))
	out = string(AppendRequest(nil, &UpstreamRequest{Header: client, ClientIP: netip.MustParseAddr("fe80::1%eth0")}))
	if !strings.Contains(out, "X-Forwarded-For: fe80::1\r\n") || !strings.Contains(out, "Sec-WebSocket-Key: "+sampleKey) {
		t.Errorf("got\n%s", out)
	}
}

func TestOriginForm(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                    "/",
		"/a?b":                "/a?b",
		"http://h":            "/",
		"http://h/":           "/",
		"http://h:80/p/q?x=1": "/p/q?x=1",
		"https://h?x=1":       "/?x=1",
		"*":                   "*",
		"http://h#f":          "/",
	} {
		if got := string(appendOriginForm([]byte("x"), []byte(in))); got != "x"+want {
			t.Errorf("appendOriginForm(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAllowedRSV(t *testing.T) {
	t.Parallel()
	for ext, want := range map[string]byte{
		"":                   0,
		" , ":                0,
		"permessage-deflate": RSV1,
		"Permessage-Deflate; server_no_context_takeover; client_max_window_bits=10": RSV1,
		"permessage-deflate, permessage-deflate":                                    RSV1,
		"x-webkit-deflate-frame":                                                    RSV1 | RSV2 | RSV3,
		"permessage-deflate, foo; a=\"x,y\"":                                        0x70,
	} {
		if got := AllowedRSV(ext); got != want {
			t.Errorf("AllowedRSV(%q) = %#x, want %#x", ext, got, want)
		}
	}
}

func TestAppendSwitchingProtocols(t *testing.T) {
	t.Parallel()
	hs := &Handshake{
		Protocol:   "chat",
		Extensions: "permessage-deflate; server_no_context_takeover",
		Header:     []Field{{"Set-Cookie", "s=1; Path=/"}, {"X-Backend", "b1"}},
	}
	out := AppendSwitchingProtocols(nil, []byte(sampleKey), hs)
	want := "HTTP/1.1 101 Switching Protocols\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + sampleAccept + "\r\n" +
		"Sec-WebSocket-Protocol: chat\r\n" +
		"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n" +
		"Set-Cookie: s=1; Path=/\r\n" +
		"X-Backend: b1\r\n" +
		"\r\n"
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	out = AppendSwitchingProtocols(out[:0], []byte(sampleKey), &Handshake{})
	if h := parseResponse(t, out); h.StatusCode() != 101 || string(h.Peek("Sec-WebSocket-Accept")) != sampleAccept {
		t.Fatalf("got\n%s", out)
	}
}

// sentHead is the request head the proxy sends a backend for the client
// request h: what ReadResponse and ParseResponse check a 101 against.
func sentHead(h *fasthttp.RequestHeader) []byte {
	return AppendRequest(nil, &UpstreamRequest{Header: h})
}

// offerRequest is a client handshake that offers two subprotocols and two
// extensions.
func offerRequest(t testing.TB) *fasthttp.RequestHeader {
	return parseRequest(t, handshakeRequest("Sec-WebSocket-Protocol: chat, superchat\r\n"+
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-test\r\n"))
}

// switching is a valid 101 for handshakeRequest's key; extra lines go before
// the blank line.
func switching(extra string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + sampleAccept + "\r\n" + extra + "\r\n"
}

func TestReadResponse(t *testing.T) {
	t.Parallel()
	client := sentHead(offerRequest(t))
	type want struct {
		handshake bool   // else an error
		httpError int    // status of an *HTTPResponseError
		protocol  string // for success
		rest      string // bytes left in the reader on success
	}
	cases := []struct {
		name string
		resp string
		want want
	}{
		{"minimal", switching(""), want{handshake: true}},
		{"frame after head", switching("") + "\x81\x02hi", want{handshake: true, rest: "\x81\x02hi"}},
		{"case and lists", "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\nsec-websocket-accept: " + sampleAccept + "\r\n\r\n", want{handshake: true}},
		{"interim first", "HTTP/1.1 100 Continue\r\n\r\n" + switching(""), want{handshake: true}},
		{"chosen protocol", switching("Sec-WebSocket-Protocol: superchat\r\n"), want{handshake: true, protocol: "superchat"}},
		{"empty protocol", switching("Sec-WebSocket-Protocol:\r\n"), want{handshake: true}},
		{"offered extensions", switching("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\nSec-WebSocket-Extensions: X-Test\r\n"), want{handshake: true}},

		{"wrong accept", strings.Replace(switching(""), sampleAccept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1), want{}},
		{"no accept", strings.Replace(switching(""), "Sec-WebSocket-Accept: "+sampleAccept+"\r\n", "", 1), want{}},
		{"two accepts", switching("Sec-WebSocket-Accept: " + sampleAccept + "\r\n"), want{}},
		{"no upgrade", strings.Replace(switching(""), "Upgrade: websocket\r\n", "", 1), want{}},
		{"upgrade h2c", strings.Replace(switching(""), "Upgrade: websocket", "Upgrade: h2c", 1), want{}},
		{"no connection", strings.Replace(switching(""), "Connection: Upgrade\r\n", "", 1), want{}},
		{"connection close", strings.Replace(switching(""), "Connection: Upgrade", "Connection: close", 1), want{}},
		{"HTTP/1.0 101", strings.Replace(switching(""), "HTTP/1.1", "HTTP/1.0", 1), want{}},
		{"unoffered protocol", switching("Sec-WebSocket-Protocol: other\r\n"), want{}},
		{"protocol case", switching("Sec-WebSocket-Protocol: Chat\r\n"), want{}},
		{"protocol list", switching("Sec-WebSocket-Protocol: chat, superchat\r\n"), want{}},
		{"two protocols", switching("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"), want{}},
		{"unoffered extension", switching("Sec-WebSocket-Extensions: permessage-deflate, x-other\r\n"), want{}},
		{"extension twice", switching("Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n"), want{}},
		{"too many interim", strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", 5) + switching(""), want{}},
		{"garbage", "SSH-2.0-OpenSSH_9.6\r\n\r\n", want{}},
		{"empty", "", want{}},
		{"truncated head", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", want{}},
		{"head too large", switching("X-Big: " + strings.Repeat("x", 5000) + "\r\n"), want{}},
		{"truncated body", "HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nabc", want{}},

		{"403", "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\ndenied", want{httpError: 403}},
		{"401 chunked", "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n", want{httpError: 401}},
		{"200 until close", "HTTP/1.1 200 OK\r\n\r\nhello", want{httpError: 200}},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", want{httpError: 204}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			br := bufio.NewReaderSize(strings.NewReader(tc.resp), ReadBufferSize)
			hs, err := ReadResponse(br, client)
			switch {
			case tc.want.handshake:
				if err != nil {
					t.Fatal(err)
				}
				if hs.Protocol != tc.want.protocol {
					t.Errorf("Protocol = %q, want %q", hs.Protocol, tc.want.protocol)
				}
				rest := make([]byte, br.Buffered())
				br.Read(rest)
				if string(rest) != tc.want.rest {
					t.Errorf("left %q, want %q", rest, tc.want.rest)
				}
			case tc.want.httpError != 0:
				var he *HTTPResponseError
				if !errors.As(err, &he) || he.StatusCode != tc.want.httpError {
					t.Fatalf("err = %v, want an *HTTPResponseError %d", err, tc.want.httpError)
				}
				if Retryable(err) {
					t.Error("an HTTP response must not be retryable")
				}
			default:
				var he *HandshakeError
				if !errors.As(err, &he) {
					t.Fatalf("err = %v (%T), want a *HandshakeError", err, err)
				}
				if !Retryable(err) {
					t.Error("a handshake error must be retryable")
				}
			}
		})
	}
}

func TestReadResponseDetails(t *testing.T) {
	t.Parallel()
	client := sentHead(offerRequest(t))
	resp := switching("Sec-WebSocket-Protocol: chat\r\n" +
		"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n" +
		"Sec-WebSocket-Extensions: x-test\r\n" +
		"Set-Cookie: a=1; Path=/\r\n" +
		"Set-Cookie: b=2\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Connection: X-Private\r\n" +
		"X-Private: hidden\r\n" +
		"X-Backend: b1\r\n")
	hs, err := ReadResponse(bufio.NewReader(strings.NewReader(resp)), client)
	if err != nil {
		t.Fatal(err)
	}
	if hs.Protocol != "chat" || hs.Extensions != "permessage-deflate; server_no_context_takeover, x-test" ||
		strings.Join(hs.ExtensionNames, "|") != "permessage-deflate|x-test" || hs.RSV != 0x70 {
		t.Errorf("handshake %+v", hs)
	}
	got := map[string][]string{}
	for _, f := range hs.Header {
		got[f.Name] = append(got[f.Name], f.Value)
	}
	if len(got) != 2 || strings.Join(got["Set-Cookie"], "|") != "a=1; Path=/|b=2" || got["X-Backend"][0] != "b1" {
		t.Errorf("Header = %q", hs.Header)
	}

	chunked := "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\"\r\nContent-Type: application/json\r\n" +
		"Set-Cookie: s=1\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n"
	_, err = ReadResponse(bufio.NewReader(strings.NewReader(chunked)), client)
	var he *HTTPResponseError
	if !errors.As(err, &he) {
		t.Fatalf("err = %v", err)
	}
	if string(he.Body) != `{"a":1}` || he.Truncated {
		t.Errorf("body %q truncated %v", he.Body, he.Truncated)
	}
	names := ""
	for _, f := range he.Header {
		names += f.Name + "|"
	}
	if names != "Content-Type|Set-Cookie|Www-Authenticate|" {
		t.Errorf("header names %q", names)
	}

	var ctx fasthttp.RequestCtx
	he.WriteResponse(&ctx)
	r := &ctx.Response
	if r.StatusCode() != 401 || string(r.Body()) != `{"a":1}` || string(r.Header.ContentType()) != "application/json" ||
		string(r.Header.Peek("WWW-Authenticate")) != `Bearer realm="x"` || string(r.Header.PeekCookie("s")) != "s=1" {
		t.Errorf("passed on as:\n%s", r.String())
	}

	big := "HTTP/1.1 403 Forbidden\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("x", 70000)
	_, err = ReadResponse(bufio.NewReader(strings.NewReader(big)), client)
	if !errors.As(err, &he) || !he.Truncated || he.Body != nil || he.StatusCode != 403 {
		t.Errorf("big body: %v %+v", err, he)
	}
}

// ParseResponse given an answer a byte at a time waits until it is whole
// and then agrees with ReadResponse on the complete bytes.
func TestParseResponseIncremental(t *testing.T) {
	var client fasthttp.RequestHeader
	client.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	client.Set("Sec-WebSocket-Protocol", "chat")
	ok101 := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
	for _, tc := range []struct {
		name, in string
		head     int // expected head length; 0 for an error
		status   int // expected HTTPResponseError status, if any
		needEOF  bool
	}{
		{name: "101", in: ok101 + "\x81\x02hi", head: len(ok101)},
		{name: "interim", in: "HTTP/1.1 100 Continue\r\n\r\n" + ok101, head: len("HTTP/1.1 100 Continue\r\n\r\n" + ok101)},
		{name: "403 length", in: "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!", status: 403},
		{name: "403 chunked", in: "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n", status: 403},
		{name: "403 to close", in: "HTTP/1.1 403 Forbidden\r\n\r\nnope!", status: 403, needEOF: true},
		{name: "bad accept", in: strings.Replace(ok101, "s3pP", "AAAA", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.in)
			for i := 1; i < len(b); i++ {
				head, _, err := ParseResponse(b[:i], false, sentHead(&client))
				if head != 0 || err != nil {
					if tc.head > 0 && i >= tc.head || tc.status != 0 && i >= len(b)-2 {
						break // whole: the frame behind a 101, a chunked body's last CRLF are not needed
					}
					if tc.head == 0 && tc.status == 0 && err != nil {
						return // a failed check is final as soon as the head is in
					}
					t.Fatalf("after %d of %d bytes: head %d err %v", i, len(b), head, err)
				}
			}
			head, hs, err := ParseResponse(b, false, sentHead(&client))
			if tc.needEOF {
				if head != 0 || err != nil {
					t.Fatalf("before EOF: head %d err %v", head, err)
				}
				head, hs, err = ParseResponse(b, true, sentHead(&client))
			}
			var re *HTTPResponseError
			switch {
			case tc.status != 0:
				if !errors.As(err, &re) || re.StatusCode != tc.status || string(re.Body) != "nope!" {
					t.Fatalf("got %v, body %q", err, re)
				}
			case tc.head != 0:
				if err != nil || head != tc.head || hs.Protocol != "chat" {
					t.Fatalf("head %d (want %d) protocol %q err %v", head, tc.head, hs.Protocol, err)
				}
			default:
				if err == nil {
					t.Fatalf("no error for %q", tc.in)
				}
			}
		})
	}
}
