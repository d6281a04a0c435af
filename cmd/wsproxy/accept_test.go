package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/examples/echoserver"
)

// TestAcceptSurvivesFDExhaustion runs the binary with 64 file descriptors,
// holds idle connections until its accept fails with EMFILE, and checks that
// the proxy refuses new clients at once meanwhile (never leaves them in the
// backlog), counts the episode, and accepts again once the fds are back.
func TestAcceptSurvivesFDExhaustion(t *testing.T) {
	t.Parallel()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	port, adminPort := freePort(t), freePort(t)
	conf := writeFile(t, "Caddyfile", fmt.Sprintf(`{
	admin 127.0.0.1:%d
	handshake_timeout 60s
	access_log off
}
http://127.0.0.1:%d {
	route /ws {
		to %s
	}
}
`, adminPort, port, b.Addr()))
	// ulimit -n sets the hard limit too, so Go's runtime cannot raise the
	// soft one back at start; exec keeps the PID the proxy's.
	const limit = 64
	cmd := exec.Command("sh", "-c", `ulimit -n `+strconv.Itoa(limit)+` && exec "$0" "$@"`, bin, "run", "-config", conf)
	p := startCmd(t, cmd)
	p.waitLog(t, `msg=listening.*:`+strconv.Itoa(port))
	// The admin API comes up after the ports: exhausting fds before it has
	// its socket would stop the proxy, as a failed admin listen must.
	p.waitLog(t, `admin API listening`)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// Idle connections: the proxy accepts each and waits for its request,
	// one fd apiece, until accept fails.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 2*limit; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("%d %v\n%s", i, err, p.logsString())
		}
		held = append(held, c)
	}
	p.waitLog(t, `accept failing`)

	// A new client is refused promptly: closed, not left hanging.
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	got, err := io.ReadAll(c)
	c.Close()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("a client during fd exhaustion hung for %v (read %q)\n%s", time.Since(start).Round(time.Millisecond), got, p.logsString())
	}
	if len(got) > 0 && !strings.Contains(string(got), " 503 ") {
		t.Fatalf("a client during fd exhaustion got %q", got)
	}

	for _, c := range held {
		c.Close()
	}
	held = nil
	// Once the proxy has closed its side of them, new WebSockets work again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		ws, id, err := tryEchoID("ws://" + addr + "/ws")
		if err == nil {
			ws.Close()
			if id != "b" {
				t.Fatalf("backend %q", id)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("accept did not resume: %v\n%s", err, p.logsString())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The episode ends at an accept after a quiet second.
	time.Sleep(1100 * time.Millisecond)
	ws, _, err := tryEchoID("ws://" + addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
	m := p.waitLog(t, `accepting again.*errors=(\d+)`)
	if n, _ := strconv.Atoi(m[1]); n < 1 {
		t.Fatalf("episode logged with %s errors", m[1])
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`wsproxy_accept_errors_total\{[^}]*error="EMFILE"[^}]*\} [1-9]`).Match(body) {
		t.Fatalf("metrics lack the accept errors:\n%s", grepLines(string(body), "accept"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// tryEchoID is echoID that reports a failure instead of ending the test.
func tryEchoID(url string) (*websocket.Conn, string, error) {
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, "", err
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte("__id")); err != nil {
		c.Close()
		return nil, "", err
	}
	_, p, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, "", err
	}
	c.SetReadDeadline(time.Time{})
	return c, string(p), nil
}

func (p *proc) logsString() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}
