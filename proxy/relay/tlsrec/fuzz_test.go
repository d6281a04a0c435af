package tlsrec

import (
	"bytes"
	"crypto/cipher"
	"testing"
)

// FuzzNext feeds arbitrary bytes to the record parser, after records
// sealed with the same key so that the fuzzer reaches the opened paths:
// it must never panic, read outside the input, or return a plaintext over
// 2^14; and the valid prefix must open to what was sealed.
func FuzzNext(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint8(0))
	f.Add([]byte{23, 3, 3, 0, 17}, uint16(5), uint8(1))
	f.Add([]byte{23, 3, 3, 0x40, 0x00, 1, 2, 3}, uint16(16384), uint8(2))
	f.Add([]byte{22, 3, 3, 0, 5, 24, 0, 0, 1, 1}, uint16(0), uint8(0))
	f.Add(bytes.Repeat([]byte{23, 3, 3, 0, 0}, 8), uint16(1), uint8(3))
	f.Add([]byte{21, 3, 3, 0, 2, 2, 20}, uint16(100), uint8(1))
	f.Fuzz(func(t *testing.T, tail []byte, size uint16, count uint8) {
		w, r := testDir(t, AES128GCMSHA256, 9), testDir(t, AES128GCMSHA256, 9)
		aw, _ := w.NewAEAD()
		ar, _ := r.NewAEAD()
		get := func() cipher.AEAD { return ar }
		size %= MaxPlaintext + 1
		count %= 4
		var stream []byte
		for i := 0; i < int(count); i++ {
			stream = Seal(stream, aw, w, TypeApplicationData, bytes.Repeat([]byte{byte(i)}, int(size)))
		}
		stream = append(stream, tail...)
		b := stream
		for i := 0; ; i++ {
			n, typ, pt, err := Next(get, r, b)
			if err != nil || n == 0 {
				if i < int(count) {
					t.Fatalf("sealed record %d did not open: %v", i, err)
				}
				return
			}
			if n > len(b) || len(pt) > MaxPlaintext {
				t.Fatalf("n=%d of %d, plaintext %d", n, len(b), len(pt))
			}
			if i < int(count) && (typ != TypeApplicationData || !bytes.Equal(pt, bytes.Repeat([]byte{byte(i)}, int(size)))) {
				t.Fatalf("record %d opened to something else", i)
			}
			b = b[n:]
		}
	})
}
