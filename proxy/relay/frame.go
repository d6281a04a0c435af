// Package relay moves WebSocket frames between a client and a backend without
// decoding them.
//
// The work is split in two. Tracker (this file) is a pure state machine over
// byte slices: it finds frame boundaries in one direction's stream, checks
// each header against RFC 6455 and stops after every control frame so the
// driver can look at it. It performs no I/O and never allocates, so the code
// that drives it (a goroutine per direction today, an event loop later) can
// change without touching it. Payload bytes, masks included, are never
// rewritten: they are forwarded exactly as they arrived, which is what lets
// extensions such as permessage-deflate pass end to end.
package relay

import "encoding/binary"

// WebSocket opcodes (RFC 6455 §5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Close codes the proxy itself sends (RFC 6455 §7.4.1 and the IANA registry).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseNoStatus        = 1005 // never on the wire: "no code in the frame"
	CloseAbnormal        = 1006 // never on the wire: "no close frame at all"
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseTooBig          = 1009
	CloseInternalError   = 1011
	CloseServiceRestart  = 1012
	CloseBadGateway      = 1014
	maxControlPayload    = 125
	maxHeaderLen         = 14
	maxControlFrameBytes = 2 + 4 + maxControlPayload
)

// Bits of a frame's first byte.
const (
	bitFIN  = 0x80
	RSV1    = 0x40
	RSV2    = 0x20
	RSV3    = 0x10
	rsvMask = RSV1 | RSV2 | RSV3
)

// MaxCarry is the most bytes a Tracker can ask the driver to hold between
// reads: an incomplete data frame header, or an incomplete control frame
// (which is always passed to the driver whole).
const MaxCarry = maxControlFrameBytes

// Header is a parsed frame header.
type Header struct {
	Fin    bool
	RSV    byte // the RSV1..3 bits, in place (RSV1 = 0x40)
	Opcode byte
	Masked bool
	Mask   [4]byte
	Length uint64
	// Len is the header's size on the wire, 2 to 14 bytes.
	Len int
}

// IsControl reports whether the frame is a control frame (close, ping, pong).
func (h *Header) IsControl() bool { return h.Opcode&0x8 != 0 }

// ParseHeader parses the frame header at the start of b. ok is false when b
// holds only part of a header; nothing is consumed then.
func ParseHeader(b []byte) (h Header, ok bool) {
	if len(b) < 2 {
		return h, false
	}
	b0, b1 := b[0], b[1]
	h.Fin = b0&bitFIN != 0
	h.RSV = b0 & rsvMask
	h.Opcode = b0 & 0x0F
	h.Masked = b1&0x80 != 0
	n := 2
	switch l := b1 & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, false
		}
		h.Length = uint64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, false
		}
		h.Length = binary.BigEndian.Uint64(b[2:10])
		n = 10
	default:
		h.Length = uint64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, false
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	h.Len = n
	return h, true
}

// Violation is a protocol error found in a stream: the close code to send to
// both sides and a short reason. The zero value means none.
type Violation struct {
	Code   uint16
	Reason string
}

// Rules are the checks a Tracker applies to one direction.
type Rules struct {
	// Masked says every frame must be masked (client to server) or none may
	// be (server to client).
	Masked bool
	// AllowedRSV holds the RSV bits the negotiated extensions may set.
	AllowedRSV byte
	// DeflateOnly is set when permessage-deflate is the only extension, so
	// RSV1 is further limited to the first frame of a data message.
	DeflateOnly bool
	// MaxFrame and MaxMessage limit payload sizes (close 1009); 0 is no limit.
	MaxFrame   uint64
	MaxMessage uint64
}

// Event says why Advance stopped.
type Event uint8

const (
	// EvNone: Advance scanned as far as it could.
	EvNone Event = iota
	// EvControl: the forwardable prefix ends with a whole control frame,
	// whose header is Tracker.Control and whose payload is the last
	// Control.Length bytes of the prefix.
	EvControl
	// EvViolation: the bytes right after the prefix start a frame that
	// breaks the rules; Tracker.Violation says how. Nothing past the prefix
	// may be forwarded.
	EvViolation
	// EvLimit: Limited is set, Budget is 0, and the bytes right after the
	// prefix start a new data message or a ping. Nothing of it has been
	// accepted: the driver may present those bytes again once it has
	// raised Budget.
	EvLimit
)

