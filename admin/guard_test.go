package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/proxy"
)

// request sends method to the API at addr with the given Host and header
// fields, and returns the status.
func request(t *testing.T, method, addr, host string, hdr ...string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+"/status", nil)
	if method == http.MethodPost {
		req, err = http.NewRequest(method, "http://"+addr+"/reload", nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdminRefusesCrossSiteRequests: a page elsewhere (through DNS
// rebinding or a form post) cannot reach the API, whose own address and
// loopback names still can.
func TestAdminRefusesCrossSiteRequests(t *testing.T) {
	t.Parallel()
	srv, _, a := startProxyAndAPI(t, "guard-test", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /chat {\n\t\tto 127.0.0.1:1\n\t}\n}\n", port)
	})
	defer srv.Shutdown(t.Context())
	addr := a.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, c := range []struct {
		method, host string
		hdr          []string
		want         int
	}{
		{"POST", "evil.example", []string{"Origin", "http://evil.example"}, 403},
		{"POST", "evil.example:" + port, nil, 403},
		{"POST", "", []string{"Origin", "http://evil.example"}, 403},
		{"POST", "", []string{"Origin", "null"}, 403},
		{"GET", "evil.example:" + port, nil, 403},
		{"GET", "10.0.0.1:" + port, nil, 403}, // only with allow_remote
		{"POST", "", nil, 501},                // reached the handler: no reload configured
		{"GET", "", nil, 200},
		{"GET", "localhost:" + port, nil, 200},
		{"GET", "[::1]:" + port, nil, 200},
		{"GET", "", []string{"Origin", "http://" + addr}, 200},
		{"GET", "", []string{"Origin", "http://localhost:" + port}, 200},
	} {
		if got := request(t, c.method, addr, c.host, c.hdr...); got != c.want {
			t.Errorf("%s Host %q %v: status %d, want %d", c.method, c.host, c.hdr, got, c.want)
		}
	}
	// pprof is behind the same checks.
	req, _ := http.NewRequest("GET", "http://"+addr+"/debug/pprof/", nil)
	req.Host = "evil.example:" + port
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("pprof with a foreign Host: %d", resp.StatusCode)
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestAdminToken: with a token every request needs it; with allow_remote
// any IP literal with the API's port is an acceptable Host, a name is not.
func TestAdminToken(t *testing.T) {
	t.Parallel()
	srv, _, a := startProxyAndAPI(t, "token-test", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /chat {\n\t\tto 127.0.0.1:1\n\t}\n}\n", port)
	})
	defer srv.Shutdown(t.Context())
	a.Close()
	b := Serve(mustListen(t), Options{Version: "test", Proxy: srv, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Token: "s3cret-token", AllowRemote: true})
	defer b.Close()
	addr := b.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, c := range []struct {
		host string
		hdr  []string
		want int
	}{
		{"", nil, 401},
		{"", []string{"Authorization", "Bearer wrong"}, 401},
		{"", []string{"Authorization", "Bearer s3cret-token-and-more"}, 401},
		{"", []string{"Authorization", "Basic s3cret-token"}, 401},
		{"", []string{"Authorization", "Bearer s3cret-token"}, 200},
		{"10.1.2.3:" + port, []string{"Authorization", "Bearer s3cret-token"}, 200},
		{"[2001:db8::1]:" + port, []string{"Authorization", "Bearer s3cret-token"}, 200},
		{"10.1.2.3:1", []string{"Authorization", "Bearer s3cret-token"}, 403},
		{"evil.example:" + port, []string{"Authorization", "Bearer s3cret-token"}, 403},
	} {
		if got := request(t, "GET", addr, c.host, c.hdr...); got != c.want {
			t.Errorf("Host %q %v: status %d, want %d", c.host, c.hdr, got, c.want)
		}
	}
}

// TestAdminHealthNeedsNoToken: health probes pass the guard, whatever
// their Host, and need no token.
func TestAdminHealthNeedsNoToken(t *testing.T) {
	acc := new(atomic.Pointer[access])
	acc.Store(newAccess("s3cret", true))
	h := guard(Options{Token: "s3cret", AllowRemote: true}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2019}, acc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for _, tc := range []struct {
		method, path, host string
		want               int
	}{
		{"GET", "/health/ready", "10.1.2.3:2019", 204},
		{"GET", "/health/live", "proxy.internal", 204},
		{"POST", "/health/ready", "127.0.0.1:2019", 401},
		{"GET", "/status", "127.0.0.1:2019", 401},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s %s Host %s: %d, want %d", tc.method, tc.path, tc.host, w.Code, tc.want)
		}
	}
}

// TestReloadAnswerIsSnakeCase: POST /reload answers with the same
// snake_case field names as /status (wsproxy reload prints this body).
func TestReloadAnswerIsSnakeCase(t *testing.T) {
	t.Parallel()
	srv, _, _ := startProxyAndAPI(t, "reload-json", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /chat {\n\t\tto 127.0.0.1:1\n\t}\n}\n", port)
	})
	defer srv.Shutdown(t.Context())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rep := proxy.ReloadReport{Version: 2, Added: []string{"a"}, Unchanged: 1, DrainedRoutes: 1, DrainedConns: 3, Unreachable: []string{"r: x"}, KeptConns: 4}
	a := Serve(ln, Options{Version: "test", Proxy: srv, Logger: slog.New(slog.DiscardHandler),
		Reload: func() (proxy.ReloadReport, error) { return rep, nil }})
	defer a.Close()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://"+ln.Addr().String()+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "added", "removed", "changed", "unchanged", "drained_routes", "drained_connections", "unreachable", "kept_connections"} {
		if _, ok := got[k]; !ok {
			t.Errorf("reload answer lacks %q: %v", k, got)
		}
	}
	if len(got) != 9 {
		t.Errorf("reload answer has %d fields, want 9: %v", len(got), got)
	}
}

// TestAdminServerBoundsEveryConnection: the API's server bounds reading a
// request, writing an answer and an idle keep-alive connection, so a
// client that stalls cannot hold a goroutine and a descriptor for ever;
// and the write bound leaves room for pprof's default 30 s profile.
func TestAdminServerBoundsEveryConnection(t *testing.T) {
	t.Parallel()
	srv, _, a := startProxyAndAPI(t, "bounds", func(port int) string {
		return fmt.Sprintf(":%d {\n\troute /chat {\n\t\tto 127.0.0.1:1\n\t}\n}\n", port)
	})
	defer srv.Shutdown(t.Context())
	s := a.srv
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.IdleTimeout <= 0 {
		t.Errorf("read bounds %v, %v, idle %v: want all set", s.ReadHeaderTimeout, s.ReadTimeout, s.IdleTimeout)
	}
	if s.WriteTimeout < 60*time.Second {
		t.Errorf("WriteTimeout %v: a profile of pprof's default length would be refused", s.WriteTimeout)
	}
}
