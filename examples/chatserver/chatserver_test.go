package chatserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

const testTimeout = 10 * time.Second

// start runs a server on a free loopback port and closes it when the test
// ends.
func start(t *testing.T, opts Options) *Server {
	t.Helper()
	srv, err := Listen("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

// joinURL is the WebSocket URL of room for user on srv.
func joinURL(srv *Server, room, user string) string {
	return "ws://" + srv.Addr() + "/chat?" + url.Values{"room": {room}, "user": {user}}.Encode()
}

// join connects user to room and reads the "joined" message. The
// connection is closed when the test ends, before the server is (cleanups
// run last-in first-out).
func join(t *testing.T, srv *Server, room, user string) (*websocket.Conn, System) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, _, err := (&websocket.Dialer{}).DialContext(ctx, joinURL(srv, room, user), nil)
	if err != nil {
		t.Fatalf("join %s as %s: %v", room, user, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	var sys System
	readJSON(t, c, &sys)
	if sys.System != SystemJoined || sys.Backend != srv.ID() || sys.Room != room {
		t.Fatalf("first message %+v, want joined %s on %s", sys, room, srv.ID())
	}
	return c, sys
}

func readJSON(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	mt, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if mt != websocket.TextMessage {
		t.Fatalf("message type %d, want text", mt)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%q: %v", data, err)
	}
}

func say(t *testing.T, c *websocket.Conn, text string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func expectMessage(t *testing.T, c *websocket.Conn, want Message) {
	t.Helper()
	var got Message
	readJSON(t, c, &got)
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// closeCode reads until the connection fails and returns the close code,
// or -1 if the error is not a *websocket.CloseError.
func closeCode(c *websocket.Conn) int {
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return -1
	}
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBroadcastInRoom(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ID: "chat-1"})
	ann, sys := join(t, srv, "lobby", "ann")
	if sys.Members != 1 || sys.User != "ann" {
		t.Fatalf("joined %+v, want 1 member, user ann", sys)
	}
	bob, sys := join(t, srv, "lobby", "bob")
	if sys.Members != 2 {
		t.Fatalf("joined %+v, want 2 members", sys)
	}
	cat, _ := join(t, srv, "lobby", "") // no user: the default name

	// Every member gets every message, the sender included, in order.
	msgs := []Message{
		{Room: "lobby", User: "ann", Text: "hello", Backend: "chat-1"},
		{Room: "lobby", User: "bob", Text: "hi ann ✓", Backend: "chat-1"},
		{Room: "lobby", User: DefaultUser, Text: `"quoted" <b>not html</b>`, Backend: "chat-1"},
		{Room: "lobby", User: "ann", Text: "", Backend: "chat-1"},
	}
	senders := map[string]*websocket.Conn{"ann": ann, "bob": bob, DefaultUser: cat}
	for _, m := range msgs {
		say(t, senders[m.User], m.Text)
		for _, c := range []*websocket.Conn{ann, bob, cat} {
			expectMessage(t, c, m)
		}
	}

	// Many messages from all at once: each member sees each sender's
	// messages in the order sent. Members read concurrently, as real
	// clients do (one that stops reading is disconnected).
	const n = 200
	for name, c := range senders {
		go func() {
			for i := range n {
				if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "%s %d", name, i)); err != nil {
					return
				}
			}
		}()
	}
	errs := make(chan error, len(senders))
	for _, c := range senders {
		go func() {
			next := map[string]int{}
			for range len(senders) * n {
				var m Message
				_, data, err := c.ReadMessage()
				if err == nil {
					err = json.Unmarshal(data, &m)
				}
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("%s %d", m.User, next[m.User]); m.Text != want {
					errs <- fmt.Errorf("got %q from %s, want %q", m.Text, m.User, want)
					return
				}
				next[m.User]++
			}
			errs <- nil
		}()
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoomsAreIsolated(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ID: "chat-1"})
	a1, _ := join(t, srv, "a", "a1")
	a2, _ := join(t, srv, "a", "a2")
	b1, _ := join(t, srv, "b", "b1")
	// Room names are compared exactly.
	caseB, _ := join(t, srv, "B", "B1")
	if srv.Members("a") != 2 || srv.Members("b") != 1 || srv.Members("B") != 1 || srv.Conns() != 4 {
		t.Fatalf("members a=%d b=%d B=%d, conns %d", srv.Members("a"), srv.Members("b"), srv.Members("B"), srv.Conns())
	}

	say(t, a1, "for a")
	say(t, b1, "for b")
	say(t, caseB, "for B")
	expectMessage(t, a1, Message{Room: "a", User: "a1", Text: "for a", Backend: "chat-1"})
	expectMessage(t, a2, Message{Room: "a", User: "a1", Text: "for a", Backend: "chat-1"})
	expectMessage(t, b1, Message{Room: "b", User: "b1", Text: "for b", Backend: "chat-1"})
	expectMessage(t, caseB, Message{Room: "B", User: "B1", Text: "for B", Backend: "chat-1"})

	// Nothing else arrives: a marker sent afterwards in each room is the
	// next message each member reads.
	say(t, a2, "marker a")
	say(t, b1, "marker b")
	say(t, caseB, "marker B")
	expectMessage(t, a1, Message{Room: "a", User: "a2", Text: "marker a", Backend: "chat-1"})
	expectMessage(t, a2, Message{Room: "a", User: "a2", Text: "marker a", Backend: "chat-1"})
	expectMessage(t, b1, Message{Room: "b", User: "b1", Text: "marker b", Backend: "chat-1"})
	expectMessage(t, caseB, Message{Room: "B", User: "B1", Text: "marker B", Backend: "chat-1"})

	// A member that leaves stops counting; an empty room disappears.
	_ = b1.Close()
	eventually(t, "room b empty", func() bool { return srv.Members("b") == 0 })
	srv.mu.Lock()
	_, kept := srv.rooms["b"]
	srv.mu.Unlock()
	if kept {
		t.Error("empty room b is still in the room map")
	}
	say(t, a1, "after b left")
	expectMessage(t, a2, Message{Room: "a", User: "a1", Text: "after b left", Backend: "chat-1"})
}

func TestHandshakeErrors(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{})
	for _, tc := range []struct {
		name, query string
	}{
		{"no room", "user=ann"},
		{"empty room", "room=&user=ann"},
		{"room too long", "room=" + strings.Repeat("r", MaxRoomLen+1)},
		{"user too long", "room=x&user=" + strings.Repeat("u", MaxUserLen+1)},
		{"control character", "room=a%0Ab"},
		{"invalid UTF-8", "room=%FF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := websocket.DefaultDialer.Dial("ws://"+srv.Addr()+"/chat?"+tc.query, nil)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("response %v, %v; want 400", resp, err)
			}
		})
	}
	// The longest names are accepted.
	join(t, srv, strings.Repeat("r", MaxRoomLen), strings.Repeat("u", MaxUserLen))
}

