package upgrade

import (
	"iter"

	"github.com/valyala/fasthttp"
)

// respHead is what checkSwitch and buildHandshake read of a 101: a
// fasthttp.ResponseHeader, or a switchHead for the plain ones.
type respHead interface {
	Protocol() []byte
	PeekAll(name string) [][]byte
	All() iter.Seq2[[]byte, []byte]
}

var _ respHead = (*fasthttp.ResponseHeader)(nil)

// switchHead is a 101 head read in place: the fields point into the bytes
// received. Nearly every backend answers a handshake with a short, plain
// 101, and reading that with fasthttp's general parser (which copies every
// field, normalizes names and keeps special fields apart) was a tenth of
// the proxy's own CPU per handshake. A head switchHead does not take for
// plain goes to fasthttp as before, so it decides nothing fasthttp would
// decide differently: FuzzSwitchHead holds the two to the same answers.
type switchHead struct {
	fields [maxSwitchFields][2][]byte // name, value (trimmed)
	n      int
	peek   [][]byte // PeekAll's result, reused as fasthttp reuses its own
}

// maxSwitchFields bounds the fields of a 101 read in place; more go to
// fasthttp.
const maxSwitchFields = 24

const switchStatus = "HTTP/1.1 101"

// reset drops what h points into (the bytes parsed), for a pool: only the
// fields parse filled, not the whole array.
func (h *switchHead) reset() {
	clear(h.fields[:h.n])
	clear(h.peek[:cap(h.peek)])
	h.n, h.peek = 0, h.peek[:0]
}

var http11 = []byte("HTTP/1.1")

func (h *switchHead) Protocol() []byte { return http11 }

func (h *switchHead) PeekAll(name string) [][]byte {
	h.peek = h.peek[:0]
	for i := 0; i < h.n; i++ {
		if equalFold(h.fields[i][0], name) {
			h.peek = append(h.peek, h.fields[i][1])
		}
	}
	return h.peek
}

func (h *switchHead) All() iter.Seq2[[]byte, []byte] {
	return func(yield func([]byte, []byte) bool) {
		for i := 0; i < h.n; i++ {
			if !yield(h.fields[i][0], h.fields[i][1]) {
				return
			}
		}
	}
}

// parse reads b's head if it is a plain HTTP/1.1 101 and returns its
// length, or 0 when it is not, for fasthttp to read: a head not all in b,
// bare LF line ends, folded lines, a space before a colon, a byte outside
// RFC 9110's field syntax, more than maxSwitchFields fields, and the
// fields fasthttp keeps apart or frames a body by (Content-*, Trailer,
// Transfer-Encoding, a repeated or empty Server, "Connection: close").
func (h *switchHead) parse(b []byte) int {
	h.n = 0
	if len(b) < len(switchStatus)+2 || string(b[:len(switchStatus)]) != switchStatus {
		return 0
	}
	i := len(switchStatus)
	switch b[i] {
	case ' ':
		for i++; i < len(b) && b[i] != '\r'; i++ {
			if !fieldValueByte[b[i]] {
				return 0
			}
		}
	case '\r':
	default:
		return 0
	}
	if i+1 >= len(b) || b[i+1] != '\n' {
		return 0
	}
	i += 2
	server := false
	for {
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
		if h.n == maxSwitchFields {
			return 0
		}
		j := i
		for j < len(b) && tokenChar[b[j]] {
			j++
		}
		if j == i || j >= len(b) || b[j] != ':' {
			return 0
		}
		name := b[i:j]
		k := j + 1
		for k < len(b) && b[k] != '\r' {
			if !fieldValueByte[b[k]] {
				return 0
			}
			k++
		}
		if k+1 >= len(b) || b[k+1] != '\n' {
			return 0
		}
		value := trimSPHT(b[j+1 : k])
		switch lower(name[0]) {
		case 'c':
			if len(name) >= 8 && equalFold(name[:8], "content-") ||
				equalFold(name, "connection") && string(value) == "close" {
				return 0
			}
		case 's':
			if equalFold(name, "server") {
				if server || len(value) == 0 {
					return 0
				}
				server = true
			}
		case 't':
			if equalFold(name, "trailer") || equalFold(name, "transfer-encoding") {
				return 0
			}
		}
		h.fields[h.n] = [2][]byte{name, value}
		h.n++
		i = k + 2
	}
}

// fieldValueByte marks the bytes of a field value (RFC 9110 §5.5):
// visible ASCII, obs-text, space and tab.
var fieldValueByte = func() (t [256]bool) {
	for c := 0x20; c < 0x100; c++ {
		t[c] = c != 0x7f
	}
	t['\t'] = true
	return t
}()

func trimSPHT(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
