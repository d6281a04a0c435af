package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// echoProcess runs the example echo backend as its own process.
func echoProcess(t *testing.T, id string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "echo")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/echo").CombinedOutput(); err != nil {
		t.Fatalf("build echo: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "-listen", addr, "-id", id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo %s never listened", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialFrom opens a WebSocket from a given loopback source address.
func dialFrom(src net.IP, url string) (*websocket.Conn, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDial: func(network, addr string) (net.Conn, error) {
			return (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}).Dial(network, addr)
		},
	}
	c, _, err := d.Dial(url, nil)
	return c, err
}

func proxyGoroutines(t *testing.T, admin string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	m := regexp.MustCompile(`total (\d+)`).FindSubmatch(line)
	if m == nil {
		t.Fatalf("no goroutine count in %q", line)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func procFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestReloadStormLosesNothing: 2,000 WebSockets exchange messages through a
// real wsproxy process while it gets 50 SIGHUPs alternating between two
// valid configs and a few invalid ones. No connection on the unchanged
// route may drop, no new handshake may fail, no message may be lost, the
// invalid files must be refused with their line numbers, and the proxy's
// goroutines and fds must come back to their baseline.
func TestReloadStormLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test; run without -short")
	}
	const conns = 2000
	b0, b1 := echoProcess(t, "e0"), echoProcess(t, "e1")
	port, adminPort := freePort(t), freePort(t)
	conf := func(extra string) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	log_level info
	reload_drain 1s
}
:%d {
	route /stable {
		to %s %s
		lb_policy hash query:room
	}
%s}
`, adminPort, port, b0, b1, extra)
	}
	confA := conf("\troute /a {\n\t\tto " + b0 + "\n\t}\n")
	confB := conf("\troute /b {\n\t\tto " + b1 + "\n\t\tping_client 10s 5s\n\t}\n")
	// Invalid files, with the line of the error.
	bad1 := conf("\troute /a {\n\t\tto " + b0 + "\n\t\tbogus_directive on\n\t}\n") // line 13
	bad2 := conf("\troute /b {\n\t\tto " + b1 + "\n\t\tmax_connections lots\n\t}\n")
	path := writeFile(t, "Caddyfile", confA)
	p := startProc(t, "run", "-config", path)
	p.waitLog(t, `msg="admin API listening"`)
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
	base := fmt.Sprintf("ws://127.0.0.1:%d/stable", port)
	g0, fd0 := proxyGoroutines(t, admin), procFDs(t, p.cmd.Process.Pid)

	// Open the connections from 127.0.0.2-127.0.0.251, 50 at a time.
	live := make([]*websocket.Conn, conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	var openErr atomic.Value
	for i := range live {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialFrom(net.IPv4(127, 0, 0, byte(2+i%250)), fmt.Sprintf("%s?room=r%d", base, i))
			if err != nil {
				openErr.Store(err)
				return
			}
			live[i] = c
		}()
	}
	wg.Wait()
	if err, _ := openErr.Load().(error); err != nil {
		t.Fatalf("opening %d connections: %v", conns, err)
	}
	defer func() {
		for _, c := range live {
			c.Close()
		}
	}()

	// Workers exchange numbered messages on every connection, and others
	// open fresh connections, until the storm is over.
	ctx, stop := context.WithCancel(context.Background())
	var sent, fresh atomic.Int64
	errs := make(chan error, 100)
	const workers = 20
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				for i := w; i < conns; i += workers {
					msg := fmt.Appendf(nil, "c%d-m%d", i, seq)
					c := live[i]
					c.UnderlyingConn().SetDeadline(time.Now().Add(10 * time.Second))
					if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
						errs <- fmt.Errorf("connection %d write: %w", i, err)
						return
					}
					_, got, err := c.ReadMessage()
					if err != nil || !bytes.Equal(got, msg) {
						errs <- fmt.Errorf("connection %d: got %q, %v; want %q", i, got, err, msg)
						return
					}
					sent.Add(1)
				}
			}
		}()
	}
	for h := 0; h < 4; h++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				c, err := dialFrom(net.IPv4(127, 0, 1, byte(2+h)), fmt.Sprintf("%s?room=fresh%d-%d", base, h, n))
				if err != nil {
					errs <- fmt.Errorf("handshake during the storm: %w", err)
					return
				}
				c.UnderlyingConn().SetDeadline(time.Now().Add(10 * time.Second))
				c.WriteMessage(websocket.TextMessage, []byte("hi"))
				if _, got, err := c.ReadMessage(); err != nil || string(got) != "hi" {
					errs <- fmt.Errorf("fresh connection: %q %v", got, err)
				}
				c.Close()
				fresh.Add(1)
			}
		}()
	}

	valid, invalid := 0, 0
	for i := 0; i < 50; i++ {
		body := confA
		switch {
		case i%10 == 4:
			body, invalid = bad1, invalid+1
		case i%10 == 9:
			body, invalid = bad2, invalid+1
		case i%2 == 1:
			body, valid = confB, valid+1
		default:
			valid++
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		time.Sleep(60 * time.Millisecond)
		// The kernel and Go's signal package merge a SIGHUP that arrives
		// while another is pending, so on a slow machine the next one
		// waits until this reload has been handled.
		for deadline := time.Now().Add(10 * time.Second); reloadsHandled(p) < i+1 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Let every reload be processed, with traffic still flowing.
	p.waitLog(t, fmt.Sprintf(`version=%d `, valid))
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d messages echoed on %d connections and %d fresh connections opened during %d reloads (%d refused)",
		sent.Load(), conns, fresh.Load(), valid, invalid)

	p.mu.Lock()
	logs := p.logs.String()
	p.mu.Unlock()
	if n := strings.Count(logs, `msg="config reloaded"`); n != valid {
		t.Errorf("%d reloads logged, want %d", n, valid)
	}
	if n := strings.Count(logs, `msg="reload failed; the running config stays"`); n != invalid {
		t.Errorf("%d refused reloads logged, want %d", n, invalid)
	}
	for _, want := range []string{path + `:13: unknown directive \"bogus_directive\"`, path + `:13: max_connections`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	// Every connection from before the storm is still there and works.
	for i, c := range live {
		c.UnderlyingConn().SetDeadline(time.Now().Add(10 * time.Second))
		c.WriteMessage(websocket.TextMessage, []byte("after"))
		if _, got, err := c.ReadMessage(); err != nil || string(got) != "after" {
			t.Fatalf("connection %d after the storm: %q %v", i, got, err)
		}
	}
	for _, c := range live {
		c.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		g, fd := proxyGoroutines(t, admin), procFDs(t, p.cmd.Process.Pid)
		if g <= g0+5 && fd <= fd0+5 {
			t.Logf("proxy goroutines %d (baseline %d), fds %d (baseline %d)", g, g0, fd, fd0)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the storm: %d goroutines (baseline %d), %d fds (baseline %d)", g, g0, fd, fd0)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReloadDrainsRemovedRouteAndSIGTERM: removing a route closes exactly
// its connections, with 1001, inside reload_drain; SIGTERM then closes the
// rest with 1001 and the process exits 0. The reloads go through
// 'wsproxy reload', by the admin API and by the pid file.
func TestReloadDrainsRemovedRouteAndSIGTERM(t *testing.T) {
	t.Parallel()
	b0 := echoProcess(t, "e0")
	port, adminPort := freePort(t), freePort(t)
	conf := func(withA bool) string {
		a := ""
		if withA {
			a = "\troute /a {\n\t\tto " + b0 + "\n\t}\n"
		}
		return fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\treload_drain 500ms\n\tgrace_period 2s\n}\n:%d {\n\troute /stable {\n\t\tto %s\n\t}\n%s}\n", adminPort, port, b0, a)
	}
	path := writeFile(t, "Caddyfile", conf(true))
	pidFile := filepath.Join(t.TempDir(), "wsproxy.pid")
	p := startProc(t, "run", "-config", path, "-pidfile", pidFile)
	p.waitLog(t, `msg="admin API listening"`)
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
	open := func(route string, n int) []*websocket.Conn {
		var cs []*websocket.Conn
		for i := 0; i < n; i++ {
			c, err := dialFrom(net.IPv4(127, 0, 0, 1), fmt.Sprintf("ws://127.0.0.1:%d/%s", port, route))
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	onA, onStable := open("a", 10), open("stable", 10)

	os.WriteFile(path, []byte(conf(false)), 0o644)
	start := time.Now()
	if code, out, errs := runCLI("reload", "-admin", admin); code != 0 || !strings.Contains(out, `"removed"`) {
		t.Fatalf("reload via admin: %d %s %s", code, out, errs)
	}
	for i, c := range onA {
		c.UnderlyingConn().SetDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ReadMessage()
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 1001 {
			t.Fatalf("connection %d of the removed route: %v, want close 1001", i, err)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond+time.Second {
		t.Fatalf("drain took %v for a 500ms window", d)
	}
	for i, c := range onStable {
		c.WriteMessage(websocket.TextMessage, []byte("still"))
		c.UnderlyingConn().SetDeadline(time.Now().Add(5 * time.Second))
		if _, got, err := c.ReadMessage(); err != nil || string(got) != "still" {
			t.Fatalf("connection %d of the kept route: %q %v", i, got, err)
		}
	}
	// A broken file through the pid file: refused, and the proxy says where.
	os.WriteFile(path, []byte(conf(false)+"oops {\n"), 0o644)
	if code, _, errs := runCLI("reload", "-pidfile", pidFile); code != 0 {
		t.Fatalf("reload via pid file: %d %s", code, errs)
	}
	p.waitLog(t, `reload failed.*Caddyfile:\d+`)
	if code, _, errs := runCLI("reload", "-admin", admin); code != 1 || !strings.Contains(errs, "Caddyfile:") {
		t.Fatalf("a bad file via admin: exit %d: %s", code, errs)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	for i, c := range onStable {
		c.UnderlyingConn().SetDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ReadMessage()
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 1001 {
			t.Fatalf("connection %d on SIGTERM: %v, want close 1001", i, err)
		}
		c.Close()
	}
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Fatalf("pid file left behind: %v", err)
	}
}

// reloadsHandled counts the reloads the proxy has logged, good or not.
func reloadsHandled(p *proc) int {
	l := p.logsString()
	return strings.Count(l, "config reloaded") + strings.Count(l, "reload failed")
}
