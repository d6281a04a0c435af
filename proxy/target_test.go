package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/upgrade"
)

func TestNormalisePath(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in, want string
		slash    bool
		bad      bool
	}{
		{"/ws/x", "/ws/x", false, false},
		{"", "/", false, false},
		{"/w%73/%7e%2D", "/ws/~-", false, false},
		{"/caf%c3%a9", "/caf%C3%A9", false, false},
		{"/a b/\x80", "/a%20b/%80", false, false},
		{"/a%2fb", "/a%2Fb", true, false},
		{`/a\b`, "/a%5Cb", true, false},
		{"/a%5cb", "/a%5Cb", true, false},
		{"//double//", "//double//", false, false},
		{"/a/..", "", false, true},
		{"/a/./b", "", false, true},
		{"/a/%2e%2E/b", "", false, true},
		{"/a/.%2e", "", false, true},
		{"/admin/..%2fws/x", "", false, true},
		{`/ws\..\admin`, "", false, true},
		{"/a/..b/.c", "/a/..b/.c", false, false},
		{"/a%zz", "", false, true},
		{"/a%2", "", false, true},
		{"/a%00", "", false, true},
	}
	for _, c := range cases {
		got, slash, why := normalisePath(nil, []byte(c.in))
		if c.bad {
			if why == "" {
				t.Errorf("%q: accepted as %q, want refused", c.in, got)
			}
			continue
		}
		if why != "" || string(got) != c.want || slash != c.slash {
			t.Errorf("%q: %q slash=%v %q, want %q slash=%v", c.in, got, slash, why, c.want, c.slash)
		}
	}
}

// TestPathRoutedAsForwarded checks that the route is chosen on exactly the
// path the backend is sent, and that ambiguous spellings reach no backend.
func TestPathRoutedAsForwarded(t *testing.T) {
	t.Parallel()
	open, admin, files := recordingHTTP(t, nil), recordingHTTP(t, nil), recordingHTTP(t, nil)
	tp := startProxy(t, fmt.Sprintf(`:{port} {
	route /ws/* {
		to %s
	}
	route /files/* {
		allow_encoded_slash
		to %s
	}
	route /* {
		to %s
	}
}`, open.addr, files.addr, admin.addr), 0)
	get := func(target string) response {
		c, br := dialProxy(t, tp.addr)
		io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		return readResponse(t, br)
	}
	for _, target := range []string{
		"/ws/../admin/x", "/ws/%2e%2e/admin", "/ws/.%2E/admin", "/ws/./x",
		"/admin/..%2fws/x", "/ws/..%2Fadmin", "/ws/a%2fb", `/ws\..\admin`, `/ws/a\b`, "/ws/x%zz",
	} {
		if r := get(target); r.status != 400 || r.header["connection"] != "close" {
			t.Errorf("%s: status %d, Connection %q, want 400 and close", target, r.status, r.header["connection"])
		}
	}
	if got := append(open.requests(), admin.requests()...); len(got) > 0 {
		t.Fatalf("ambiguous paths reached backends: %q", got)
	}
	for _, c := range []struct {
		target string
		rec    *recorder
		want   string
	}{
		{"/w%73/x", open, "/ws/x"},
		{"/ws/caf%c3%a9?q=%2f&r=1", open, "/ws/caf%C3%A9?q=%2F&r=1"}, // fasthttp re-encodes parsed query args
		{"/files/a%2fb", files, "/files/a%2Fb"},
		{"/admin/x", admin, "/admin/x"},
	} {
		if r := get(c.target); r.status != 200 {
			t.Errorf("%s: status %d", c.target, r.status)
			continue
		}
		got := c.rec.requests()
		if len(got) == 0 || got[len(got)-1] != "x "+c.want {
			t.Errorf("%s: backend got %q, want %q", c.target, got, c.want)
		}
	}

	// The same for WebSockets: refused before any backend is dialled.
	rc := rawRequest(t, tp.addr, wsHead("/admin/..%2fws/x"))
	if rc.Status != 400 {
		t.Fatalf("WebSocket with a dot segment: status %d", rc.Status)
	}
}

// headBackend is a WebSocket backend that accepts one handshake and
// reports its request head.
func headBackend(t *testing.T) (addr string, head <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		var h strings.Builder
		key := ""
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if l == "\r\n" {
				break
			}
			h.WriteString(l)
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Key") {
				key = strings.TrimSpace(v)
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", upgrade.AcceptKey([]byte(key)))
		got <- h.String()
		io.Copy(io.Discard, br)
	}()
	return ln.Addr().String(), got
}

// TestAbsoluteFormAuthorityWins sends absolute-form request-targets whose
// authority differs from the Host field: the authority chooses the site
// and is the Host the backend gets, for plain HTTP and WebSockets.
func TestAbsoluteFormAuthorityWins(t *testing.T) {
	t.Parallel()
	httpA, httpB := recordingHTTP(t, nil), recordingHTTP(t, nil)
	wsA, headA := headBackend(t)
	tp := startProxy(t, fmt.Sprintf(`http://a.test:{port} {
	route /ws {
		to %s
	}
	route /* {
		to %s
	}
}
http://b.test:{port} {
	route /* {
		to %s
	}
}`, wsA, httpA.addr, httpB.addr), 0)

	c, br := dialProxy(t, tp.addr)
	io.WriteString(c, "GET http://a.test/api?x=1 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
	if r := readResponse(t, br); r.status != 200 {
		t.Fatalf("absolute-form HTTP: status %d %q", r.status, r.body)
	}
	if got := httpA.requests(); len(got) != 1 || got[0] != "a.test /api?x=1" || len(httpB.requests()) > 0 {
		t.Fatalf("absolute-form HTTP: a got %q, b got %q", got, httpB.requests())
	}

	head := strings.Replace(wsHead("http://a.test/ws?room=1"), "Host: localhost", "Host: b.test", 1)
	rc := rawRequest(t, tp.addr, head)
	if rc.Status != 101 {
		t.Fatalf("absolute-form WebSocket: status %d", rc.Status)
	}
	h := <-headA
	for _, want := range []string{"GET /ws?room=1 HTTP/1.1\r\n", "\r\nHost: a.test\r\n", "\r\nX-Forwarded-Host: a.test\r\n"} {
		if !strings.Contains("\r\n"+h, want) {
			t.Errorf("backend handshake lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(h, "b.test") {
		t.Errorf("backend handshake carries the Host field's b.test:\n%s", h)
	}
}
