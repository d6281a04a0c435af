//go:build linux

package relay

import (
	"bytes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/proxy/relay/tlsrec"
)

// recClient is a TLS 1.3 client whose records are our own: crypto/tls
// performs its handshake, then it speaks records itself, so tests can send
// what crypto/tls never would (a KeyUpdate, a broken record, a client's
// NewSessionTicket). It is a net.Conn, so the frame helpers work over it.
type recClient struct {
	net.Conn // the raw TCP connection
	t        testing.TB
	rd, wr   tlsrec.Dir
	hook     *recHook
	in       []byte      // raw bytes not yet a whole record
	plain    []byte      // opened, not yet read
	rdA, wrA cipher.AEAD // built for the current keys, nil after an update
	buf, out []byte      // reused, so a steady exchange allocates nothing
	updates  int         // KeyUpdates received
	alert    int         // the alert received, -1 if none
	closed   bool        // close_notify received
}

type clientKeys struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (k *clientKeys) Write(p []byte) (int, error) {
	f := strings.Fields(string(p))
	b, _ := hex.DecodeString(f[2])
	k.mu.Lock()
	k.m[f[0]] = b
	k.mu.Unlock()
	return len(p), nil
}

// recHandshake performs a TLS 1.3 handshake over a loopback pair: the
// server end over a Socket with a KeyLog, the client end a recClient.
func recHandshake(t testing.TB, hook *recHook) (srv *tls.Conn, keys *KeyLog, rc *recClient) {
	t.Helper()
	c, pc := tcpPair(t)
	ck := &clientKeys{m: map[string][]byte{}}
	cl, srv, keys := tlsHandshake(t, c, pc, ck)
	suite := tlsrec.Suite(cl.ConnectionState().CipherSuite)
	ck.mu.Lock()
	wr, err1 := tlsrec.NewDir(suite, ck.m["CLIENT_TRAFFIC_SECRET_0"], 0)
	rd, err2 := tlsrec.NewDir(suite, ck.m["SERVER_TRAFFIC_SECRET_0"], 0)
	ck.mu.Unlock()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	t.Cleanup(func() { c.Close() })
	return srv, keys, &recClient{Conn: c, t: t, rd: rd, wr: wr, hook: hook, alert: -1}
}

// startRecHarness is startHarness with a recClient as the client.
func startRecHarness(t testing.TB, cfg Config) (*harness, *recClient) {
	t.Helper()
	if cfg.recHook == nil {
		cfg.recHook = nonceCheck(t)
	}
	srv, keys, rc := recHandshake(t, cfg.recHook)
	return startRecSession(t, cfg, srv, keys, rc), rc
}

// startRecSession relays between srv, recHandshake's server end, and a
// backend; the test fails if keys still hold secrets at its end.
func startRecSession(t testing.TB, cfg Config, srv *tls.Conn, keys *KeyLog, rc *recClient) *harness {
	b, pb := tcpPair(t)
	h := &harness{client: rc, backend: b, done: make(chan *Session, 1), tls: true}
	if cfg.Pool == nil {
		cfg.Pool = NewPool(0)
	}
	cfg.recHook = rc.hook
	rc.hook.took = func() { h.took.Store(true) }
	cfg.Client.Masked = true
	cfg.Loops = testLoops
	cfg.OnDone = func(s *Session) { h.done <- s }
	NewSession(&cfg).Start(srv, nil, pb, nil)
	t.Cleanup(func() {
		b.Close()
		if keys.Len() != 0 {
			t.Errorf("the key log still holds %d connections' secrets", keys.Len())
		}
	})
	return h
}

func (c *recClient) aead(d *tlsrec.Dir) cipher.AEAD {
	a := &c.wrA
	if d == &c.rd {
		a = &c.rdA
	}
	if *a == nil {
		var err error
		if *a, err = d.NewAEAD(); err != nil {
			c.t.Fatal(err)
		}
	}
	return *a
}

func (c *recClient) rdAEAD() cipher.AEAD { return c.aead(&c.rd) }

