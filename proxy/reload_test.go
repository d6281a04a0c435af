package proxy

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/config"
)

func (tp *testProxy) reload(t *testing.T, conf string) ReloadReport {
	t.Helper()
	cfg, err := config.Parse("test.Caddyfile", []byte(strings.ReplaceAll(conf, "{port}", strconv.Itoa(tp.port))))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := tp.srv.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func echoes(c *websocket.Conn, msg string) error {
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return err
	}
	_, p, err := c.ReadMessage()
	if err == nil && string(p) != msg {
		err = errUnexpected(string(p))
	}
	return err
}

type errUnexpected string

func (e errUnexpected) Error() string { return "unexpected message " + string(e) }

// TestReloadToUnreachableBackendKeepsSessions changes a route's backend to
// a closed port: the reload reports it, and the live session on the old,
// healthy backend is not drained. A later reload to a reachable backend
// drains it as usual.
func TestReloadToUnreachableBackendKeepsSessions(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	conf := "{\n\treload_drain 100ms\n}\n:{port} {\n\troute /ws {\n\t\tname chat\n\t\tto %s\n\t}\n}"
	tp := startProxy(t, strings.ReplaceAll(conf, "%s", "{b0}"), 2)
	c, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
	defer c.Close()

	rep := tp.reload(t, strings.ReplaceAll(conf, "%s", closed))
	if len(rep.Unreachable) != 1 || !strings.HasPrefix(rep.Unreachable[0], "chat: "+closed+": ") || rep.KeptConns != 1 || rep.DrainedConns != 0 {
		t.Fatalf("report %+v, want %s unreachable and 1 connection kept", rep, closed)
	}
	time.Sleep(500 * time.Millisecond) // well past reload_drain
	if err := echoes(c, "still here"); err != nil {
		t.Fatalf("the live session was drained for an unreachable backend: %v", err)
	}

	rep = tp.reload(t, strings.ReplaceAll(conf, "%s", tp.backends[1].Addr()))
	if len(rep.Unreachable) != 0 || rep.DrainedConns != 1 {
		t.Fatalf("report %+v, want 1 connection drained", rep)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = c.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 1012 {
		t.Fatalf("after a reload to a reachable backend: %v, want close 1012", err)
	}
}

// TestReloadPerIPCapKeepsLiveCounts: a reload that changes
// max_connections_per_ip applies the new cap to the connections already
// open, up or down, instead of starting every client at zero; and closing a
// connection opened before the reload frees its slot under the new cap.
func TestReloadPerIPCapKeepsLiveCounts(t *testing.T) {
	t.Parallel()
	backend := "{b0}" // startProxy fills it in; reload does not
	conf := func(max int) string {
		return "{\n\tmax_connections_per_ip " + strconv.Itoa(max) + "\n\ttrusted_proxies 127.0.0.1\n}\n:{port} {\n\troute /* {\n\t\tto " + backend + "\n\t}\n}"
	}
	tp, dial, first := capProxy(t, conf, &backend, "X-Forwarded-For: 198.51.100.7")

	// Cap 1 -> 2 with one live: one more, not two.
	tp.reload(t, conf(2))
	second := dial()
	if second.Status != 101 {
		t.Fatalf("second handshake after raising the cap to 2: %d", second.Status)
	}
	defer second.conn.Close()
	if rc := dial(); rc.Status != 429 {
		rc.conn.Close()
		t.Fatalf("third handshake with cap 2 and two live: %d, want 429", rc.Status)
	}

	// Cap 2 -> 1 with two live: none until both pre-reload slots are free.
	tp.reload(t, conf(1))
	if rc := dial(); rc.Status != 429 {
		rc.conn.Close()
		t.Fatalf("handshake with cap 1 and two live: %d, want 429", rc.Status)
	}
	first.conn.Close() // counted under cap 1, released under the latest table
	waitFor(t, func() bool { return tp.srv.Sessions() == 1 })
	if rc := dial(); rc.Status != 429 {
		rc.conn.Close()
		t.Fatalf("handshake with cap 1 and one live: %d, want 429", rc.Status)
	}
	second.conn.Close()
	waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
	rc := dial()
	if rc.Status != 101 {
		t.Fatalf("handshake with cap 1 and none live: %d", rc.Status)
	}
	rc.conn.Close()

	// Unlimited -> 1 with one live: the live one counts.
	waitFor(t, func() bool { return tp.srv.Sessions() == 0 })
	tp.reload(t, conf(0))
	live := dial()
	if live.Status != 101 {
		t.Fatalf("handshake with no cap: %d", live.Status)
	}
	defer live.conn.Close()
	tp.reload(t, conf(1))
	if rc := dial(); rc.Status != 429 {
		rc.conn.Close()
		t.Fatalf("handshake after setting cap 1 over one live: %d, want 429", rc.Status)
	}
}

// TestReloadRouteCapKeepsLiveCounts: a reload that changes a route keeps
// counting the connections it had against its max_connections, whatever
// the cap becomes: cap 1 -> 2 with one live admits one more, not two.
func TestReloadRouteCapKeepsLiveCounts(t *testing.T) {
	t.Parallel()
	backend := "{b0}"
	conf := func(max int) string {
		return ":{port} {\n\troute /* {\n\t\tname r\n\t\tto " + backend + "\n\t\tmax_connections " + strconv.Itoa(max) + "\n\t}\n}"
	}
	tp, dial, first := capProxy(t, conf, &backend)
	if rep := tp.reload(t, conf(2)); len(rep.Changed) != 1 {
		t.Fatalf("report %+v, want the route changed", rep)
	}
	second := dial()
	if second.Status != 101 {
		t.Fatalf("second handshake after raising the cap to 2: %d", second.Status)
	}
	defer second.conn.Close()
	if rc := dial(); rc.Status != 503 {
		rc.conn.Close()
		t.Fatalf("third handshake with cap 2 and two live: %d, want 503", rc.Status)
	}
	if got := tp.srv.Routes()[0].Live; got != 2 {
		t.Fatalf("/routes says %d live, want 2", got)
	}
	first.conn.Close()
	waitFor(t, func() bool { return tp.srv.Routes()[0].Live == 1 })
}

// capProxy starts a proxy on conf(1) (a cap of 1), fills in *backend for
// later reloads, and opens the first connection, which must be admitted.
// dial makes a handshake with the extra header lines and closes it unless
// it got 101.
func capProxy(t *testing.T, conf func(max int) string, backend *string, extra ...string) (*testProxy, func() *rawClient, *rawClient) {
	t.Helper()
	tp := startProxy(t, conf(1), 1)
	*backend = tp.backends[0].Addr()
	dial := func() *rawClient {
		rc := rawRequest(t, tp.addr, wsHead("/ws", extra...))
		if rc.Status != 101 {
			rc.conn.Close()
		}
		return rc
	}
	first := dial()
	if first.Status != 101 {
		t.Fatalf("first handshake: %d", first.Status)
	}
	t.Cleanup(func() { first.conn.Close() })
	return tp, dial, first
}
