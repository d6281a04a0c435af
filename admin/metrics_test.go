package admin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/examples/echoserver"
)

// metricValue finds one sample in a Prometheus text exposition.
func metricValue(t *testing.T, body, name string, labels ...string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return -1
}

// TestMetricsAndAccessLog runs a scripted set of connections through a real
// proxy, then reads /metrics over HTTP and the access log file.
func TestMetricsAndAccessLog(t *testing.T) {
	t.Parallel()
	b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "b0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	logPath := filepath.Join(t.TempDir(), "access.log")
	srv, ln, a := startProxyAndAPI(t, "metrics-test", func(port int) string {
		return fmt.Sprintf("{\n\taccess_log %s\n}\n:%d {\n\troute /ws {\n\t\tname chat\n\t\tto %s\n\t\torigins https://ok.example\n\t\tping_client 100ms 2s\n\t}\n\troute /* {\n\t\tname api\n\t\tto %s\n\t}\n}\n",
			logPath, port, b.Addr(), b.Addr())
	})

	url := fmt.Sprintf("ws://%s/ws", ln.Addr())
	hdr := http.Header{"Origin": {"https://ok.example"}}
	// 1: the client closes with 1000, after a ping round trip.
	c1, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	c1.WriteMessage(websocket.TextMessage, []byte("hello"))
	c1.ReadMessage()
	time.Sleep(700 * time.Millisecond) // the proxy pings meanwhile
	c1.WriteMessage(websocket.TextMessage, []byte("again"))
	c1.ReadMessage() // answers the ping on its way to the echo
	time.Sleep(50 * time.Millisecond)
	c1.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"))
	c1.ReadMessage()
	c1.Close()
	// 2: the backend closes with 4001.
	c2, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	c2.WriteMessage(websocket.TextMessage, []byte("__close 4001 done"))
	c2.ReadMessage()
	c2.Close()
	// 3: a foreign origin is refused with 403.
	if _, resp, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin: %v", err)
	}
	// 4 and 5: plain HTTP.
	for i := 0; i < 2; i++ {
		resp, err := http.Get(fmt.Sprintf("http://%s/api/%d", ln.Addr(), i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Sessions() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	srv.Shutdown(t.Context())

	resp, err := http.Get("http://" + a.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(raw)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wsproxy_websocket_handshakes_total", []string{`route="chat"`, `status="101"`}, 2},
		{"wsproxy_websocket_handshakes_total", []string{`route="chat"`, `status="403"`}, 1},
		{"wsproxy_websocket_connections_total", []string{`route="chat"`, `backend="` + b.Addr() + `"`}, 2},
		{"wsproxy_websocket_closes_total", []string{`side="client"`, `code="1000"`}, 1},
		{"wsproxy_websocket_closes_total", []string{`side="backend"`, `code="4001"`}, 1},
		{"wsproxy_websocket_messages_total", []string{`route="chat"`, `direction="up"`}, 3},
		{"wsproxy_websocket_connections", []string{`route="chat"`}, 0},
		{"wsproxy_http_requests_total", []string{`route="api"`, `status="200"`}, 2},
		{"wsproxy_backend_healthy", []string{`route="chat"`}, 1},
		{"wsproxy_websocket_connection_duration_seconds_count", []string{`route="chat"`}, 2},
		{"wsproxy_ping_rtt_seconds_count", []string{`side="client"`}, 1},
	} {
		if got := metricValue(t, body, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := metricValue(t, body, "wsproxy_websocket_bytes_total", `route="chat"`, `direction="down"`); got <= 0 {
		t.Errorf("bytes down %v", got)
	}

	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ws, plain []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %s", sc.Text())
		}
		switch m["msg"] {
		case "websocket":
			ws = append(ws, m)
		case "http":
			plain = append(plain, m)
		}
	}
	if len(ws) != 2 || len(plain) != 2 {
		t.Fatalf("%d websocket and %d http lines, want 2 and 2", len(ws), len(plain))
	}
	codes := map[float64]string{}
	for _, m := range ws {
		codes[m["close_code"].(float64)] = m["closed_by"].(string)
		if m["route"] != "chat" || m["backend"] != b.Addr() || m["bytes_up"].(float64) <= 0 {
			t.Errorf("websocket line %v", m)
		}
	}
	if codes[1000] != "client" || codes[4001] != "backend" {
		t.Errorf("close codes %v", codes)
	}
	if !regexp.MustCompile(`^/api/\d$`).MatchString(plain[0]["uri"].(string)) || plain[0]["status"].(float64) != 200 {
		t.Errorf("http line %v", plain[0])
	}
}