// seal returns records of type typ carrying p.
func (c *recClient) seal(typ uint8, p []byte) []byte {
	out := c.out[:0]
	for first := true; first || len(p) > 0; first = false {
		k := min(len(p), tlsrec.MaxPlaintext)
		c.hook.sealed(c.wr.Key(), c.wr.Nonce(c.wr.Seq))
		out = tlsrec.Seal(out, c.aead(&c.wr), &c.wr, typ, p[:k])
		p = p[k:]
	}
	c.out = out
	return out
}

func (c *recClient) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(c.seal(tlsrec.TypeApplicationData, p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// keyUpdate sends a KeyUpdate and moves to the next write key.
func (c *recClient) keyUpdate(request bool) {
	msg := tlsrec.KeyUpdateNotRequested
	if request {
		msg = tlsrec.KeyUpdateRequested
	}
	rec := c.seal(tlsrec.TypeHandshake, msg)
	if err := c.wr.Update(); err != nil {
		c.t.Fatal(err)
	}
	c.wrA = nil
	if _, err := c.Conn.Write(rec); err != nil {
		c.t.Fatal(err)
	}
}

func (c *recClient) Read(p []byte) (int, error) {
	if c.buf == nil {
		c.buf = make([]byte, 32<<10)
	}
	for len(c.plain) == 0 {
		if c.alert >= 0 || c.closed {
			return 0, io.EOF
		}
		n, typ, pt, err := tlsrec.Next(c.rdAEAD, &c.rd, c.in)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			c.in = c.buf[:copy(c.buf, c.in)] // a record's start first
			m, err := c.Conn.Read(c.buf[len(c.in):cap(c.buf)])
			if err != nil {
				return 0, err
			}
			c.in = c.buf[:len(c.in)+m]
			continue
		}
		switch typ {
		case tlsrec.TypeApplicationData:
			c.plain = pt // aliases c.buf, read before the next refill
		case tlsrec.TypeHandshake:
			switch {
			case len(pt) >= 4 && pt[0] == 4: // session tickets
			case bytes.Equal(pt, tlsrec.KeyUpdateNotRequested):
				c.updates++
				if err := c.rd.Update(); err != nil {
					return 0, err
				}
				c.rdA = nil
			default:
				return 0, errors.New("unexpected handshake message")
			}
		case tlsrec.TypeAlert:
			if pt[1] == 0 {
				c.closed = true
			} else {
				c.alert = int(pt[1])
			}
		}
		c.in = c.in[n:]
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// readAlert reads until the proxy's alert (or close_notify, 0) and EOF.
func (c *recClient) readAlert(t testing.TB) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c)
	if c.alert < 0 && c.closed {
		return 0
	}
	return c.alert
}

// TestRecKeyUpdateFromClient: a client's KeyUpdate moves the read key;
// one that asks for ours gets it before our next record, and records flow both ways under
// the new keys, several generations on, with no key and nonce used twice.
func TestRecKeyUpdateFromClient(t *testing.T) {
	h, rc := startRecHarness(t, Config{})
	for gen := 0; gen < 4; gen++ {
		up := frame(true, 0, OpText, []byte("up"), true, testMask)
		rc.Write(up)
		if got := readFull(t, h.backend, len(up)); !bytes.Equal(got, up) {
			t.Fatal("frame altered")
		}
		rc.keyUpdate(gen%2 == 0)
		down := frame(true, 0, OpBinary, bytes.Repeat([]byte{7}, 40000), false, testMask)
		h.backend.Write(down)
		if got := readFull(t, rc, len(down)); !bytes.Equal(got, down) {
			t.Fatal("frame altered after KeyUpdate")
		}
	}
	if rc.updates != 2 {
		t.Fatalf("the proxy sent %d KeyUpdates, want 2 (one per request)", rc.updates)
	}
	rc.Write(frame(true, 0, OpClose, []byte{0x03, 0xe8}, true, testMask))
	expectClose(t, h.backend, CloseNormal)
	h.backend.Write(frame(true, 0, OpClose, []byte{0x03, 0xe8}, false, testMask))
	expectClose(t, rc, CloseNormal)
	if a := rc.readAlert(t); a != 0 {
		t.Fatalf("alert %d, want close_notify before the FIN", a)
	}
	rc.Conn.Close()
	h.backend.Close()
	h.wait(t)
}

// TestRecKeyUpdateByProxy: the proxy updates its own key unasked before
// the sequence number nears the limit (here after a few records), and
// crypto/tls's client follows it; nothing is sealed twice.
func TestRecKeyUpdateByProxy(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		check := nonceCheck(t).sealed
		var mu sync.Mutex
		keys := map[string]bool{}
		seal := func(key, nonce []byte) {
			mu.Lock()
			keys[string(key)] = true
			mu.Unlock()
			check(key, nonce)
		}
		h := startHarness(t, Config{recHook: &recHook{sealed: seal, updateAfter: 3}}, nil, nil)
		for i := 0; i < 20; i++ {
			down := frame(true, 0, OpBinary, bytes.Repeat([]byte{byte(i)}, i*3000), false, testMask)
			h.backend.Write(down)
			if got := readFull(t, h.client, len(down)); !bytes.Equal(got, down) {
				t.Fatal("frame altered")
			}
			up := frame(true, 0, OpBinary, []byte{byte(i)}, true, testMask)
			h.client.Write(up)
			readFull(t, h.backend, len(up))
		}
		h.client.Close()
		h.backend.Close()
		h.wait(t)
		mu.Lock()
		defer mu.Unlock()
		if len(keys) < 10 {
			t.Fatalf("the proxy sealed under %d keys, want one more every 3 records", len(keys))
		}
	})
}

