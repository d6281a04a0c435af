//go:build linux

package relay

import "testing"

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
