//go:build linux

package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// startWSSProxy runs a proxy with one wss:// site (a self-signed
// certificate from files) echoing on every path.
func startWSSProxy(t *testing.T) (tp *tlsProxy, certFile string) {
	t.Helper()
	cert, key := writeSelfSigned(t, t.TempDir(), "site", "localhost")
	tp = newTLSProxy(t, 0, 0)
	tp.vars["cert"], tp.vars["key"] = cert, key
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead.Close() // nothing listens there now: connections are refused
	tp.vars["dead"] = dead.Addr().String()
	if err := tp.start(t, "localhost:{port} {\n\ttls {cert} {key}\n\troute /dead {\n\t\tto {dead}\n\t}\n\troute /* {\n\t\tto {b0}\n\t}\n}\n"); err != nil {
		t.Fatal(err)
	}
	return tp, cert
}

// expectKeysDropped fails unless the proxy's key log holds no secrets:
// every connection has handed them over or let them go.
func expectKeysDropped(t *testing.T, tp *tlsProxy) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for tp.srv.keys.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the key log still holds %d connections' secrets", tp.srv.keys.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWSSRecordLayer: a TLS 1.3 client's connection moves to the loops'
// record layer after the upgrade and relays messages of every size; a
// TLS 1.2 one stays with crypto/tls and relays the same. Neither leaves
// secrets behind.
func TestWSSRecordLayer(t *testing.T) {
	t.Parallel()
	tp, cert := startWSSProxy(t)
	if tp.srv.loops == nil {
		t.Skip("no event loops here")
	}
	url := "wss://localhost:" + strings.Split(tp.addr, ":")[1] + "/ws"
	for _, c := range []struct {
		name   string
		max    uint16
		moved  uint64
		cipher uint16
	}{
		{"tls1.3", tls.VersionTLS13, 1, 0},
		{"tls1.2", tls.VersionTLS12, 0, 0},
	} {
		before := tp.srv.loops.RecordLegs()
		d := wssDialer(tp.addr, rootsFromFile(t, cert))
		d.TLSClientConfig.MaxVersion = c.max
		ws, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 1, 125, 126, 16 << 10, 16<<10 + 1, 100000, 1 << 20} {
			msg := bytes.Repeat([]byte{byte(n)}, n)
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
			if _, got, err := ws.ReadMessage(); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("%s: %d-byte echo: %v", c.name, n, err)
			}
		}
		if got := tp.srv.loops.RecordLegs() - before; got != c.moved {
			t.Errorf("%s: %d legs moved to the record layer, want %d", c.name, got, c.moved)
		}
		expectKeysDropped(t, tp)
		ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, 1000) {
			t.Fatalf("%s: close: %v", c.name, err)
		}
		ws.Close()
	}
}

// TestWSSFailedUpgradeDropsKeys: a wss:// upgrade whose backend refuses
// leaves no secrets in the key log either.
func TestWSSFailedUpgradeDropsKeys(t *testing.T) {
	t.Parallel()
	tp, cert := startWSSProxy(t)
	url := "wss://localhost:" + strings.Split(tp.addr, ":")[1] + "/dead"
	for i := 0; i < 3; i++ {
		_, resp, err := wssDialer(tp.addr, rootsFromFile(t, cert)).Dial(url, nil)
		if err == nil || resp == nil || resp.StatusCode != 502 {
			t.Fatalf("dial: %v %v", err, resp)
		}
	}
	expectKeysDropped(t, tp)
}

// wsUpgrade is a raw upgrade request and the masked text frames a
// hand-driven client sends.
func wsUpgrade() string {
	return "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

func maskedText(s string) []byte {
	return wireFrame(true, 0, 0x1, []byte(s), true)
}

func waitOutput(t *testing.T, out *logBuffer, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !out.has(sub) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output:\n%s", sub, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitCount(t *testing.T, out *logBuffer, sub string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), sub) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d %q in the output:\n%s", n, sub, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWSSInteropOpenSSL: `openssl s_client` with each TLS 1.3 suite does
// a raw WebSocket upgrade and echoes through the record layer, and its
// KeyUpdate ("K": asking for ours too) is followed both ways.
func TestWSSInteropOpenSSL(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	tp, cert := startWSSProxy(t)
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			before := tp.srv.loops.RecordLegs()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", tp.addr, "-servername", "localhost",
				"-tls1_3", "-ciphersuites", suite, "-CAfile", cert, "-alpn", "http/1.1", "-msg")
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out := &logBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				in.Close()
				cancel()
				cmd.Wait()
			}()
			waitOutput(t, out, "Cipher is "+suite)
			io.WriteString(in, wsUpgrade())
			waitOutput(t, out, "HTTP/1.1 101")
			// s_client reads stdin in chunks and takes a chunk that
			// starts with K as its command: each write goes on its own.
			for i := 0; i < 3; i++ {
				msg := fmt.Sprintf("echo-%d-%s", i, suite)
				in.Write(maskedText(msg))
				waitOutput(t, out, msg)
				if tp.srv.loops.RecordLegs() == before {
					t.Fatal("the connection did not move to the record layer")
				}
				time.Sleep(100 * time.Millisecond)
				io.WriteString(in, "K\n")
				waitCount(t, out, "KEYUPDATE", i+1)
				// The proxy answers with its own (-msg shows it arrive).
				waitCount(t, out, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate", i+1)
				time.Sleep(100 * time.Millisecond)
			}
			in.Write(maskedText("after-keyupdates"))
			waitOutput(t, out, "after-keyupdates")
			expectKeysDropped(t, tp)
		})
	}
}

