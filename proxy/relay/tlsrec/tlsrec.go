// Package tlsrec is a TLS 1.3 record layer (RFC 8446 §5) for connections
// whose handshake crypto/tls performed: it seals and opens records over
// byte slices the caller owns, derives traffic keys from the handshake's
// traffic secrets, and steps them on KeyUpdate. It does no I/O and keeps
// no AEAD: a direction's state is its secret, key, IV and sequence number
// (tens of bytes), so that a connection with nothing in flight costs
// almost nothing; the caller builds AEADs when records move and may cache
// them.
package tlsrec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"hash"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// Suite is a TLS 1.3 cipher suite, by its IANA number.
type Suite uint16

// The TLS 1.3 suites this layer implements (crypto/tls's, which are the
// ones it can negotiate).
const (
	AES128GCMSHA256        Suite = 0x1301
	AES256GCMSHA384        Suite = 0x1302
	CHACHA20POLY1305SHA256 Suite = 0x1303
)

// Supported reports whether s is one of the suites above.
func (s Suite) Supported() bool {
	return s == AES128GCMSHA256 || s == AES256GCMSHA384 || s == CHACHA20POLY1305SHA256
}

func (s Suite) hash() func() hash.Hash {
	if s == AES256GCMSHA384 {
		return sha512.New384
	}
	return sha256.New
}

// SecretLen is the length of s's traffic secrets (its hash's size).
func (s Suite) SecretLen() int {
	if s == AES256GCMSHA384 {
		return 48
	}
	return 32
}

func (s Suite) keyLen() int {
	if s == AES128GCMSHA256 {
		return 16
	}
	return 32
}

// Record sizes (RFC 8446 §5.1, §5.2). Every supported suite has a 16-byte
// tag; the inner plaintext carries one more byte, its content type.
const (
	HeaderLen     = 5
	TagLen        = 16
	MaxPlaintext  = 1 << 14
	MaxCiphertext = 1<<14 + 256
	MaxRecord     = HeaderLen + MaxCiphertext
	// Overhead is what Seal adds to a plaintext: header, type, tag.
	Overhead = HeaderLen + 1 + TagLen
)

// Content types.
const (
	TypeChangeCipherSpec = 20
	TypeAlert            = 21
	TypeHandshake        = 22
	TypeApplicationData  = 23
)

// Alert is a TLS alert description (RFC 8446 §6).
type Alert uint8

const (
	AlertCloseNotify       Alert = 0
	AlertUnexpectedMessage Alert = 10
	AlertBadRecordMAC      Alert = 20
	AlertRecordOverflow    Alert = 22
	AlertIllegalParameter  Alert = 47
	AlertDecodeError       Alert = 50
	AlertProtocolVersion   Alert = 70
	AlertInternalError     Alert = 80
	AlertUserCanceled      Alert = 90
)

// Error is a failure that ends the connection with the alert to send.
type Error struct {
	Alert Alert
	Msg   string
}

func (e *Error) Error() string { return "tls: " + e.Msg }

var (
	errUnexpectedType = &Error{AlertUnexpectedMessage, "unexpected record type after the handshake"}
	errVersion        = &Error{AlertProtocolVersion, "record version is not 0x0303"}
	errOverflow       = &Error{AlertRecordOverflow, "record too large"}
	errBadMAC         = &Error{AlertBadRecordMAC, "record failed to authenticate"}
	errNoType         = &Error{AlertUnexpectedMessage, "record has no content type"}
	errSeqExhausted   = &Error{AlertInternalError, "record sequence number exhausted"}
)

// Dir is one direction's traffic state. The zero Dir is unusable; make one
// with NewDir. It is not safe for concurrent use.
type Dir struct {
	Suite  Suite
	Seq    uint64 // the next record's sequence number
	secret [48]byte
	key    [32]byte
	iv     [12]byte
	nonce  [12]byte // built here, not on the stack: an AEAD's argument escapes
}

// NewDir returns the state of a direction whose current traffic secret is
// secret, with seq records already protected under it.
func NewDir(s Suite, secret []byte, seq uint64) (Dir, error) {
	if !s.Supported() {
		return Dir{}, errors.New("tlsrec: unsupported cipher suite")
	}
	if len(secret) != s.SecretLen() {
		return Dir{}, errors.New("tlsrec: traffic secret has the wrong length")
	}
	d := Dir{Suite: s, Seq: seq}
	copy(d.secret[:], secret)
	if err := d.derive(); err != nil {
		return Dir{}, err
	}
	return d, nil
}

// derive sets key and IV from the secret (RFC 8446 §7.3).
func (d *Dir) derive() error {
	key, err := expandLabel(d.Suite, d.secret[:d.Suite.SecretLen()], "key", d.Suite.keyLen())
	if err != nil {
		return err
	}
	iv, err := expandLabel(d.Suite, d.secret[:d.Suite.SecretLen()], "iv", len(d.iv))
	if err != nil {
		return err
	}
	copy(d.key[:], key)
	copy(d.iv[:], iv)
	clear(key)
	clear(iv)
	return nil
}

// Update moves to the next traffic secret, as after a KeyUpdate
// (RFC 8446 §7.2), and restarts the sequence at 0.
func (d *Dir) Update() error {
	n := d.Suite.SecretLen()
	next, err := expandLabel(d.Suite, d.secret[:n], "traffic upd", n)
	if err != nil {
		return err
	}
	copy(d.secret[:], next)
	clear(next)
	d.Seq = 0
	return d.derive()
}

// Zero wipes the secrets; the Dir is unusable afterwards.
func (d *Dir) Zero() { *d = Dir{} }

