//go:build linux

package relay

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/wsproxy/wsproxy/proxy/relay/tlsrec"
)

// trackFixture is one connection as a Socket sees it: a ClientHello, a
// ServerHello, secrets in the key log, and application keys to seal with.
type trackFixture struct {
	keys           *KeyLog
	tr             *recTrack
	client, server tlsrec.Dir
}

func newTrackFixture(t *testing.T) *trackFixture {
	keys := NewKeyLog()
	f := &trackFixture{keys: keys, tr: &recTrack{keys: keys}}
	random := bytes.Repeat([]byte{0xab}, 32)
	hello := append([]byte{22, 3, 1, 0, 38, 1, 0, 0, 34, 3, 3}, random...)
	f.feed(hello, true, 7)
	sh := append([]byte{22, 3, 3, 0, 42, 2, 0, 0, 38, 3, 3}, bytes.Repeat([]byte{1}, 32)...)
	sh = append(sh, 0, 0x13, 0x01)
	sh[4] = byte(len(sh) - 5)
	f.feed(sh, false, 3)
	cs, ss := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	keys.Write([]byte("CLIENT_HANDSHAKE_TRAFFIC_SECRET " + hex.EncodeToString(random) + " " + hex.EncodeToString(cs) + "\n"))
	keys.Write([]byte("CLIENT_TRAFFIC_SECRET_0 " + hex.EncodeToString(random) + " " + hex.EncodeToString(cs) + "\n"))
	keys.Write([]byte("SERVER_TRAFFIC_SECRET_0 " + hex.EncodeToString(random) + " " + hex.EncodeToString(ss) + "\n"))
	var err error
	if f.client, err = tlsrec.NewDir(tlsrec.AES128GCMSHA256, cs, 0); err != nil {
		t.Fatal(err)
	}
	if f.server, err = tlsrec.NewDir(tlsrec.AES128GCMSHA256, ss, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

// feed passes p through the tracker in pieces of step bytes.
func (f *trackFixture) feed(p []byte, read bool, step int) {
	for len(p) > 0 {
		k := min(step, len(p))
		f.tr.tracked(p[:k], read)
		p = p[k:]
	}
}

func (f *trackFixture) seal(t *testing.T, d *tlsrec.Dir, typ uint8, p []byte) []byte {
	a, err := d.NewAEAD()
	if err != nil {
		t.Fatal(err)
	}
	return tlsrec.Seal(nil, a, d, typ, p)
}

func ticket(n int) []byte {
	return append([]byte{4, byte(n >> 16), byte(n >> 8), byte(n)}, make([]byte, n)...)
}

// TestTrackCountsRecords: the Socket's tracking counts the application
// records each way, session tickets of any length included, and ignores
// those under other keys; what crypto/tls read of a record in part comes
// back for the record layer to finish; the secrets are gone after.
func TestTrackCountsRecords(t *testing.T) {
	f := newTrackFixture(t)
	other, _ := tlsrec.NewDir(tlsrec.AES128GCMSHA256, bytes.Repeat([]byte{9}, 32), 0)
	// The server's flight: a record under its handshake key, then two
	// records of tickets (lengths with every low bit pattern), then the 101.
	flight := f.seal(t, &other, tlsrec.TypeHandshake, []byte{20, 0, 0, 32})
	flight = append(flight, f.seal(t, &f.server, tlsrec.TypeHandshake, append(ticket(117), ticket(200)...))...)
	flight = append(flight, f.seal(t, &f.server, tlsrec.TypeHandshake, ticket(4))...)
	f.feed(flight, false, 1000)
	f.feed(f.seal(t, &f.server, tlsrec.TypeApplicationData, []byte("HTTP/1.1 101")), false, 1000)
	// The client: its Finished under the handshake key, the request, and
	// the first part of a frame's record.
	in := f.seal(t, &other, tlsrec.TypeHandshake, []byte{20, 0, 0, 32})
	in = append(in, f.seal(t, &f.client, tlsrec.TypeApplicationData, []byte("GET / HTTP/1.1"))...)
	next := f.seal(t, &f.client, tlsrec.TypeApplicationData, []byte("a frame"))
	in = append(in, next[:9]...)
	f.feed(in, true, 5)
	rd, wr, partial, ok := f.tr.takeRecords()
	if !ok {
		t.Fatal("records not accounted for")
	}
	if rd.Seq != 1 || wr.Seq != 3 {
		t.Fatalf("read seq %d, write seq %d; want 1 and 3", rd.Seq, wr.Seq)
	}
	if !bytes.Equal(partial, next[:9]) {
		t.Fatalf("partial %x, want %x", partial, next[:9])
	}
	if f.keys.Len() != 0 {
		t.Fatal("secrets kept after the handover")
	}
}

// TestTrackRefuses: anything the tracking cannot account for keeps the
// connection with crypto/tls, and drops the secrets.
func TestTrackRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		do   func(t *testing.T, f *trackFixture)
	}{
		{"a skipped write record", func(t *testing.T, f *trackFixture) {
			f.feed(f.seal(t, &f.server, tlsrec.TypeApplicationData, []byte("a")), false, 100)
			f.server.Seq++ // one record the tracking never saw
			f.feed(f.seal(t, &f.server, tlsrec.TypeApplicationData, []byte("b")), false, 100)
		}},
		{"a client KeyUpdate before the handover", func(t *testing.T, f *trackFixture) {
			f.feed(f.seal(t, &f.client, tlsrec.TypeHandshake, tlsrec.KeyUpdateNotRequested), true, 100)
		}},
		{"a server KeyUpdate before the handover", func(t *testing.T, f *trackFixture) {
			f.feed(f.seal(t, &f.server, tlsrec.TypeHandshake, tlsrec.KeyUpdateNotRequested), false, 100)
		}},
		{"a plaintext alert after the keys", func(t *testing.T, f *trackFixture) {
			f.feed(f.seal(t, &f.client, tlsrec.TypeApplicationData, []byte("x")), true, 100)
			f.feed([]byte{21, 3, 3, 0, 2, 2, 40}, true, 100)
		}},
		{"a write cut in a record", func(t *testing.T, f *trackFixture) {
			f.feed(f.seal(t, &f.server, tlsrec.TypeApplicationData, []byte("abc"))[:10], false, 100)
		}},
		{"TLS 1.2", func(t *testing.T, f *trackFixture) {
			f.keys.Write([]byte("CLIENT_RANDOM " + hex.EncodeToString(f.tr.random[:]) + " 00\n"))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newTrackFixture(t)
			c.do(t, f)
			if _, _, _, ok := f.tr.takeRecords(); ok {
				t.Fatal("handed over")
			}
			if f.keys.Len() != 0 {
				t.Fatal("secrets kept")
			}
		})
	}
}