// TestRecKeyUpdateRequestsCoalesce: a client that asks for our KeyUpdate
// again and again while it reads nothing (and we hold what its socket
// would not take) gets one, before our next record, not one per request
// queued behind the data it does not read.
func TestRecKeyUpdateRequestsCoalesce(t *testing.T) {
	h, rc := startRecHarness(t, Config{})
	// More than loopback's socket buffers hold, so the proxy keeps some.
	big := frame(true, 0, OpBinary, bytes.Repeat([]byte{5}, 32<<20), false, testMask)
	go h.backend.Write(big)
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 10; i++ {
		rc.keyUpdate(true)
	}
	up := frame(true, 0, OpText, []byte("up"), true, testMask)
	rc.Write(up)
	if got := readFull(t, h.backend, len(up)); !bytes.Equal(got, up) {
		t.Fatal("frame altered after ten KeyUpdates")
	}
	if got := readFull(t, rc, len(big)); !bytes.Equal(got, big) {
		t.Fatal("the large frame was altered")
	}
	down := frame(true, 0, OpText, []byte("down"), false, testMask)
	h.backend.Write(down)
	if got := readFull(t, rc, len(down)); !bytes.Equal(got, down) {
		t.Fatal("frame altered")
	}
	if rc.updates != 1 {
		t.Fatalf("the proxy sent %d KeyUpdates for ten requests while the client read nothing, want 1", rc.updates)
	}
	rc.Conn.Close()
	h.backend.Close()
	h.wait(t)
}

// TestRecRecordsWithNoData: a client may send up to 16 records in a row
// that carry no data (KeyUpdates, empty records, user_canceled); data in
// between starts the count again, and the 17th in a row ends the leg with
// unexpected_message, as crypto/tls does.
func TestRecRecordsWithNoData(t *testing.T) {
	empty := func(rc *recClient) { rc.Conn.Write(rc.seal(tlsrec.TypeApplicationData, nil)) }
	update := func(rc *recClient) { rc.keyUpdate(false) }
	canceled := func(rc *recClient) { rc.Conn.Write(rc.seal(tlsrec.TypeAlert, []byte{1, 90})) }
	for _, c := range []struct {
		name string
		send func(rc *recClient)
	}{{"empty records", empty}, {"KeyUpdates", update}, {"user_canceled", canceled}} {
		t.Run(c.name, func(t *testing.T) {
			h, rc := startRecHarness(t, Config{})
			for round := 0; round < 3; round++ {
				for i := 0; i < maxUseless; i++ {
					c.send(rc)
				}
				ok := frame(true, 0, OpText, []byte("ok"), true, testMask)
				rc.Write(ok)
				if got := readFull(t, h.backend, len(ok)); !bytes.Equal(got, ok) {
					t.Fatalf("round %d: frame altered", round)
				}
			}
			for i := 0; i <= maxUseless; i++ {
				c.send(rc)
			}
			expectClose(t, h.backend, CloseGoingAway)
			if a := rc.readAlert(t); a != int(tlsrec.AlertUnexpectedMessage) {
				t.Fatalf("alert %d, want unexpected_message", a)
			}
			h.backend.Close()
			if s := h.wait(t); !strings.Contains(s.Reason, "no data") {
				t.Errorf("reason %q", s.Reason)
			}
		})
	}
}

