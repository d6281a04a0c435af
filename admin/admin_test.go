package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/examples/echoserver"
	"github.com/wsproxy/wsproxy/proxy"
)

func get(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// TestAdminAPI runs a real proxy and asks its admin API where keys go, then
// connects through the proxy to check the answer.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	var addrs []string
	ids := map[string]string{}
	for i := 0; i < 3; i++ {
		b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: fmt.Sprintf("b%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		addrs = append(addrs, b.Addr())
		ids[b.ID()] = b.Addr()
	}
	srv, ln, a := startProxyAndAPI(t, "admin-test", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /chat {\n\t\tname chat\n\t\tto %s\n\t\tlb_policy hash query:room\n\t}\n}\n", port, strings.Join(addrs, " "))
	})
	defer srv.Shutdown(t.Context())
	base := "http://" + a.Addr().String()

	for room := 0; room < 10; room++ {
		var l proxy.Lookup
		if code := get(t, fmt.Sprintf("%s/lookup?route=chat&key=r%d", base, room), &l); code != 200 {
			t.Fatalf("lookup: %d", code)
		}
		c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/chat?room=r%d", ln.Addr(), room), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.WriteMessage(websocket.TextMessage, []byte("__id"))
		_, id, _ := c.ReadMessage()
		c.Close()
		if ids[string(id)] != l.Backend {
			t.Fatalf("room r%d: admin said %s, proxy used %s", room, l.Backend, ids[string(id)])
		}
	}
	var routes []proxy.RouteInfo
	if code := get(t, base+"/routes", &routes); code != 200 || len(routes) != 1 || len(routes[0].Backends) != 3 || routes[0].Keys != "query:room" {
		t.Fatalf("routes: %d %+v", code, routes)
	}
	var st map[string]any
	if code := get(t, base+"/status", &st); code != 200 || st["version"] != "test" || st["config_file"] != "admin-test" {
		t.Fatalf("status: %d %v", code, st)
	}
	var e map[string]string
	if code := get(t, base+"/lookup?route=nope&key=x", &e); code != 404 || !strings.Contains(e["error"], "chat") {
		t.Fatalf("unknown route: %d %v", code, e)
	}
	if code := get(t, base+"/lookup?key=x", nil); code != 400 {
		t.Fatalf("missing route: %d", code)
	}
	if code := get(t, base+"/debug/pprof/", nil); code != 200 {
		t.Fatalf("pprof: %d", code)
	}
}

// startProxyAndAPI starts a proxy on a loopback port with the config that
// text makes for that port, and the admin API in front of it.
func startProxyAndAPI(t *testing.T, name string, text func(port int) string) (*proxy.Server, net.Listener, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	cfg, err := config.Parse(name, []byte(text(port)))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := proxy.New(cfg, proxy.Options{Logger: log, Listeners: map[int]net.Listener{port: ln}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := Serve(aln, Options{Version: "test", Proxy: srv, Logger: log})
	t.Cleanup(func() { a.Close() })
	return srv, ln, a
}

// TestHealthReady: /health/ready answers 200 while the proxy serves (on the
// port asked for), 503 for a port it does not listen on and from the
// moment it starts shutting down; /health/live stays 200.
func TestHealthReady(t *testing.T) {
	t.Parallel()
	b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv, ln, a := startProxyAndAPI(t, "health-test", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /chat {\n\t\tto %s\n\t}\n}\n", port, b.Addr())
	})
	base := "http://" + a.Addr().String()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, c := range []struct {
		path string
		want int
	}{
		{"/health/ready", 200},
		{fmt.Sprintf("/health/ready?port=%d", port), 200},
		{fmt.Sprintf("/health/ready?port=%d", port+1), 503},
		{"/health/ready?port=x", 400},
		{"/health/live", 200},
	} {
		if code := get(t, base+c.path, nil); code != c.want {
			t.Errorf("GET %s: %d, want %d", c.path, code, c.want)
		}
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code := get(t, base+"/health/ready", nil); code != 503 {
		t.Errorf("GET /health/ready after Shutdown: %d, want 503", code)
	}
	if code := get(t, base+"/health/live", nil); code != 200 {
		t.Errorf("GET /health/live after Shutdown: %d, want 200", code)
	}
}
