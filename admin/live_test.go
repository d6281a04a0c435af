package admin

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/examples/echoserver"
	"github.com/wsproxy/wsproxy/proxy"
)

// scrape returns the /metrics text of the API at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// until polls cond every 50ms for up to d.
func until(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// TestLiveCountersAndConnections: a long-lived connection's messages and
// bytes reach /metrics and /routes while it stays open (two scrapes, each
// after more traffic), and /connections lists it with its key, backend,
// traffic, last activity and ping round trip.
func TestLiveCountersAndConnections(t *testing.T) {
	t.Parallel()
	b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "b0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv, ln, a := startProxyAndAPI(t, "live-test", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /ws {\n\t\tname chat\n\t\tto %s\n\t\tlb_policy hash query:user\n\t\tping_client 300ms 2s\n\t}\n}\n", port, b.Addr())
	})
	api := a.Addr().String()
	c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws?user=alice", ln.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange := func(n int) {
		for i := 0; i < n; i++ {
			if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatal(err)
			}
		}
	}
	up := func() float64 {
		return metricValue(t, scrape(t, api), "wsproxy_websocket_messages_total", `route="chat"`, `direction="up"`)
	}
	start := time.Now()
	for i, want := range []float64{10, 20} {
		exchange(10)
		var got float64
		if !until(3*time.Second, func() bool { got = up(); return got >= want }) {
			t.Fatalf("scrape %d: %v messages up, want %v while the connection is open", i+1, got, want)
		}
		t.Logf("scrape %d after %v: %v messages up", i+1, time.Since(start).Round(time.Millisecond), got)
	}
	if srv.Sessions() != 1 {
		t.Fatalf("%d live sessions; the connection must still be open", srv.Sessions())
	}
	body := scrape(t, api)
	if v := metricValue(t, body, "wsproxy_websocket_bytes_total", `route="chat"`, `direction="down"`); v <= 0 {
		t.Fatalf("bytes down %v", v)
	}
	var routes []proxy.RouteInfo
	get(t, "http://"+api+"/routes", &routes)
	if tr := routes[0].Traffic; tr.Up.Messages < 20 || tr.Down.Messages < 20 || tr.Up.Bytes == 0 {
		t.Fatalf("/routes traffic %+v", tr)
	}
	// The proxy pings the client every 300ms of silence; the client's
	// reader answers while it waits for the next echo.
	time.Sleep(500 * time.Millisecond)
	exchange(1)
	var page proxy.ConnectionsPage
	if !until(3*time.Second, func() bool {
		get(t, "http://"+api+"/connections?route=chat&key=alice", &page)
		return len(page.Connections) == 1 && page.Connections[0].ClientPingRTTMs > 0 && page.Connections[0].Up.Messages >= 21
	}) {
		t.Fatalf("/connections = %+v", page)
	}
	ci := page.Connections[0]
	if page.Total != 1 || ci.Key != "alice" || ci.Backend != b.Addr() || ci.AgeSeconds <= 0 || ci.LastActivity.IsZero() || ci.Down.Bytes == 0 {
		t.Fatalf("/connections = %+v", page)
	}
	if get(t, "http://"+api+"/connections?key=bob", &page); page.Total != 0 {
		t.Fatalf("key bob: %+v", page)
	}
	if code := get(t, "http://"+api+"/connections?route=nope", nil); code != http.StatusNotFound {
		t.Fatalf("unknown route: %d", code)
	}
	if code := get(t, "http://"+api+"/connections?limit=x", nil); code != http.StatusBadRequest {
		t.Fatalf("bad limit: %d", code)
	}
}

// TestConnectionsPaging: pages of /connections cover every live
// connection once, oldest first.
func TestConnectionsPaging(t *testing.T) {
	t.Parallel()
	b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "b0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, ln, a := startProxyAndAPI(t, "paging-test", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /ws {\n\t\tname chat\n\t\tto %s\n\t\tlb_policy hash query:user\n\t}\n}\n", port, b.Addr())
	})
	for i := 0; i < 7; i++ {
		c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws?user=u%d", ln.Addr(), i), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	seen := map[string]bool{}
	var last time.Time
	for off := 0; off < 7; off += 3 {
		var page proxy.ConnectionsPage
		get(t, fmt.Sprintf("http://%s/connections?offset=%d&limit=3", a.Addr(), off), &page)
		if page.Total != 7 || len(page.Connections) != min(3, 7-off) {
			t.Fatalf("offset %d: %+v", off, page)
		}
		for _, c := range page.Connections {
			if seen[c.Key] || c.Started.Before(last) {
				t.Fatalf("key %s twice or out of order", c.Key)
			}
			seen[c.Key], last = true, c.Started
		}
	}
	if len(seen) != 7 {
		t.Fatalf("pages covered %d connections, want 7", len(seen))
	}
}