// Tracker follows the frames of one direction. Its zero value with Rules set
// is ready; it must not be copied after use.
type Tracker struct {
	Rules Rules

	remaining uint64 // payload bytes left in the current data frame
	inMessage bool   // a fragmented data message is open
	msgLen    uint64 // payload bytes of the open message so far
	Control   Header // the control frame of the last EvControl
	Violation Violation
	Frames    uint64 // frames whose header has been accepted
	Messages  uint64 // data messages completed (final fragment seen)
	violated  bool

	// Limited makes every new data message take one from Budget as its
	// first frame is accepted (and every ping, whole), and Advance stop
	// with EvLimit before a new message or ping when Budget is 0. The
	// driver sets Budget from its token buckets before each Advance, so a
	// rate limit costs a decrement per message, not a stop per message.
	Limited bool
	Budget  uint64
}

// AtBoundary reports whether everything forwarded so far ends on a frame
// boundary, so a frame of the proxy's own may be inserted.
func (t *Tracker) AtBoundary() bool { return t.remaining == 0 }

// Advance scans b, which must continue the stream exactly where the previous
// call's forwardable prefix ended. It returns the length of the prefix of b
// that may be forwarded now, and why it stopped. When it returns EvNone with
// fwd < len(b), the rest of b is an incomplete header or control frame (at
// most MaxCarry bytes) that must be presented again, followed by more data.
func (t *Tracker) Advance(b []byte) (fwd int, ev Event) {
	if t.violated {
		return 0, EvViolation
	}
	for fwd < len(b) {
		if t.remaining > 0 {
			n := uint64(len(b) - fwd)
			if n > t.remaining {
				n = t.remaining
			}
			t.remaining -= n
			fwd += int(n)
			continue
		}
		h, ok := ParseHeader(b[fwd:])
		if !ok {
			return fwd, EvNone
		}
		if v := t.check(&h); v.Code != 0 {
			t.violated = true
			t.Violation = v
			return fwd, EvViolation
		}
		if h.IsControl() {
			end := h.Len + int(h.Length)
			if len(b)-fwd < end {
				return fwd, EvNone // hand control frames over whole
			}
			if t.Limited && h.Opcode == OpPing {
				// A ping makes the peer answer, so it is a message to
				// the limit; a pong answers one (the proxy's own pings
				// included) and is free.
				if t.Budget == 0 {
					return fwd, EvLimit
				}
				t.Budget--
			}
			t.Frames++
			t.Control = h
			return fwd + end, EvControl
		}
		if t.Limited && h.Opcode != OpContinuation {
			if t.Budget == 0 {
				return fwd, EvLimit
			}
			t.Budget--
		}
		t.Frames++
		t.accept(&h)
		fwd += h.Len
		t.remaining = h.Length
	}
	return fwd, EvNone
}

// accept records a valid data frame's effect on message state.
func (t *Tracker) accept(h *Header) {
	if h.Opcode != OpContinuation {
		t.msgLen = 0
	}
	t.msgLen += h.Length
	t.inMessage = !h.Fin
	if h.Fin {
		t.Messages++
	}
}

