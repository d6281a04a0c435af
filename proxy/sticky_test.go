package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

const stickyConf = `
{
	trusted_proxies 127.0.0.1
}
:{port} {
	route /room {
		name rooms
		to {b0} {b1} {b2}
		lb_policy hash query:room header:X-User cookie:sid
		lb_key_missing reject
	}
	route /lax {
		name lax
		to {b0} {b1} {b2}
		lb_policy hash query:room
	}
	route /ip {
		name ip
		to {b0} {b1} {b2}
		lb_policy hash ip
	}
}`

// backendOf connects and asks the backend its ID.
func backendOf(t *testing.T, url string, hdr http.Header) (string, *http.Response, error) {
	t.Helper()
	c, resp, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial(url, hdr)
	if err != nil {
		return "", resp, err
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("__id"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := c.ReadMessage()
	return string(p), resp, err
}

func TestStickyRoomsAndLookup(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, stickyConf, 3)
	addrOf := map[string]string{}
	for _, b := range tp.backends {
		addrOf[b.ID()] = b.Addr()
	}
	used := map[string]bool{}
	for room := 0; room < 20; room++ {
		var first string
		// Several clients of one room, some holding their connection open
		// meanwhile (live load must not move a sticky key).
		var open []*websocket.Conn
		for i := 0; i < 4; i++ {
			url := fmt.Sprintf("ws://%s/room?room=r%d", tp.addr, room)
			id, _, err := backendOf(t, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = id
			} else if id != first {
				t.Fatalf("room r%d went to %s and %s", room, first, id)
			}
			c, _, err := websocket.DefaultDialer.Dial(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, c)
		}
		for _, c := range open {
			c.Close()
		}
		used[first] = true
		l, err := tp.srv.Lookup("rooms", fmt.Sprintf("r%d", room))
		if err != nil {
			t.Fatal(err)
		}
		if l.Backend != addrOf[first] || len(l.Preference) != 3 || l.Preference[0] != l.Backend || !l.Sticky {
			t.Fatalf("lookup for r%d: %+v, proxy used %s (%s)", room, l, first, addrOf[first])
		}
	}
	if len(used) != 3 {
		t.Fatalf("20 rooms used only %v", used)
	}
	// Header and cookie keys hash like the query key of the same value.
	want, _ := tp.srv.Lookup("rooms", "alice")
	for _, hdr := range []http.Header{{"X-User": {"alice"}}, {"Cookie": {"sid=alice"}}} {
		id, _, err := backendOf(t, "ws://"+tp.addr+"/room", hdr)
		if err != nil || addrOf[id] != want.Backend {
			t.Fatalf("key from %v went to %s (%v), want %s", hdr, addrOf[id], err, want.Backend)
		}
	}
}

func TestStickyMissingKey(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, stickyConf, 3)
	// lb_key_missing reject: 400 with the keys named.
	_, resp, err := backendOf(t, "ws://"+tp.addr+"/room?other=1", nil)
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("want 400, got %v %v", resp, err)
	}
	// Default fallback: least_conn spreads keyless connections.
	seen := map[string]bool{}
	var open []*websocket.Conn
	for i := 0; i < 6; i++ {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+tp.addr+"/lax", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.WriteMessage(websocket.TextMessage, []byte("__id"))
		_, p, _ := c.ReadMessage()
		seen[string(p)] = true
		open = append(open, c)
	}
	for _, c := range open {
		c.Close()
	}
	if len(seen) != 3 {
		t.Fatalf("least_conn fallback used %v", seen)
	}
	// Plain HTTP on a reject route also needs the key.
	rc := rawRequest(t, tp.addr, "GET /room HTTP/1.1\r\nHost: x\r\n\r\n")
	if rc.Status != 400 {
		t.Fatalf("HTTP without key: %d", rc.Status)
	}
}

func TestStickyClientIPThroughTrustedProxy(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, stickyConf, 3)
	addrOf := map[string]string{}
	for _, b := range tp.backends {
		addrOf[b.ID()] = b.Addr()
	}
	// 127.0.0.1 is trusted: the client is the address it reports.
	for _, ip := range []string{"203.0.113.7", "198.51.100.1", "2001:db8::1"} {
		want, _ := tp.srv.Lookup("ip", ip)
		id, _, err := backendOf(t, "ws://"+tp.addr+"/ip", http.Header{"X-Forwarded-For": {"10.0.0.1, " + ip}})
		if err != nil || addrOf[id] != want.Backend {
			t.Fatalf("client %s went to %s (%v), want %s", ip, addrOf[id], err, want.Backend)
		}
	}
}

func TestLookupUnknownRoute(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, stickyConf, 3)
	if _, err := tp.srv.Lookup("nope", "k"); err == nil {
		t.Fatal("lookup of an unknown route succeeded")
	}
}

// TestLookupLeavesRoundRobinAlone: Lookup is documented as side-effect
// free, so asking many times does not move a round-robin route's position:
// every answer is the same, and the next real connection goes where the
// answers said.
func TestLookupLeavesRoundRobinAlone(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, ":{port} {\n\troute /* {\n\t\tname rr\n\t\tto {b0} {b1} {b2}\n\t\tlb_policy round_robin\n\t}\n}", 3)
	first, err := tp.srv.Lookup("rr", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if l, _ := tp.srv.Lookup("rr", ""); l.Backend != first.Backend {
			t.Fatalf("lookup %d: %s, want %s as the first (the lookups moved the round robin)", i, l.Backend, first.Backend)
		}
	}
	c, _ := dialWS(t, "ws://"+tp.addr+"/ws", nil)
	defer c.Close()
	for _, ri := range tp.srv.Routes() {
		for _, b := range ri.Backends {
			want := int64(0)
			if b.Addr == first.Backend {
				want = 1
			}
			if b.Live != want {
				t.Fatalf("backend %s has %d live, want %d (the connection on %s)", b.Addr, b.Live, want, first.Backend)
			}
		}
	}
}

// TestLongKeyLookupAgreesWithRouting: keys longer than the routing limit
// are cut the same way for routing and for Lookup, so Lookup answers where
// a connection with a long key actually went, for several long keys that
// differ only after the cut.
func TestLongKeyLookupAgreesWithRouting(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, stickyConf, 3)
	addrOf := map[string]string{}
	for _, b := range tp.backends {
		addrOf[b.ID()] = b.Addr()
	}
	prefix := strings.Repeat("k", maxKeyLen)
	for i := range 8 {
		key := prefix + strconv.Itoa(i) // a query value; no escaping needed
		id, _, err := backendOf(t, "ws://"+tp.addr+"/room?room="+key, nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tp.srv.Lookup("rooms", key)
		if err != nil {
			t.Fatal(err)
		}
		if l.Backend != addrOf[id] {
			t.Fatalf("key %d: lookup says %s, the connection went to %s", i, l.Backend, addrOf[id])
		}
	}
}
