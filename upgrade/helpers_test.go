package upgrade

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// The sample key and accept value of RFC 6455 §1.3.
const (
	sampleKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// handshakeRequest is a minimal valid client handshake; extra lines (each
// ending in CRLF) go before the blank line.
func handshakeRequest(extra string) string {
	return "GET /chat?room=1 HTTP/1.1\r\n" +
		"Host: example.com\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + sampleKey + "\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		extra + "\r\n"
}

// parseRequest parses raw as fasthttp's server does.
func parseRequest(t testing.TB, raw string) *fasthttp.RequestHeader {
	t.Helper()
	h := new(fasthttp.RequestHeader)
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("fasthttp cannot parse %q: %v", raw, err)
	}
	return h
}

// parseResponse parses raw as an HTTP response head.
func parseResponse(t testing.TB, raw []byte) *fasthttp.ResponseHeader {
	t.Helper()
	h := new(fasthttp.ResponseHeader)
	h.SetNoDefaultContentType(true)
	if err := h.Read(bufio.NewReader(strings.NewReader(string(raw)))); err != nil {
		t.Fatalf("fasthttp cannot parse %q: %v", raw, err)
	}
	return h
}

// referenceAccept computes Sec-WebSocket-Accept the obvious way.
func referenceAccept(key []byte) string {
	sum := sha1.Sum(append(append([]byte(nil), key...), "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"...))
	return base64.StdEncoding.EncodeToString(sum[:])
}
