package proxy

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/upgrade"
)

// BenchmarkFrontHandshake measures the proxy's own work in one ws://
// handshake that the event loops read, without its system calls: judging
// the client's request head (parse, route, checks, admission), the
// upstream request, the backend's 101, the session's start and its end
// (metrics, access log). The loopback rows of bench/compare.sh include
// this and everything the kernel does; this is the part that is ours.
//
//	go test -run xxx -bench FrontHandshake -benchmem ./proxy
func BenchmarkFrontHandshake(b *testing.B) {
	tp := startProxy(b, `{
	access_log off
}
127.0.0.1:{port} {
	route /ws {
		query room
		to {b0} {b1}
		lb_policy hash query:room
	}
}`, 2)
	f := &front{s: tp.srv, port: tp.port, local: tp.srv.Addr(tp.port)}
	head := []byte("GET /ws?room=1434 HTTP/1.1\r\nHost: 127.0.0.1:" + strconv.Itoa(tp.port) + "\r\nUser-Agent: Go-http-client/1.1\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n")
	resp := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		string(upgrade.AppendAcceptKey(nil, []byte("dGhlIHNhbXBsZSBub25jZQ=="))) + "\r\n\r\n")
	remote := netip.MustParseAddrPort("127.0.0.9:40000")
	b.ReportAllocs()
	for b.Loop() {
		up, answer := f.Request(head, nil, remote)
		h, ok := up.(*backendHandshake)
		if !ok {
			b.Fatalf("no upstream: %q", answer)
		}
		if _, ok := h.Next(nil); !ok {
			b.Fatal("no backend")
		}
		if n, err := h.Response(resp, false); n != len(resp) || err != nil {
			b.Fatalf("101: %d %v", n, err)
		}
		var ss relay.Session
		h.Switched(&ss)
		tp.srv.sessionStarted(&ss)
		tp.srv.sessionDone(&ss)
	}
}
