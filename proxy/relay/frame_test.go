package relay

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

// frame builds one wire frame; tests use it where AppendFrame's 125-byte
// limit is too small.
func frame(fin bool, rsv, op byte, payload []byte, masked bool, mask [4]byte) []byte {
	b0 := rsv | op
	if fin {
		b0 |= bitFIN
	}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xFFFF:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if masked {
		out = append(out, mask[:]...)
	}
	start := len(out)
	out = append(out, payload...)
	if masked {
		for i := range payload {
			out[start+i] ^= mask[i&3]
		}
	}
	return out
}

// bits turns a bit-string fixture such as "1000_0001 0000_0101" into bytes.
func bits(s string) []byte {
	s = strings.NewReplacer(" ", "", "_", "").Replace(s)
	out := make([]byte, len(s)/8)
	for i := range out {
		for j := 0; j < 8; j++ {
			out[i] <<= 1
			if s[i*8+j] == '1' {
				out[i] |= 1
			}
		}
	}
	return out
}

func TestParseHeaderFixtures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   string
		want Header
	}{
		{"text 5 unmasked", "1000_0001 0000_0101", Header{Fin: true, Opcode: OpText, Length: 5, Len: 2}},
		{"binary 126 ext16", "1000_0010 0111_1110 0000_0000 0111_1110", Header{Fin: true, Opcode: OpBinary, Length: 126, Len: 4}},
		{"cont 65536 ext64", "0000_0000 0111_1111 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000",
			Header{Opcode: OpContinuation, Length: 65536, Len: 10}},
		{"masked ping", "1000_1001 1000_0000 00000001 00000010 00000011 00000100",
			Header{Fin: true, Opcode: OpPing, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Len: 6}},
		{"rsv1 text", "1100_0001 0000_0000", Header{Fin: true, RSV: RSV1, Opcode: OpText, Len: 2}},
	}
	for _, c := range cases {
		b := bits(c.in)
		h, ok := ParseHeader(b)
		if !ok || h != c.want {
			t.Errorf("%s: got %+v ok=%v, want %+v", c.name, h, ok, c.want)
		}
		for i := 0; i < len(b); i++ {
			if _, ok := ParseHeader(b[:i]); ok {
				t.Errorf("%s: header parsed from %d of %d bytes", c.name, i, len(b))
			}
		}
	}
}

func TestHeaderRoundTripRandom(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 70000}
	for i := 0; i < 3000; i++ {
		n := sizes[r.IntN(len(sizes))]
		masked := r.IntN(2) == 0
		mask := [4]byte{byte(r.Uint32()), 1, 2, 3}
		op := []byte{OpText, OpBinary, OpContinuation}[r.IntN(3)]
		fin := r.IntN(2) == 0
		f := frame(fin, 0, op, make([]byte, n), masked, mask)
		h, ok := ParseHeader(f)
		if !ok || h.Length != uint64(n) || h.Masked != masked || h.Opcode != op || h.Fin != fin || h.Len+n != len(f) {
			t.Fatalf("round trip %d/%v/%d: %+v", n, masked, op, h)
		}
		if masked && h.Mask != mask {
			t.Fatalf("mask %v != %v", h.Mask, mask)
		}
	}
}

func clientRules() Rules { return Rules{Masked: true} }

