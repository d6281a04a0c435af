package tlsrec

import (
	"bytes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

var suites = []Suite{AES128GCMSHA256, AES256GCMSHA384, CHACHA20POLY1305SHA256}

func testDir(t testing.TB, s Suite, fill byte) *Dir {
	t.Helper()
	d, err := NewDir(s, bytes.Repeat([]byte{fill}, s.SecretLen()), 0)
	if err != nil {
		t.Fatal(err)
	}
	return &d
}

func aead(t testing.TB, d *Dir) func() cipher.AEAD {
	return func() cipher.AEAD {
		a, err := d.NewAEAD()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
}

// TestSealOpenRoundTrip: every suite, sizes 0..MaxPlaintext, across a
// KeyUpdate on both ends.
func TestSealOpenRoundTrip(t *testing.T) {
	for _, s := range suites {
		w, r := testDir(t, s, 7), testDir(t, s, 7)
		var buf []byte
		for _, size := range []int{0, 1, 15, 16, 17, 1000, MaxPlaintext - 1, MaxPlaintext} {
			for round := 0; round < 2; round++ {
				pt := bytes.Repeat([]byte{byte(size)}, size)
				buf = Seal(buf[:0], aead(t, w)(), w, TypeApplicationData, pt)
				if len(buf) != size+Overhead {
					t.Fatalf("%x: sealed %d bytes into %d", s, size, len(buf))
				}
				n, typ, got, err := Next(aead(t, r), r, buf)
				if err != nil || n != len(buf) || typ != TypeApplicationData || !bytes.Equal(got, pt) {
					t.Fatalf("%x size %d: n=%d typ=%d err=%v", s, size, n, typ, err)
				}
				if err := w.Update(); err != nil {
					t.Fatal(err)
				}
				if err := r.Update(); err != nil {
					t.Fatal(err)
				}
			}
		}
		// A record for the wrong sequence number does not open.
		buf = Seal(buf[:0], aead(t, w)(), w, TypeApplicationData, []byte("x"))
		r.Seq++
		if _, _, _, err := Next(aead(t, r), r, buf); err != errBadMAC {
			t.Fatalf("%x: wrong seq opened: %v", s, err)
		}
	}
}

func TestRecordLenRejects(t *testing.T) {
	for _, c := range []struct {
		rec   []byte
		alert Alert
	}{
		{[]byte{22, 3, 3, 0, 5}, AlertUnexpectedMessage},
		{[]byte{21, 3, 3, 0, 2}, AlertUnexpectedMessage},
		{[]byte{20, 3, 3, 0, 1}, AlertUnexpectedMessage},
		{[]byte{23, 3, 1, 0, 20}, AlertProtocolVersion},
		{[]byte{23, 3, 3, 0x41, 0x01}, AlertRecordOverflow},
	} {
		_, err := RecordLen(c.rec)
		var e *Error
		if err == nil || !asError(err, &e) || e.Alert != c.alert {
			t.Errorf("%x: %v, want alert %d", c.rec, err, c.alert)
		}
	}
	if n, err := RecordLen([]byte{23, 3, 3, 0x41, 0x00}); err != nil || n != MaxRecord {
		t.Errorf("largest record: %d %v", n, err)
	}
}

func asError(err error, e **Error) bool {
	x, ok := err.(*Error)
	*e = x
	return ok
}

// TestOpenInnerLimits: an inner plaintext over 2^14 (padding aside) is a
// record_overflow; one that is all padding has no type.
func TestOpenInnerLimits(t *testing.T) {
	w, r := testDir(t, AES128GCMSHA256, 1), testDir(t, AES128GCMSHA256, 1)
	big := Seal(nil, aead(t, w)(), w, TypeApplicationData, make([]byte, MaxPlaintext+1))
	if _, _, _, err := Next(aead(t, r), r, big); err != errOverflow {
		t.Fatalf("2^14+1 plaintext: %v", err)
	}
	// Inner plaintext of zeros only: seal it by hand.
	a := aead(t, w)()
	rec := []byte{23, 3, 3, 0, 4 + 16, 0, 0, 0, 0}
	rec = a.Seal(rec[:5], w.Nonce(w.Seq), rec[5:9], rec[:5])
	if _, _, _, err := Next(aead(t, r), r, rec); err != errNoType {
		t.Fatalf("padding only: %v", err)
	}
	// Padding is allowed and stripped.
	rec = []byte{23, 3, 3, 0, 5 + 16, 'h', 'i', 23, 0, 0}
	w.Seq++
	rec = a.Seal(rec[:5], w.Nonce(w.Seq), rec[5:10], rec[:5])
	n, typ, pt, err := Next(aead(t, r), r, rec)
	if err != nil || n != len(rec) || typ != 23 || string(pt) != "hi" {
		t.Fatalf("padded: %d %d %q %v", n, typ, pt, err)
	}
}

func TestParseKeyUpdate(t *testing.T) {
	if req, err := ParseKeyUpdate(KeyUpdateRequested); !req || err != nil {
		t.Fatal("requested", req, err)
	}
	if req, err := ParseKeyUpdate(KeyUpdateNotRequested); req || err != nil {
		t.Fatal("not requested", req, err)
	}
	for _, c := range []struct {
		msg   []byte
		alert Alert
	}{
		{[]byte{4, 0, 0, 1, 0}, AlertUnexpectedMessage},  // NewSessionTicket from a client
		{[]byte{13, 0, 0, 1, 0}, AlertUnexpectedMessage}, // CertificateRequest
		{[]byte{24, 0, 0, 1, 2}, AlertIllegalParameter},
		{[]byte{24, 0, 0, 2, 0, 0}, AlertDecodeError},
		{[]byte{24, 0, 0, 1, 0, 24, 0, 0, 1, 0}, AlertDecodeError}, // a second message after it
		{nil, AlertUnexpectedMessage},
	} {
		_, err := ParseKeyUpdate(c.msg)
		var e *Error
		if !asError(err, &e) || e == nil || e.Alert != c.alert {
			t.Errorf("%x: %v, want alert %d", c.msg, err, c.alert)
		}
	}
}

// keyLog collects crypto/tls's secrets by label.
type keyLog struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (k *keyLog) Write(p []byte) (int, error) {
	f := strings.Fields(string(p))
	b, _ := hex.DecodeString(f[2])
	k.mu.Lock()
	k.m[f[0]] = b
	k.mu.Unlock()
	return len(p), nil
}

func testCert(t testing.TB) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestDifferentialWithCryptoTLS: a crypto/tls client and, after a
// crypto/tls server's handshake, this layer on the server's raw socket,
// over loopback TCP. Every record the client seals opens here to the same
// bytes, every record sealed here reads back the same in the client, in
// sizes up to 2^14 and messages up to 1 MiB, and KeyUpdates work both
// ways: ours is accepted, and the client's answer to it is followed.
func TestDifferentialWithCryptoTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	kl := &keyLog{m: map[string][]byte{}}
	srvDone := make(chan net.Conn, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			srvDone <- nil
			return
		}
		// No tickets: the server's first application record is ours.
		s := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{testCert(t)}, KeyLogWriter: kl,
			SessionTicketsDisabled: true, MinVersion: tls.VersionTLS13})
		if err := s.Handshake(); err != nil {
			raw.Close()
			srvDone <- nil
			return
		}
		srvDone <- raw
	}()
	cl, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	raw := <-srvDone
	if raw == nil {
		t.Fatal("server handshake failed")
	}
	defer raw.Close()
	suite := Suite(cl.ConnectionState().CipherSuite)
	kl.mu.Lock()
	rd, err1 := NewDir(suite, kl.m["CLIENT_TRAFFIC_SECRET_0"], 0)
	wr, err2 := NewDir(suite, kl.m["SERVER_TRAFFIC_SECRET_0"], 0)
	kl.mu.Unlock()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	var in []byte // raw bytes read, not yet a whole record
	rbuf := make([]byte, 64<<10)
	// readPlain reads records from raw until want bytes of application
	// data arrived, following KeyUpdates.
	readPlain := func(want int) []byte {
		var got []byte
		raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(got) < want {
			n, typ, pt, err := Next(aead(t, &rd), &rd, in)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				m, err := raw.Read(rbuf)
				if err != nil {
					t.Fatal(err)
				}
				in = append(in, rbuf[:m]...)
				continue
			}
			switch typ {
			case TypeApplicationData:
				got = append(got, pt...)
			case TypeHandshake:
				if _, err := ParseKeyUpdate(pt); err != nil {
					t.Fatal(err)
				}
				if err := rd.Update(); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("record type %d", typ)
			}
			in = in[n:]
		}
		return got
	}
	// sealPlain seals p in records of random sizes.
	sealPlain := func(p []byte) []byte {
		var out []byte
		for len(p) > 0 || out == nil {
			k := min(len(p), 1+rng.IntN(MaxPlaintext))
			out = Seal(out, aead(t, &wr)(), &wr, TypeApplicationData, p[:k])
			p = p[k:]
		}
		return out
	}
	clientRead := func(n int) []byte {
		b := make([]byte, n)
		cl.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(cl, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	sizes := []int{0, 1, 100, MaxPlaintext - 1, MaxPlaintext, MaxPlaintext + 1, 3*MaxPlaintext + 7, 1 << 20}
	for round := 0; round < 3; round++ {
		for _, size := range sizes {
			msg := make([]byte, size)
			rand.Read(msg)
			// client → us
			go cl.Write(msg)
			if got := readPlain(size); !bytes.Equal(got, msg) {
				t.Fatalf("round %d size %d: client's records differ", round, size)
			}
			// us → client
			if size == 0 {
				continue
			}
			go raw.Write(sealPlain(msg))
			if got := clientRead(size); !bytes.Equal(got, msg) {
				t.Fatalf("round %d size %d: our records differ", round, size)
			}
		}
		// Our KeyUpdate, asking for the client's: crypto/tls answers with
		// its own before its next record, and reads ours after it.
		out := Seal(nil, aead(t, &wr)(), &wr, TypeHandshake, KeyUpdateRequested)
		if err := wr.Update(); err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Write(out); err != nil {
			t.Fatal(err)
		}
		before := rd
		go raw.Write(sealPlain([]byte("after update")))
		if got := clientRead(12); string(got) != "after update" {
			t.Fatalf("after our KeyUpdate the client read %q", got)
		}
		go cl.Write([]byte("reply"))
		if got := readPlain(5); string(got) != "reply" {
			t.Fatalf("after the client's KeyUpdate: %q", got)
		}
		if rd.secret == before.secret {
			t.Fatal("the client did not update its write key")
		}
	}
}

func BenchmarkNewAEAD(b *testing.B) {
	for _, s := range suites {
		d := testDir(b, s, 3)
		b.Run(hex.EncodeToString([]byte{byte(s >> 8), byte(s)}), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.NewAEAD(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSealOpen64(b *testing.B) {
	for _, s := range suites {
		w, r := testDir(b, s, 3), testDir(b, s, 3)
		aw, _ := w.NewAEAD()
		ar, _ := r.NewAEAD()
		buf := make([]byte, 0, 256)
		pt := make([]byte, 64)
		b.Run(hex.EncodeToString([]byte{byte(s >> 8), byte(s)}), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf = Seal(buf[:0], aw, w, TypeApplicationData, pt)
				if _, _, _, err := Next(func() cipher.AEAD { return ar }, r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