// Key returns the current write key (for tests and for AEAD caches that
// tell keys apart); it aliases the Dir.
func (d *Dir) Key() []byte { return d.key[:d.Suite.keyLen()] }

// NewAEAD returns an AEAD for the current key. It allocates (about 1 KB
// for AES-GCM): callers that keep many idle directions build it on demand.
func (d *Dir) NewAEAD() (cipher.AEAD, error) {
	k := d.Key()
	if d.Suite == CHACHA20POLY1305SHA256 {
		return chacha20poly1305.New(k)
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Nonce returns the per-record nonce for sequence number seq (§5.3); it
// aliases the Dir and is valid until the next call.
func (d *Dir) Nonce(seq uint64) []byte {
	d.nonce = d.iv
	for i := 0; i < 8; i++ {
		d.nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
	return d.nonce[:]
}

// RecordLen reads the header at the start of b: the whole record's length
// (header included), or 0 if b holds less than a header. A header no
// record after a TLS 1.3 handshake may have is an error.
func RecordLen(b []byte) (int, error) {
	if len(b) < HeaderLen {
		return 0, nil
	}
	if b[0] != TypeApplicationData {
		// Alerts and handshake messages travel encrypted now; a
		// change_cipher_spec is allowed only during the handshake.
		return 0, errUnexpectedType
	}
	if b[1] != 3 || b[2] != 3 {
		return 0, errVersion
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if n > MaxCiphertext {
		return 0, errOverflow
	}
	return HeaderLen + n, nil
}

// Open authenticates and decrypts one whole record in place, as record
// number d.Seq, and advances d.Seq. It returns the inner content type and
// the plaintext, which aliases rec. On error rec is garbage and d.Seq is
// unchanged.
func Open(a cipher.AEAD, d *Dir, rec []byte) (typ uint8, plaintext []byte, err error) {
	if len(rec) < HeaderLen+1+TagLen {
		return 0, nil, errBadMAC // too short to hold a tag and a type
	}
	if d.Seq == ^uint64(0) {
		return 0, nil, errSeqExhausted
	}
	body := rec[HeaderLen:]
	pt, err := a.Open(body[:0], d.Nonce(d.Seq), body, rec[:HeaderLen])
	if err != nil {
		return 0, nil, errBadMAC
	}
	d.Seq++
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 { // padding (§5.4)
		i--
	}
	if i < 0 {
		return 0, nil, errNoType
	}
	if i > MaxPlaintext {
		return 0, nil, errOverflow
	}
	return pt[i], pt[:i], nil
}

// Seal appends one record of type typ carrying plaintext (at most
// MaxPlaintext bytes, no padding), protected as record number d.Seq, to
// dst and advances d.Seq. dst must not overlap plaintext.
func Seal(dst []byte, a cipher.AEAD, d *Dir, typ uint8, plaintext []byte) []byte {
	n := len(plaintext) + 1 + TagLen
	off := len(dst)
	// Room for the tag too, so that the AEAD seals in place.
	dst = slices.Grow(dst, HeaderLen+n)
	dst = append(dst, TypeApplicationData, 3, 3, byte(n>>8), byte(n))
	dst = append(dst, plaintext...)
	dst = append(dst, typ)
	body := dst[off+HeaderLen:]
	ct := a.Seal(body[:0], d.Nonce(d.Seq), body, dst[off:off+HeaderLen])
	d.Seq++
	return dst[:off+HeaderLen+len(ct)]
}

// IsUserCanceled reports whether an alert record's content is
// user_canceled, the one alert besides close_notify that is not fatal
// (§6.1), whatever level it claims.
func IsUserCanceled(msg []byte) bool {
	return len(msg) == 2 && Alert(msg[1]) == AlertUserCanceled
}

// KeyUpdate messages (§4.6.3), each a whole handshake record's content.
var (
	KeyUpdateNotRequested = []byte{24, 0, 0, 1, 0}
	KeyUpdateRequested    = []byte{24, 0, 0, 1, 1}
)

// ParseKeyUpdate judges the content of a handshake record after the
// handshake: a server that asked for no client certificate accepts only a
// KeyUpdate, which must end its record (§5.1). It reports whether the
// peer asked for ours.
func ParseKeyUpdate(msg []byte) (requested bool, err error) {
	if len(msg) < 4 || msg[0] != 24 {
		return false, &Error{AlertUnexpectedMessage, "unexpected handshake message after the handshake"}
	}
	if len(msg) != 5 || msg[1] != 0 || msg[2] != 0 || msg[3] != 1 {
		return false, &Error{AlertDecodeError, "malformed KeyUpdate"}
	}
	switch msg[4] {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, &Error{AlertIllegalParameter, "KeyUpdate request_update is neither 0 nor 1"}
}

// expandLabel is HKDF-Expand-Label (§7.1) with an empty context.
func expandLabel(s Suite, secret []byte, label string, length int) ([]byte, error) {
	info := make([]byte, 0, 2+1+6+len(label)+1)
	info = append(info, byte(length>>8), byte(length), byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	return hkdf.Expand(s.hash(), secret, string(info), length)
}

// Next opens the first record in b if b holds it whole: it returns the
// record's length n (0 if b holds less, and then nothing else), its inner
// content type and its plaintext, decrypted in place. a may be nil when b
// holds no whole record; the caller gets it only when one is there.
func Next(a func() cipher.AEAD, d *Dir, b []byte) (n int, typ uint8, plaintext []byte, err error) {
	n, err = RecordLen(b)
	if err != nil || n == 0 || n > len(b) {
		return 0, 0, nil, err
	}
	typ, plaintext, err = Open(a(), d, b[:n])
	return n, typ, plaintext, err
}
