//go:build linux

package relay

import (
	"bytes"
	"testing"
)

// headEnd finds the end of a head fed to it in pieces, scanning each
// piece once (with the three bytes before it), whatever the split.
func TestHeadEndIncremental(t *testing.T) {
	for _, head := range []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / HTTP/1.1\nHost: a\n\n"} {
		in := head + "rest"
		for piece := 1; piece <= len(in); piece++ {
			var got []byte
			end := -1
			for i := 0; i < len(in) && end < 0; i += piece {
				from := max(len(got)-3, 0)
				got = append(got, in[i:min(i+piece, len(in))]...)
				end = headEnd(got, from)
			}
			if end != len(head) {
				t.Fatalf("%q in pieces of %d: end %d, want %d", head, piece, end, len(head))
			}
		}
	}
}

// A head must not end at the empty lines a client may send before its
// request line (RFC 9112 §2.2), however they are split.
func TestBlankLinesBeforeTheHead(t *testing.T) {
	for _, c := range []struct {
		in        string
		blank, at int
	}{
		{"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 4, 22},
		{"\n\r\n\nGET / HTTP/1.1\n\n", 4, 20},
		{"\r\n\r\n", 4, -1},
		{"\r\n\r", 2, -1},
		{"GET / HTTP/1.1\r\n\r\n", 0, 18},
	} {
		b := []byte(c.in)
		blank := blankLines(b)
		if at := headEnd(b, blank); blank != c.blank || at != c.at {
			t.Errorf("%q: blank %d, head end %d; want %d, %d", c.in, blank, at, c.blank, c.at)
		}
	}
}

// Every head end a bare LF makes becomes CRLF CRLF, which fasthttp needs,
// and what follows the head is kept.
func TestCRLFEnd(t *testing.T) {
	for _, in := range []string{
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\n",
		"GET / HTTP/1.1\r\nHost: a\n\r\n",
		"GET / HTTP/1.1\n\n",
	} {
		b := []byte(in + "\x81\x00")
		out, end := crlfEnd(b, headEnd(b, 0))
		if !bytes.HasSuffix(out[:end], []byte("\r\n\r\n")) || bytes.Count(out[:end], []byte("\r\n\r\n")) != 1 || string(out[end:]) != "\x81\x00" {
			t.Errorf("%q: %q, head %d", in, out, end)
		}
	}
}