// nodeClient is a Node.js client without packages: its own TLS (OpenSSL)
// and a hand-made WebSocket upgrade, echoing messages up to 1 MiB.
const nodeClient = `
const tls = require('tls'), fs = require('fs'), crypto = require('crypto');
const [port, ca, cipher] = process.argv.slice(1);
const sizes = [0, 1, 125, 126, 16384, 16385, 70000, 1 << 20];
const s = tls.connect({host: '127.0.0.1', port: +port, servername: 'localhost', ca: fs.readFileSync(ca),
  ciphers: cipher, minVersion: 'TLSv1.3', ALPNProtocols: ['http/1.1']}, () => {
  s.write('GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
});
let buf = Buffer.alloc(0), upgraded = false, i = 0, want;
function frame(payload) {
  const n = payload.length, mask = crypto.randomBytes(4);
  let h;
  if (n < 126) h = Buffer.from([0x82, 0x80 | n]);
  else if (n < 65536) { h = Buffer.alloc(4); h[0] = 0x82; h[1] = 0x80 | 126; h.writeUInt16BE(n, 2); }
  else { h = Buffer.alloc(10); h[0] = 0x82; h[1] = 0x80 | 127; h.writeBigUInt64BE(BigInt(n), 2); }
  const m = Buffer.from(payload);
  for (let k = 0; k < n; k++) m[k] ^= mask[k % 4];
  return Buffer.concat([h, mask, m]);
}
function next() {
  if (i === sizes.length) { console.log('ok ' + s.getCipher().standardName + ' ' + s.getProtocol()); s.end(); process.exit(0); }
  want = crypto.randomBytes(sizes[i++]);
  s.write(frame(want));
}
s.on('data', (d) => {
  buf = Buffer.concat([buf, d]);
  if (!upgraded) {
    const e = buf.indexOf('\r\n\r\n');
    if (e < 0) return;
    if (!buf.slice(0, 12).toString().includes('101')) { console.log('no 101: ' + buf.toString()); process.exit(1); }
    buf = buf.slice(e + 4); upgraded = true; next();
  }
  for (;;) {
    if (buf.length < 2) return;
    let n = buf[1] & 0x7f, off = 2;
    if (n === 126) { if (buf.length < 4) return; n = buf.readUInt16BE(2); off = 4; }
    else if (n === 127) { if (buf.length < 10) return; n = Number(buf.readBigUInt64BE(2)); off = 10; }
    if (buf.length < off + n) return;
    const p = buf.slice(off, off + n);
    buf = buf.slice(off + n);
    if (!p.equals(want)) { console.log('echo differs at size ' + want.length); process.exit(1); }
    next();
  }
});
s.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
`

// TestWSSInteropNode: Node.js (OpenSSL underneath) echoes messages up to
// 1 MiB through the record layer with each TLS 1.3 suite.
func TestWSSInteropNode(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	tp, cert := startWSSProxy(t)
	port := strings.Split(tp.addr, ":")[1]
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		before := tp.srv.loops.RecordLegs()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, "-e", nodeClient, port, cert, suite).CombinedOutput()
		cancel()
		if err != nil || !strings.HasPrefix(string(out), "ok "+suite+" TLSv1.3") {
			t.Fatalf("%s: %v\n%s", suite, err, out)
		}
		if tp.srv.loops.RecordLegs() == before {
			t.Fatalf("%s: the connection did not move to the record layer", suite)
		}
	}
	expectKeysDropped(t, tp)
}