func TestBinaryMessageRefused(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{})
	c, _ := join(t, srv, "lobby", "ann")
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(c); code != websocket.CloseUnsupportedData {
		t.Fatalf("close code %d, want %d", code, websocket.CloseUnsupportedData)
	}
	eventually(t, "client gone", func() bool { return srv.Conns() == 0 })
}

func TestReadLimit(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ReadLimit: 100})
	c, _ := join(t, srv, "lobby", "ann")
	say(t, c, strings.Repeat("x", 100))
	var m Message
	readJSON(t, c, &m)
	if len(m.Text) != 100 {
		t.Fatalf("echoed %d bytes", len(m.Text))
	}
	say(t, c, strings.Repeat("x", 101))
	if code := closeCode(c); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want %d", code, websocket.CloseMessageTooBig)
	}
}

// TestSlowClientDropped: a member that does not read is disconnected once
// its socket buffers and its queue are full, and the others keep getting
// every message.
func TestSlowClientDropped(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ReadLimit: 64 << 10, SendBuffer: 256 << 10, WriteTimeout: 200 * time.Millisecond})
	fast, _ := join(t, srv, "lobby", "fast")
	join(t, srv, "lobby", "slow") // never reads
	big := strings.Repeat("x", 60<<10)
	// 24 MB, far more than the slow client's socket buffers hold. The fast
	// client reads its own message before sending the next, so its queue
	// never holds more than one.
	for i := 0; srv.Members("lobby") == 2; i++ {
		if i == 400 {
			t.Fatal("the slow client is still in the room")
		}
		say(t, fast, big)
		var m Message
		readJSON(t, fast, &m)
		if m.Text != big {
			t.Fatalf("fast client got %d bytes", len(m.Text))
		}
	}
	say(t, fast, "still here")
	expectMessage(t, fast, Message{Room: "lobby", User: "fast", Text: "still here", Backend: srv.ID()})
}

