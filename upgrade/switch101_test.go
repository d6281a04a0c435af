package upgrade

import (
	"bufio"
	"bytes"
	"slices"
	"strings"
	"testing"
)

// FuzzSwitchHead: whatever switchHead reads in place, fasthttp's parser
// (ReadResponse) reads to the same answer: the same error, or the same
// head length and handshake, field for field (names compared without
// case, as fasthttp normalizes them; order aside, as fasthttp lists the
// fields it keeps apart first). A head switchHead leaves to fasthttp
// needs no check: fasthttp reads it as it always has.
func FuzzSwitchHead(f *testing.F) {
	// Besides the seeds of every kind, the edges of what is read in place.
	for _, s := range append(slices.Clone(responseSeeds),
		switching("server: a\r\nx-lower:  padded \t\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\r\nDate: Mon, 07 Dec 2026 11:00:00 GMT\r\n"),
		switching("Server:\r\n"),
		switching("Server: a\r\nServer: b\r\n"),
		switching("Connection: close\r\n"),
		switching("Content-Length: 0\r\n"),
		switching("X-Sp : 1\r\n"),
		switching("X-Fold: 1\r\n 2\r\n"),
		switching("X-Ctl: a\x01b\r\n"),
		"HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+sampleAccept+"\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: "+sampleAccept+"\n\n",
		strings.Replace(switching(""), "Upgrade: websocket", "Upgrade: h2c", 1),
		strings.Replace(switching(""), "Connection: Upgrade", "Connection: keep-alive", 1),
	) {
		f.Add([]byte(s))
	}
	client := sentHead(offerRequest(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		var sw switchHead
		if n := sw.parse(data); n == 0 || n > ReadBufferSize {
			return
		}
		head, got, err := ParseResponse(data, true, client)
		br := bufio.NewReaderSize(bytes.NewReader(data), ReadBufferSize)
		want, werr := ReadResponse(br, client)
		if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
			t.Fatalf("in place: %v\nfasthttp: %v\n%q", err, werr, data)
		}
		if err != nil {
			return
		}
		if wantHead := len(data) - br.Buffered(); head != wantHead {
			t.Fatalf("head %d, fasthttp %d\n%q", head, wantHead, data)
		}
		if got.Protocol != want.Protocol || got.Extensions != want.Extensions || got.RSV != want.RSV ||
			!slices.Equal(got.ExtensionNames, want.ExtensionNames) || !slices.Equal(fieldSet(got.Header), fieldSet(want.Header)) {
			t.Fatalf("in place: %+v\nfasthttp: %+v\n%q", got, want, data)
		}
	})
}

func fieldSet(fs []Field) []string {
	var out []string
	for _, f := range fs {
		out = append(out, strings.ToLower(f.Name)+": "+f.Value)
	}
	slices.Sort(out)
	return out
}

// TestSwitchHeadTakes: the plain 101s backends send are read in place, so
// the check above is not vacuous, and the irregular ones go to fasthttp.
func TestSwitchHeadTakes(t *testing.T) {
	t.Parallel()
	for s, take := range map[string]bool{
		switching(""): true,
		switching("Sec-WebSocket-Protocol: chat\r\nSet-Cookie: a=b\r\nServer: x\r\n"): true,
		"HTTP/1.1 101\r\nUpgrade: websocket\r\n\r\n":                                  true,
		switching("Server: a\r\nServer: b\r\n"):                                       false,
		switching("Content-Type: text/plain\r\n"):                                     false,
		switching("X-Fold: 1\r\n 2\r\n"):                                              false,
		strings.ReplaceAll(switching(""), "\r\n", "\n"):                               false,
		"HTTP/1.0 101 Switching Protocols\r\n\r\n":                                    false,
		switching("")[:40]:                                                            false,
	} {
		var sw switchHead
		if n := sw.parse([]byte(s)); (n > 0) != take {
			t.Errorf("parse %q: %d, want taken %v", s, n, take)
		}
	}
}