// TestRecUserCanceledThenData: user_canceled is a warning; records after
// it in the same read are still opened and forwarded.
func TestRecUserCanceledThenData(t *testing.T) {
	h, rc := startRecHarness(t, Config{})
	ok := frame(true, 0, OpText, []byte("after"), true, testMask)
	wire := append([]byte(nil), rc.seal(tlsrec.TypeAlert, []byte{1, 90})...)
	wire = append(wire, rc.seal(tlsrec.TypeApplicationData, ok)...)
	rc.Conn.Write(wire)
	if got := readFull(t, h.backend, len(ok)); !bytes.Equal(got, ok) {
		t.Fatal("the frame after user_canceled was lost or altered")
	}
	rc.Conn.Close()
	h.backend.Close()
	h.wait(t)
}

// TestRecFragmentedRecords: records that arrive a few bytes at a time,
// and many in one read, open the same.
func TestRecFragmentedRecords(t *testing.T) {
	h, rc := startRecHarness(t, Config{})
	var want, wire []byte
	for i, n := range []int{0, 1, 125, 126, 3000, 16 << 10, 70000} {
		f := frame(true, 0, OpBinary, bytes.Repeat([]byte{byte(i)}, n), true, testMask)
		want = append(want, f...)
		wire = append(wire, rc.seal(tlsrec.TypeApplicationData, f)...)
	}
	last := frame(true, 0, OpBinary, nil, true, testMask)
	want = append(want, last...)
	wire = append(wire, rc.seal(tlsrec.TypeApplicationData, last)...)
	go func() {
		for i := 0; len(wire) > 0; i++ {
			k := min(len(wire), []int{1, 4, 5, 6, 17, 3000, 20000}[i%7])
			rc.Conn.Write(wire[:k])
			wire = wire[k:]
			if i%5 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	if got := readFull(t, h.backend, len(want)); !bytes.Equal(got, want) {
		t.Fatal("frames altered")
	}
	rc.Conn.Close()
	h.backend.Close()
	h.wait(t)
}

// TestRecRejects: records the layer must not accept end the leg with the
// right alert, and the backend hears the client went away.
func TestRecRejects(t *testing.T) {
	for _, c := range []struct {
		name  string
		wire  func(rc *recClient) []byte
		alert tlsrec.Alert
	}{
		{"bad_record_mac", func(rc *recClient) []byte {
			r := rc.seal(tlsrec.TypeApplicationData, []byte("hello"))
			r[len(r)-1] ^= 1
			return r
		}, tlsrec.AlertBadRecordMAC},
		{"ciphertext over 2^14+256", func(rc *recClient) []byte {
			return append([]byte{23, 3, 3, 0x41, 0x01}, make([]byte, 1<<14+257)...)
		}, tlsrec.AlertRecordOverflow},
		{"plaintext over 2^14", func(rc *recClient) []byte {
			rc.hook.sealed(rc.wr.Key(), rc.wr.Nonce(rc.wr.Seq))
			return tlsrec.Seal(nil, rc.aead(&rc.wr), &rc.wr, tlsrec.TypeApplicationData, make([]byte, 1<<14+1))
		}, tlsrec.AlertRecordOverflow},
		{"plaintext handshake record", func(rc *recClient) []byte {
			return []byte{22, 3, 3, 0, 5, 24, 0, 0, 1, 0}
		}, tlsrec.AlertUnexpectedMessage},
		{"change_cipher_spec", func(rc *recClient) []byte { return []byte{20, 3, 3, 0, 1, 1} }, tlsrec.AlertUnexpectedMessage},
		{"NewSessionTicket from the client", func(rc *recClient) []byte {
			return rc.seal(tlsrec.TypeHandshake, []byte{4, 0, 0, 4, 0, 0, 0, 0})
		}, tlsrec.AlertUnexpectedMessage},
		{"Certificate unasked", func(rc *recClient) []byte {
			return rc.seal(tlsrec.TypeHandshake, []byte{11, 0, 0, 4, 0, 0, 0, 0})
		}, tlsrec.AlertUnexpectedMessage},
		{"KeyUpdate with a bad request", func(rc *recClient) []byte {
			return rc.seal(tlsrec.TypeHandshake, []byte{24, 0, 0, 1, 7})
		}, tlsrec.AlertIllegalParameter},
		{"unknown content type", func(rc *recClient) []byte {
			return rc.seal(99, []byte("x"))
		}, tlsrec.AlertUnexpectedMessage},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, rc := startRecHarness(t, Config{})
			ok := frame(true, 0, OpText, []byte("ok"), true, testMask)
			rc.Write(ok)
			readFull(t, h.backend, len(ok))
			rc.Conn.Write(c.wire(rc))
			expectClose(t, h.backend, CloseGoingAway)
			if a := rc.readAlert(t); a != int(c.alert) {
				t.Fatalf("alert %d, want %d", a, c.alert)
			}
			h.backend.Close()
			if s := h.wait(t); !strings.Contains(s.Reason, "tls:") {
				t.Errorf("reason %q", s.Reason)
			}
		})
	}
}