func (t *Tracker) check(h *Header) Violation {
	r := &t.Rules
	switch h.Opcode {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return Violation{CloseProtocolError, "reserved opcode"}
	}
	if h.RSV&^r.AllowedRSV != 0 {
		return Violation{CloseProtocolError, "reserved bits set"}
	}
	if r.DeflateOnly && h.RSV != 0 && (h.IsControl() || h.Opcode == OpContinuation) {
		return Violation{CloseProtocolError, "RSV1 on a frame that cannot be compressed"}
	}
	if h.Masked != r.Masked {
		if r.Masked {
			return Violation{CloseProtocolError, "unmasked frame from client"}
		}
		return Violation{CloseProtocolError, "masked frame from server"}
	}
	if h.Length>>63 != 0 {
		return Violation{CloseProtocolError, "frame length has its top bit set"}
	}
	// RFC 6455 §5.2: the length in the fewest bytes that hold it.
	// Browsers refuse anything else, so a peer that does it is broken.
	lenBytes := h.Len - 2
	if h.Masked {
		lenBytes -= 4
	}
	if lenBytes == 2 && h.Length < 126 || lenBytes == 8 && h.Length <= 0xFFFF {
		return Violation{CloseProtocolError, "frame length not in its shortest form"}
	}
	if h.IsControl() {
		if !h.Fin {
			return Violation{CloseProtocolError, "fragmented control frame"}
		}
		if h.Length > maxControlPayload {
			return Violation{CloseProtocolError, "control frame longer than 125 bytes"}
		}
		if h.Opcode == OpClose && h.Length == 1 {
			return Violation{CloseProtocolError, "close frame with a 1-byte payload"}
		}
		return Violation{}
	}
	if h.Opcode == OpContinuation && !t.inMessage {
		return Violation{CloseProtocolError, "continuation frame outside a message"}
	}
	if h.Opcode != OpContinuation && t.inMessage {
		return Violation{CloseProtocolError, "new message inside a fragmented one"}
	}
	if r.MaxFrame > 0 && h.Length > r.MaxFrame {
		return Violation{CloseTooBig, "frame too big"}
	}
	if r.MaxMessage > 0 {
		total := h.Length
		if h.Opcode == OpContinuation {
			total += t.msgLen
		}
		if total > r.MaxMessage {
			return Violation{CloseTooBig, "message too big"}
		}
	}
	return Violation{}
}

// ClosePayload returns the code and reason of a whole close frame (header and
// payload in frame), unmasking into dst without touching frame. A close frame
// without a payload yields CloseNoStatus.
func ClosePayload(frame []byte, h *Header, dst []byte) (code uint16, reason []byte) {
	p := frame[h.Len : h.Len+int(h.Length)]
	if len(p) < 2 {
		return CloseNoStatus, nil
	}
	dst = append(dst[:0], p...)
	if h.Masked {
		for i := range dst {
			dst[i] ^= h.Mask[i&3]
		}
	}
	return binary.BigEndian.Uint16(dst[:2]), dst[2:]
}

// CloseCode returns the code of a whole close frame (header and payload in
// frame) without copying it; CloseNoStatus if it has none.
func CloseCode(frame []byte, h *Header) uint16 {
	if h.Length < 2 {
		return CloseNoStatus
	}
	p := frame[h.Len:]
	if h.Masked {
		return uint16(p[0]^h.Mask[0])<<8 | uint16(p[1]^h.Mask[1])
	}
	return binary.BigEndian.Uint16(p)
}

// ValidCloseCode reports whether code may appear in a close frame on the wire
// (RFC 6455 §7.4).
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != CloseNoStatus && code != CloseAbnormal
	}
	return false
}

// AppendFrame appends a whole frame with a payload of at most 125 bytes (a
// control frame, or the proxy's own close frame). A non-zero mask key masks
// the payload, as a client must.
func AppendFrame(dst []byte, opcode byte, payload []byte, mask [4]byte, masked bool) []byte {
	b1 := byte(len(payload))
	if masked {
		b1 |= 0x80
	}
	dst = append(dst, bitFIN|opcode, b1)
	if masked {
		dst = append(dst, mask[:]...)
	}
	start := len(dst)
	dst = append(dst, payload...)
	if masked {
		for i := range payload {
			dst[start+i] ^= mask[i&3]
		}
	}
	return dst
}

// AppendClose appends a close frame with code and reason (the reason is cut
// to fit the 125-byte limit).
func AppendClose(dst []byte, code uint16, reason string, mask [4]byte, masked bool) []byte {
	var p [maxControlPayload]byte
	binary.BigEndian.PutUint16(p[:2], code)
	n := 2 + copy(p[2:], reason)
	return AppendFrame(dst, OpClose, p[:n], mask, masked)
}
