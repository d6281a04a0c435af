// Package configs holds the example wsproxy configurations for the chat
// backend (examples/chat); its tests check that each one is valid, as
// `wsproxy validate` would, and that the two instances of two-instances/
// agree on where every room lives.
package configs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/balancer"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/examples/chatserver"
	"github.com/wsproxy/wsproxy/proxy"
	wstls "github.com/wsproxy/wsproxy/tls"
)

const testTimeout = 10 * time.Second

// files are the example configs, relative to this directory.
var files = []string{
	"static.Caddyfile",
	"consul.Caddyfile",
	"tls.Caddyfile",
	"fleet.Caddyfile",
	"two-instances/a.Caddyfile",
	"two-instances/b.Caddyfile",
}

// validate does what `wsproxy validate -config path` does: parse, then
// proxy.Validate, which catches what only the runtime form can check. It
// then builds the Server (proxy.New; nothing listens), returned for
// inspection and shut down when the test ends.
func validate(t *testing.T, path string) (*config.Config, *proxy.Server, error) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := proxy.Validate(cfg); err != nil {
		return cfg, nil, err
	}
	srv, err := proxy.New(cfg, proxy.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return cfg, nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return cfg, srv, nil
}

// isolateEnv clears the placeholders the configs use, so that their
// defaults apply, and keeps `tls internal` out of the user's storage.
func isolateEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"CHAT_1", "CHAT_2", "CONSUL_HTTP_ADDR"} {
		t.Setenv(v, "")
		if err := os.Unsetenv(v); err != nil { // t.Setenv restores it
			t.Fatal(err)
		}
	}
	t.Setenv("XDG_DATA_HOME", t.TempDir())
}

// route returns the route named name in cfg.
func route(t *testing.T, cfg *config.Config, name string) *config.Route {
	t.Helper()
	for _, st := range cfg.Sites {
		for _, r := range st.Routes {
			if r.Name == name {
				return r
			}
		}
	}
	t.Fatalf("%s: no route %q", cfg.File, name)
	return nil
}

// TestConfigsValidate: every example is valid, and its chat route hashes
// on the room over the two chat backends (static lists or Consul).
func TestConfigsValidate(t *testing.T) {
	isolateEnv(t)
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			cfg, _, err := validate(t, file)
			if err != nil {
				t.Fatalf("wsproxy validate -config %s:\n%v", file, err)
			}
			for _, name := range []string{"chat", "page"} {
				r := route(t, cfg, name)
				if r.LBPolicy != "hash" || len(r.LBArgs.Keys) != 1 || r.LBArgs.Keys[0] != (balancer.KeySource{Kind: balancer.KeyQuery, Name: "room"}) {
					t.Errorf("route %s: lb_policy %s %v, want hash query:room", name, r.LBPolicy, r.LBArgs.Keys)
				}
				if file == "consul.Caddyfile" {
					if r.Consul == nil || r.Consul.Service != "chat" {
						t.Errorf("route %s: consul %+v, want service chat", name, r.Consul)
					}
					continue
				}
				var addrs []string
				for _, u := range r.Upstreams {
					addrs = append(addrs, u.Addr)
				}
				slices.Sort(addrs)
				if !slices.Equal(addrs, []string{"127.0.0.1:9101", "127.0.0.1:9102"}) {
					t.Errorf("route %s: backends %v, want the two chat backends", name, addrs)
				}
			}
		})
	}

	consul, _, err := validate(t, "consul.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if r := route(t, consul, "chat"); r.DrainWindow != 30*time.Second {
		t.Errorf("consul.Caddyfile: drain_on_removal %v, want 30s", r.DrainWindow)
	}
	tlsCfg, _, err := validate(t, "tls.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if st := tlsCfg.Sites[0]; st.TLS == nil || st.TLS.Mode != wstls.ModeInternal || st.Addresses[0].Scheme != "https" || st.Addresses[0].Port != 8443 {
		t.Errorf("tls.Caddyfile: site %+v, want https on 8443 with tls internal", st.Addresses)
	}
}

