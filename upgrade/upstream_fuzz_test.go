package upgrade

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// responseSeeds are backend answers of every kind: 101s accepted and
// refused, interim responses, errors with bodies, and garbage.
var responseSeeds = []string{
	switching(""),
	switching("") + "\x81\x05hello",
	switching("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"),
	switching("Sec-WebSocket-Extensions: x-test, permessage-deflate\r\nSet-Cookie: a=b\r\nConnection: X-A\r\nX-A: 1\r\n"),
	switching("Sec-WebSocket-Protocol: other\r\n"),
	switching("Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n"),
	strings.Replace(switching(""), sampleAccept, "bad", 1),
	"HTTP/1.1 100 Continue\r\n\r\n" + switching(""),
	"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied",
	"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 502 Bad Gateway\r\n\r\nuntil close",
	"HTTP/1.0 101 Switching Protocols\r\n\r\n",
	"garbage\r\n\r\n",
	"",
}

// FuzzReadResponse feeds arbitrary backend responses to ReadResponse. It must
// never panic, must return one of its two error types on failure, and on
// success the negotiated values must be ones the client offered and the 101
// built for the client must parse.
func FuzzReadResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	client := sentHead(offerRequest(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), ReadBufferSize)
		hs, err := ReadResponse(br, client)
		if err != nil {
			var he *HandshakeError
			var re *HTTPResponseError
			switch {
			case errors.As(err, &he):
			case errors.As(err, &re):
				if re.StatusCode == 101 || len(re.Body) > MaxErrorBodySize {
					t.Fatalf("%+v", re)
				}
			default:
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if hs.Protocol != "" && hs.Protocol != "chat" && hs.Protocol != "superchat" {
			t.Fatalf("protocol %q", hs.Protocol)
		}
		for _, n := range hs.ExtensionNames {
			if !strings.EqualFold(n, "permessage-deflate") && !strings.EqualFold(n, "x-test") {
				t.Fatalf("extension %q", n)
			}
		}
		if hs.RSV != AllowedRSV(hs.Extensions) {
			t.Fatalf("RSV %#x for %q", hs.RSV, hs.Extensions)
		}
		out := AppendSwitchingProtocols(nil, []byte(sampleKey), &hs)
		rh := parseResponse(t, out)
		if rh.StatusCode() != 101 || string(rh.Peek("Sec-WebSocket-Accept")) != sampleAccept {
			t.Fatalf("client 101:\n%q", out)
		}
	})
}