func TestHTTP(t *testing.T) {
	t.Parallel()
	srv := start(t, Options{ID: "web-1"})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: testTimeout}
	for _, tc := range []struct {
		method, path string
		status       int
		wantType     string
		wantBody     string
	}{
		{"GET", "/?room=lobby&user=ann", 200, "text/html; charset=utf-8", "<title>wsproxy chat</title>"},
		{"GET", "/healthz", 200, "text/plain; charset=utf-8", "ok"},
		{"GET", "/chat?room=lobby", http.StatusUpgradeRequired, "text/plain; charset=utf-8", "WebSocket endpoint"},
		{"GET", "/other", 404, "text/plain; charset=utf-8", "not found"},
		{"POST", "/", 404, "text/plain; charset=utf-8", "not found"},
	} {
		req, err := http.NewRequest(tc.method, "http://"+srv.Addr()+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.wantType || !bytes.Contains(body, []byte(tc.wantBody)) {
			t.Errorf("%s %s: %d %q %.60q, want %d %q containing %q", tc.method, tc.path,
				resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status, tc.wantType, tc.wantBody)
		}
		if got := resp.Header.Get("X-Backend-Id"); got != "web-1" {
			t.Errorf("%s %s: X-Backend-Id %q", tc.method, tc.path, got)
		}
	}
}

func TestPage(t *testing.T) {
	t.Parallel()
	p := Page()
	for _, want := range []string{
		`id="msg"`, `id="send"`, `id="log"`, `id="status"`, `id="backend"`,
		`(location.protocol === "https:" ? "wss://" : "ws://") + location.host +`,
		`"/chat?room=" + encodeURIComponent(room) + "&user=" + encodeURIComponent(user)`,
		`params.get("room")`, `params.get("user")`,
		"sock.onclose", "setTimeout(", // reconnects
		`m.system === "joined"`,
	} {
		if !bytes.Contains(p, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, external := range []string{"src=", "href=", "@import", "<link", "url("} {
		if bytes.Contains(p, []byte(external)) {
			t.Errorf("page loads an external resource (%q)", external)
		}
	}
	// Messages are added as text, never parsed as HTML.
	if bytes.Contains(p, []byte("innerHTML")) {
		t.Error("page uses innerHTML")
	}
	p[0] = 'X'
	if Page()[0] == 'X' {
		t.Error("Page returned shared bytes")
	}
}

func TestCloseSendsGoingAway(t *testing.T) {
	t.Parallel()
	srv, err := Listen("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := join(t, srv, "lobby", "ann")
	codes := make(chan int, 1)
	go func() { codes <- closeCode(c) }()
	begin := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if code := <-codes; code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want %d", code, websocket.CloseGoingAway)
	}
	// The client answered, so Close did not need its grace period.
	if d := time.Since(begin); d >= closeGrace {
		t.Errorf("Close took %v with a responsive client", d)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		t.Fatal("still accepting after Close")
	}
}

// TestCloseEndsAllGoroutines is deliberately not parallel:
// runtime.NumGoroutine counts the whole process, and parallel tests stay
// paused while the sequential ones run.
func TestCloseEndsAllGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()

	srv, err := Listen("127.0.0.1:0", Options{SendBuffer: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var clients []io.Closer
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	dialWS := func(room, user string) *websocket.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		c, _, err := (&websocket.Dialer{}).DialContext(ctx, joinURL(srv, room, user), nil)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		return c
	}
	dialTCP := func(req string) {
		c, err := net.DialTimeout("tcp", srv.Addr(), testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
	}

	// A client that answers the close handshake, and one that never reads
	// in the same room...
	responsive := dialWS("lobby", "ann")
	dialWS("lobby", "bob")
	// ...a room flooded with messages nobody reads, so that writers block
	// and clients are dropped as Close runs...
	flooder := dialWS("flood", "flooder")
	dialWS("flood", "sink")
	// ...clients that come and go...
	for i := range 20 {
		c := dialWS(fmt.Sprintf("room-%d", i%3), "transient")
		_ = c.Close()
	}
	// ...and connections that are not WebSockets: half a request, silence.
	dialTCP("GET /healthz HTTP/1.1\r\nHost: x\r\n")
	dialTCP("")

	eventually(t, "4 members", func() bool { return srv.Conns() == 4 })
	codes := make(chan int, 1)
	go func() {
		_ = responsive.SetReadDeadline(time.Now().Add(testTimeout))
		codes <- closeCode(responsive)
	}()
	for i := range 3 {
		if err := responsive.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "message %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	big := []byte(strings.Repeat("x", 15<<10))
	for range 200 {
		if err := flooder.WriteMessage(websocket.TextMessage, big); err != nil {
			break // dropped: its own queue is full too
		}
	}

	begin := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > closeGrace+2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if code := <-codes; code != websocket.CloseGoingAway {
		t.Errorf("responsive client got close code %d, want %d", code, websocket.CloseGoingAway)
	}
	if n := srv.Conns(); n != 0 {
		t.Errorf("Conns after Close = %d", n)
	}

	// Close has returned; only the runtime's bookkeeping of goroutines that
	// have already returned may lag a moment. The client goroutine above
	// has ended too (it sent its code).
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("%d goroutines before Listen, %d after Close:\n%s", before, after, buf.String())
	}
}