// TestTwoInstancesRouteAgree is `wsproxy route -config a.Caddyfile chat
// ROOM` against the same with b.Caddyfile, for many rooms: the answers
// come from the config alone and must be equal.
func TestTwoInstancesRouteAgree(t *testing.T) {
	isolateEnv(t)
	_, a, err := validate(t, "two-instances/a.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := validate(t, "two-instances/b.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for i := range 1000 {
		room := fmt.Sprintf("room-%d", i)
		la, err := a.Lookup("chat", room)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := b.Lookup("chat", room)
		if err != nil {
			t.Fatal(err)
		}
		if la.Backend != lb.Backend || !slices.Equal(la.Preference, lb.Preference) || !la.Sticky {
			t.Fatalf("%s: A says %+v, B says %+v", room, la, lb)
		}
		count[la.Backend]++
	}
	if len(count) != 2 || count["127.0.0.1:9101"] < 400 || count["127.0.0.1:9102"] < 400 {
		t.Errorf("rooms per backend %v: want both used about equally", count)
	}
}

// instance is one of the two proxies of two-instances/, in process.
type instance struct {
	name string
	srv  *proxy.Server
	addr string // where it really listens (the config's port is 808x)
	log  *syncBuffer
}

// startInstance runs the config file on a free loopback port: the
// listener for the config's port is opened by the test (proxy.Options
// Listeners), so the examples' fixed ports need not be free.
func startInstance(t *testing.T, file string) *instance {
	t.Helper()
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Global.AccessLog = ""                // keep the test's output readable
	cfg.Global.GracePeriod = 2 * time.Second // shut down quickly
	port := cfg.Sites[0].Addresses[0].Port
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{name: file, addr: ln.Addr().String(), log: &syncBuffer{}}
	srv, err := proxy.New(cfg, proxy.Options{
		Logger:    slog.New(slog.NewTextHandler(in.log, nil)),
		Listeners: map[int]net.Listener{port: ln},
	})
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	in.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if t.Failed() {
			t.Logf("%s logs:\n%s", file, in.log.String())
		}
	})
	return in
}

// joinVia opens a chat WebSocket through a proxy and returns it with the
// backend that answered the join.
func joinVia(t *testing.T, in *instance, room, user string) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	u := "ws://" + in.addr + "/chat?" + url.Values{"room": {room}, "user": {user}}.Encode()
	c, _, err := (&websocket.Dialer{}).DialContext(ctx, u, nil)
	if err != nil {
		t.Fatalf("%s: join %s: %v", in.name, room, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	var sys chatserver.System
	readJSON(t, c, &sys)
	if sys.System != chatserver.SystemJoined {
		t.Fatalf("%s: first message %+v, want joined", in.name, sys)
	}
	return c, sys.Backend
}

func readJSON(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%q: %v", data, err)
	}
}

// TestTwoInstancesAgree runs two-instances/a.Caddyfile and b.Caddyfile as
// two proxies over the same two chat backends and checks, for 50 rooms,
// that a client joining through A and one joining through B reach the same
// backend (the one both proxies' Lookup names), and so chat with each
// other.
func TestTwoInstancesAgree(t *testing.T) {
	isolateEnv(t)
	backends := map[string]*chatserver.Server{} // by ID
	byAddr := map[string]string{}               // ID by address
	for i := 1; i <= 2; i++ {
		id := fmt.Sprintf("chat-%d", i)
		b, err := chatserver.Listen("127.0.0.1:0", chatserver.Options{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		backends[id] = b
		byAddr[b.Addr()] = id
		t.Setenv(fmt.Sprintf("CHAT_%d", i), b.Addr()) // the configs' {$CHAT_1}, {$CHAT_2}
	}
	a := startInstance(t, "two-instances/a.Caddyfile")
	b := startInstance(t, "two-instances/b.Caddyfile")

	perBackend := map[string]int{}
	for i := range 50 {
		room := fmt.Sprintf("room-%d", i)
		ca, viaA := joinVia(t, a, room, "ann")
		cb, viaB := joinVia(t, b, room, "bob")
		if viaA != viaB {
			t.Fatalf("%s: through A on %s, through B on %s", room, viaA, viaB)
		}
		for _, in := range []*instance{a, b} {
			l, err := in.srv.Lookup("chat", room)
			if err != nil {
				t.Fatal(err)
			}
			if byAddr[l.Backend] != viaA {
				t.Fatalf("%s: %s's Lookup says %s (%s), clients reached %s", room, in.name, l.Backend, byAddr[l.Backend], viaA)
			}
		}
		perBackend[viaA]++

		// Same backend, so the room is one room: a message through A
		// reaches the client on B, and back.
		for _, m := range []struct {
			from, to *websocket.Conn
			user     string
		}{{ca, cb, "ann"}, {cb, ca, "bob"}} {
			text := "hello from " + m.user + " in " + room
			if err := m.from.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*websocket.Conn{m.from, m.to} {
				var got chatserver.Message
				readJSON(t, c, &got)
				want := chatserver.Message{Room: room, User: m.user, Text: text, Backend: viaA}
				if got != want {
					t.Fatalf("got %+v, want %+v", got, want)
				}
			}
		}
		_ = ca.Close()
		_ = cb.Close()
	}
	if len(perBackend) != 2 {
		t.Errorf("rooms per backend %v: want both backends used", perBackend)
	}
	t.Logf("50 rooms through A and B, same backend each time: %v", perBackend)
}

// syncBuffer is a bytes.Buffer safe for the proxy's concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestREADMECommands keeps examples/README.md's file names in step with
// the files.
func TestREADMECommands(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		if !bytes.Contains(readme, []byte("examples/configs/"+file)) {
			t.Errorf("examples/README.md does not mention examples/configs/%s", file)
		}
	}
}