func TestTrackerViolations(t *testing.T) {
	t.Parallel()
	m := [4]byte{9, 8, 7, 6}
	cases := []struct {
		name   string
		rules  Rules
		stream []byte
		code   uint16
	}{
		{"reserved opcode 3", clientRules(), frame(true, 0, 3, nil, true, m), CloseProtocolError},
		{"reserved opcode 0xB", clientRules(), frame(true, 0, 0xB, nil, true, m), CloseProtocolError},
		{"rsv1 without extension", clientRules(), frame(true, RSV1, OpText, nil, true, m), CloseProtocolError},
		{"rsv2 with deflate", Rules{Masked: true, AllowedRSV: RSV1, DeflateOnly: true}, frame(true, RSV2, OpText, nil, true, m), CloseProtocolError},
		{"rsv1 on continuation with deflate", Rules{Masked: true, AllowedRSV: RSV1, DeflateOnly: true},
			append(frame(false, RSV1, OpText, []byte("a"), true, m), frame(true, RSV1, OpContinuation, []byte("b"), true, m)...), CloseProtocolError},
		{"rsv1 on ping with deflate", Rules{Masked: true, AllowedRSV: RSV1, DeflateOnly: true}, frame(true, RSV1, OpPing, nil, true, m), CloseProtocolError},
		{"unmasked from client", clientRules(), frame(true, 0, OpText, []byte("x"), false, m), CloseProtocolError},
		{"masked from server", Rules{}, frame(true, 0, OpText, []byte("x"), true, m), CloseProtocolError},
		{"fragmented ping", clientRules(), frame(false, 0, OpPing, nil, true, m), CloseProtocolError},
		{"long ping", clientRules(), frame(true, 0, OpPing, make([]byte, 126), true, m), CloseProtocolError},
		{"close 1 byte", clientRules(), frame(true, 0, OpClose, []byte{3}, true, m), CloseProtocolError},
		{"lone continuation", clientRules(), frame(true, 0, OpContinuation, []byte("x"), true, m), CloseProtocolError},
		{"text inside fragmented", clientRules(),
			append(frame(false, 0, OpText, []byte("a"), true, m), frame(true, 0, OpText, []byte("b"), true, m)...), CloseProtocolError},
		{"top bit length", clientRules(), bits("1000_0010 1111_1111 10000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000"), CloseProtocolError},
		{"16-bit length under 126", clientRules(), append(bits("1000_0010 1111_1110 00000000 00000101 00001001 00001000 00000111 00000110"), make([]byte, 5)...), CloseProtocolError},
		{"64-bit length under 65536", Rules{}, append(bits("1000_0010 0111_1111 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00010000"), make([]byte, 16)...), CloseProtocolError},
		{"64-bit length of 65535", clientRules(), append(bits("1000_0010 1111_1111 00000000 00000000 00000000 00000000 00000000 00000000 11111111 11111111 00001001 00001000 00000111 00000110"), make([]byte, 65535)...), CloseProtocolError},
		{"frame over limit", Rules{Masked: true, MaxFrame: 10}, frame(true, 0, OpBinary, make([]byte, 11), true, m), CloseTooBig},
		{"message over limit", Rules{Masked: true, MaxMessage: 10},
			append(frame(false, 0, OpBinary, make([]byte, 6), true, m), frame(true, 0, OpContinuation, make([]byte, 6), true, m)...), CloseTooBig},
	}
	for _, c := range cases {
		tr := Tracker{Rules: c.rules}
		b := c.stream
		var ev Event
		for len(b) > 0 {
			var n int
			n, ev = tr.Advance(b)
			if ev == EvViolation || n == 0 {
				break
			}
			b = b[n:]
		}
		if ev != EvViolation || tr.Violation.Code != c.code {
			t.Errorf("%s: event %v violation %+v, want code %d", c.name, ev, tr.Violation, c.code)
		}
	}
}

func TestTrackerAcceptsValidStreams(t *testing.T) {
	t.Parallel()
	m := [4]byte{1, 2, 3, 4}
	var s []byte
	s = append(s, frame(false, RSV1, OpText, []byte("hel"), true, m)...)
	s = append(s, frame(true, 0, OpPing, []byte("p"), true, m)...)
	s = append(s, frame(false, 0, OpContinuation, []byte("lo "), true, m)...)
	s = append(s, frame(true, 0, OpPong, nil, true, m)...)
	s = append(s, frame(true, 0, OpContinuation, []byte("world"), true, m)...)
	s = append(s, frame(true, 0, OpBinary, make([]byte, 70000), true, m)...)
	s = append(s, frame(true, 0, OpClose, []byte{0x03, 0xE8, 'o', 'k'}, true, m)...)
	rules := Rules{Masked: true, AllowedRSV: RSV1, DeflateOnly: true}

	// Whole, then split at every position: the forwarded bytes and events
	// must not depend on how the stream was cut.
	for cut := 0; cut <= len(s); cut += 1 + cut/7 {
		tr := Tracker{Rules: rules}
		var out []byte
		var controls []byte
		pending := []byte(nil)
		for _, chunk := range [][]byte{s[:cut], s[cut:]} {
			b := append(pending, chunk...)
			for len(b) > 0 {
				n, ev := tr.Advance(b)
				out = append(out, b[:n]...)
				b = b[n:]
				if ev == EvControl {
					controls = append(controls, tr.Control.Opcode)
					continue
				}
				if ev == EvViolation {
					t.Fatalf("cut %d: violation %+v", cut, tr.Violation)
				}
				break
			}
			pending = append([]byte(nil), b...)
		}
		if len(pending) != 0 || !bytes.Equal(out, s) {
			t.Fatalf("cut %d: forwarded %d of %d bytes, %d pending", cut, len(out), len(s), len(pending))
		}
		if string(controls) != string([]byte{OpPing, OpPong, OpClose}) {
			t.Fatalf("cut %d: controls %v", cut, controls)
		}
		if tr.Frames != 7 || tr.Messages != 2 {
			t.Fatalf("cut %d: frames %d messages %d", cut, tr.Frames, tr.Messages)
		}
	}
}