// TestRecAlertFromClient: a fatal alert from the client ends its leg like
// a FIN, with the alert as the reason.
func TestRecAlertFromClient(t *testing.T) {
	h, rc := startRecHarness(t, Config{})
	rc.Conn.Write(rc.seal(tlsrec.TypeAlert, []byte{2, 40}))
	expectClose(t, h.backend, CloseGoingAway)
	h.backend.Close()
	if s := h.wait(t); s.Reason != "client TLS alert 40" {
		t.Errorf("reason %q", s.Reason)
	}
}

// TestRecPartialRecordAtHandover: a record that crypto/tls has read only
// in part when the leg moves is completed by the record layer.
func TestRecPartialRecordAtHandover(t *testing.T) {
	hook := nonceCheck(t)
	srv, keys, rc := recHandshake(t, hook)
	f := frame(true, 0, OpBinary, bytes.Repeat([]byte{9}, 5000), true, testMask)
	rec := rc.seal(tlsrec.TypeApplicationData, f)
	rc.Conn.Write(rec[:100])
	// crypto/tls reads the first part before the relay starts (as it may
	// while fasthttp reads the upgrade request), then times out.
	srv.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := srv.Read(make([]byte, 10)); !isTimeout(err) {
		t.Fatalf("read: %v", err)
	}
	srv.SetReadDeadline(time.Time{})
	h := startRecSession(t, Config{}, srv, keys, rc)
	time.Sleep(20 * time.Millisecond)
	rc.Conn.Write(rec[100:])
	if got := readFull(t, h.backend, len(f)); !bytes.Equal(got, f) {
		t.Fatal("frame altered")
	}
	rc.Conn.Close()
	h.backend.Close()
	h.wait(t)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// failRecorder is a testing.TB that only notes that it failed.
type failRecorder struct {
	testing.TB
	failed bool
}

func (f *failRecorder) Errorf(string, ...any) { f.failed = true }

// TestNonceCheckCatchesReuse: the hook every TLS-mode test runs under does
// fail a test whose record layer would continue one record too early
// after the handover, reusing the last nonce crypto/tls sealed with.
func TestNonceCheckCatchesReuse(t *testing.T) {
	ft := &failRecorder{TB: t}
	h := nonceCheck(ft)
	wr, err := tlsrec.NewDir(tlsrec.AES128GCMSHA256, bytes.Repeat([]byte{5}, 32), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 3; i++ { // crypto/tls sealed records 0, 1 and 2
		h.sealed(wr.Key(), wr.Nonce(i))
	}
	a, _ := wr.NewAEAD()
	sealer := &hookedAEAD{AEAD: a, key: wr.Key(), h: h}
	wr.Seq = 3
	tlsrec.Seal(nil, sealer, &wr, tlsrec.TypeApplicationData, []byte("right"))
	if ft.failed {
		t.Fatal("flagged a fresh nonce")
	}
	wr.Seq = 2
	tlsrec.Seal(nil, sealer, &wr, tlsrec.TypeApplicationData, []byte("wrong"))
	if !ft.failed {
		t.Fatal("a reused key and nonce went unnoticed")
	}
}
