//go:build linux

package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

var testCert = sync.OnceValue(func() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
})

// tlsPair runs a TLS handshake over a loopback TCP pair: the client end
// for the test, the server end (over a Socket) for the relay.
func tlsPair(t testing.TB, client, server net.Conn) (tc, ts net.Conn) {
	t.Helper()
	cl, srv, _ := tlsHandshake(t, client, server, nil)
	return cl, srv
}

// tlsHandshake is tlsPair with the server's KeyLog, and the client's
// secrets written to clientKeys when it is not nil.
func tlsHandshake(t testing.TB, client, server net.Conn, clientKeys io.Writer) (cl, srv *tls.Conn, keys *KeyLog) {
	t.Helper()
	keys = NewKeyLog()
	srv = tls.Server(NewSocket(server.(*net.TCPConn), keys), &tls.Config{Certificates: []tls.Certificate{testCert()}, KeyLogWriter: keys})
	cl = tls.Client(client, &tls.Config{InsecureSkipVerify: true, KeyLogWriter: clientKeys})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return cl, srv, keys
}

// TestTLSCloseNotifyEndsLikeFIN: a TLS client that sends close_notify
// without a close frame has gone away: its backend gets 1001, as for a
// plain client's FIN.
func TestTLSCloseNotifyEndsLikeFIN(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		h := startHarness(t, Config{}, nil, nil)
		tc := h.client.(*tls.Conn)
		msg := frame(true, 0, OpText, []byte("before"), true, testMask)
		tc.Write(msg)
		if got := readFull(t, h.backend, len(msg)); string(got) != string(msg) {
			t.Fatal("frame altered")
		}
		if err := tc.CloseWrite(); err != nil { // close_notify
			t.Fatal(err)
		}
		expectClose(t, h.backend, CloseGoingAway)
		h.backend.Close()
		h.wait(t)
	})
}

// nonceCheck returns a hook that fails t if the record layer ever seals
// twice with one key and nonce, counting what crypto/tls sealed under the
// same key before the handover.
func nonceCheck(t testing.TB) *recHook {
	var mu sync.Mutex
	seen := map[string]bool{}
	return &recHook{sealed: func(key, nonce []byte) {
		k := string(key) + string(nonce)
		mu.Lock()
		dup := seen[k]
		seen[k] = true
		mu.Unlock()
		if dup {
			t.Errorf("key %x nonce %x used twice", key[:4], nonce)
		}
	}}
}