func TestClosePayloadAndCodes(t *testing.T) {
	t.Parallel()
	m := [4]byte{0xAA, 0xBB, 0xCC, 0xDD}
	f := AppendClose(nil, 4000, "bye", m, true)
	h, ok := ParseHeader(f)
	if !ok {
		t.Fatal("no header")
	}
	code, reason := ClosePayload(f, &h, nil)
	if code != 4000 || string(reason) != "bye" {
		t.Fatalf("got %d %q", code, reason)
	}
	long := AppendClose(nil, 1000, strings.Repeat("x", 300), m, false)
	if h, _ := ParseHeader(long); h.Length != maxControlPayload {
		t.Fatalf("reason not cut: %d", h.Length)
	}
	for code, want := range map[uint16]bool{999: false, 1000: true, 1004: false, 1005: false, 1006: false, 1011: true, 1014: true, 1015: false, 2999: false, 3000: true, 4999: true, 5000: false} {
		if ValidCloseCode(code) != want {
			t.Errorf("ValidCloseCode(%d) != %v", code, want)
		}
	}
}

// FuzzTracker feeds arbitrary streams in two pieces. The tracker must never
// panic, never forward more than it was given, never ask to carry more than
// MaxCarry, and agree with itself however the stream is cut.
func FuzzTracker(f *testing.F) {
	m := [4]byte{1, 2, 3, 4}
	f.Add(frame(true, 0, OpText, []byte("hello"), true, m), uint16(3), true)
	f.Add(append(frame(false, 0, OpBinary, make([]byte, 300), true, m), frame(true, 0, OpPing, []byte("x"), true, m)...), uint16(5), true)
	f.Add(frame(true, 0, OpClose, []byte{3, 232}, false, m), uint16(1), false)
	f.Add(bits("1000_0010 0111_1111 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000"), uint16(4), false)
	f.Add([]byte{0x83, 0x80, 0, 0, 0, 0}, uint16(0), true)
	f.Fuzz(func(t *testing.T, s []byte, cut uint16, masked bool) {
		rules := Rules{Masked: masked, AllowedRSV: RSV1}
		whole := Tracker{Rules: rules}
		var a []byte
		b := s
		for len(b) > 0 {
			n, ev := whole.Advance(b)
			if n > len(b) {
				t.Fatalf("forwarded %d of %d", n, len(b))
			}
			a = append(a, b[:n]...)
			b = b[n:]
			if ev != EvControl {
				break
			}
		}
		if whole.Violation.Code == 0 && len(b) > MaxCarry {
			t.Fatalf("carry of %d bytes", len(b))
		}
		c := int(cut) % (len(s) + 1)
		split := Tracker{Rules: rules}
		var out, pending []byte
		for _, chunk := range [][]byte{s[:c], s[c:]} {
			buf := append(pending, chunk...)
			for len(buf) > 0 {
				n, ev := split.Advance(buf)
				out = append(out, buf[:n]...)
				buf = buf[n:]
				if ev != EvControl {
					break
				}
			}
			pending = append([]byte(nil), buf...)
		}
		if !bytes.Equal(a, out) || whole.Violation != split.Violation {
			t.Fatalf("cut %d: whole forwarded %d (%+v), split %d (%+v)", c, len(a), whole.Violation, len(out), split.Violation)
		}
	})
}

func BenchmarkTrackerAdvance(b *testing.B) {
	m := [4]byte{1, 2, 3, 4}
	var s []byte
	for len(s) < 16<<10 {
		s = append(s, frame(true, 0, OpBinary, make([]byte, 64), true, m)...)
	}
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	tr := Tracker{Rules: clientRules()}
	for b.Loop() {
		buf := s
		for len(buf) > 0 {
			n, _ := tr.Advance(buf)
			if n == 0 {
				break
			}
			buf = buf[n:]
		}
	}
}
