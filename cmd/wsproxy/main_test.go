package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/wsproxy/wsproxy/examples/echoserver"
	"github.com/wsproxy/wsproxy/internal/testnet"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	t.Parallel()
	if code, out, errs := runCLI("validate", "-config", "../../Caddyfile.example"); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("example config: exit %d: %s%s", code, out, errs)
	}
	bad := writeFile(t, "bad.Caddyfile", ":8080 {\n\troute /ws {\n\t\tdial_timeout soon\n\t\tbogus 1\n\t}\n}\n")
	code, _, errs := runCLI("validate", "-config", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{bad + ":3: ", bad + ":4: ", "bogus"} {
		if !strings.Contains(errs, want) {
			t.Errorf("errors lack %q:\n%s", want, errs)
		}
	}
	if code, _, _ := runCLI("validate", "-config", filepath.Join(t.TempDir(), "missing")); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
}

func TestFmtAndVersion(t *testing.T) {
	t.Parallel()
	p := writeFile(t, "Caddyfile", ":8080 {\nroute /ws {\nto 127.0.0.1:9000\n}\n}\n")
	code, out, _ := runCLI("fmt", p)
	if code != 0 || !strings.Contains(out, "\troute /ws {\n\t\tto 127.0.0.1:9000\n") {
		t.Fatalf("fmt: exit %d:\n%s", code, out)
	}
	if code, _, _ := runCLI("fmt", "-w", p); code != 0 {
		t.Fatal("fmt -w failed")
	}
	if b, _ := os.ReadFile(p); string(b) != out {
		t.Fatalf("fmt -w wrote %q", b)
	}
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "wsproxy ") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, _ := runCLI("nonsense"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

// binDir is the directory binary builds into, made on first use.
var binDir = sync.OnceValues(func() (string, error) { return os.MkdirTemp("", "wsproxy-bin") })

// TestMain removes the wsproxy binary the process tests built (about
// 20 MB), which would otherwise stay in the temp directory after every run.
// (When no test built it, binDir makes an empty directory just to remove
// it, which is simpler than tracking whether it was made.)
func TestMain(m *testing.M) {
	code := m.Run()
	if dir, err := binDir(); err == nil {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// binary builds wsproxy once for the process tests.
var binary = sync.OnceValues(func() (string, error) {
	dir, err := binDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "wsproxy")
	out, err := exec.Command("go", "build", "-o", p, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return p, nil
})

// proc is a wsproxy process whose stderr is collected.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan error
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	return startCmd(t, exec.Command(bin, args...))
}

// startCmd starts cmd, which must exec the wsproxy binary as its own process
// (so that the PID it is stopped by is the proxy's).
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			logs := p.log()
			if len(logs) > 16<<10 {
				logs = "...\n" + logs[len(logs)-16<<10:]
			}
			t.Logf("%s (pid %d) logged:\n%s", p.cmd.Path, p.cmd.Process.Pid, logs)
		}
	})
	return p
}

func (p *proc) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		m := rx.FindStringSubmatch(p.logs.String())
		p.mu.Unlock()
		if m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Fatalf("no log line matching %q in:\n%s", re, p.logs.String())
	return nil
}

func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(15 * time.Second):
		t.Fatal("process did not exit")
		return -1
	}
}

// freePort returns a port to listen on (see testnet).
func freePort(t *testing.T) int { return testnet.FreePort(t) }

func echoID(t *testing.T, url string) (*websocket.Conn, string) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.WriteMessage(websocket.TextMessage, []byte("__id"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, p, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Time{})
	return c, string(p)
}

// TestRunReloadAndSIGTERM runs the real binary: a SIGHUP with a broken file
// keeps the old config (and says where the error is), a good one switches
// new connections to the new backend while the old connection lives on, and
// SIGTERM closes live WebSockets with 1001 and exits 0.
func TestRunReloadAndSIGTERM(t *testing.T) {
	t.Parallel()
	var backends []*echoserver.Server
	for _, id := range []string{"old", "new"} {
		b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		backends = append(backends, b)
	}
	port := freePort(t)
	conf := func(backend string) string {
		return fmt.Sprintf("127.0.0.1:%d {\n\troute /ws {\n\t\tto %s\n\t}\n}\n", port, backend)
	}
	path := writeFile(t, "Caddyfile", conf(backends[0].Addr()))
	p := startProc(t, "run", "-config", path)
	p.waitLog(t, `msg=listening`)
	url := fmt.Sprintf("ws://127.0.0.1:%d/ws", port)
	live, id := echoID(t, url)
	if id != "old" {
		t.Fatalf("backend %q", id)
	}

	os.WriteFile(path, []byte(conf(backends[1].Addr())+"\n\tbroken {\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `reload failed.*Caddyfile:\d+`)
	if _, id := echoID(t, url); id != "old" {
		t.Fatalf("after a bad reload: backend %q", id)
	}

	// The new config keeps the old backend and adds one: the live connection
	// stays where it is, and least_conn sends the next one to the new one.
	os.WriteFile(path, []byte(conf(backends[0].Addr()+" "+backends[1].Addr())), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `config reloaded`)
	c2, id := echoID(t, url)
	if id != "new" {
		t.Fatalf("after reload: backend %q", id)
	}
	c2.Close()
	live.WriteMessage(websocket.TextMessage, []byte("still here"))
	if _, m, err := live.ReadMessage(); err != nil || string(m) != "still here" {
		t.Fatalf("connection from before the reload: %q %v", m, err)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	_, _, err := live.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1001 {
		t.Fatalf("on SIGTERM the client got %v, want close 1001", err)
	}
	live.Close()
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	p := startProc(t, "demo", "-listen", fmt.Sprintf("127.0.0.1:%d", port))
	p.waitLog(t, `msg=listening`)
	base := fmt.Sprintf("127.0.0.1:%d", port)
	resp, err := (&net.Dialer{}).Dial("tcp", base)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(resp, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", base)
	page, _ := io.ReadAll(resp)
	resp.Close()
	if !bytes.Contains(page, []byte("200 OK")) || !bytes.Contains(page, []byte("new WebSocket")) {
		t.Fatalf("demo page:\n%.300s", page)
	}
	seen := map[string]bool{}
	for i := 0; i < 10; i++ {
		room := fmt.Sprintf("ws://%s/ws?room=r%d", base, i)
		c, id := echoID(t, room)
		c.Close()
		if c2, again := echoID(t, room); again != id {
			t.Fatalf("room r%d went to %s, then %s", i, id, again)
		} else {
			c2.Close()
		}
		seen[id] = true
	}
	if !seen["echo-1"] || !seen["echo-2"] {
		t.Fatalf("backends seen: %v", seen)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestRouteCommand(t *testing.T) {
	t.Parallel()
	conf := writeFile(t, "Caddyfile", ":8080 {\n\troute /chat {\n\t\tname chat\n\t\tto 10.0.0.1:9000 10.0.0.2:9000 10.0.0.3:9000\n\t\tlb_policy hash query:room\n\t}\n}\n")
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		code, out, errs := runCLI("route", "-config", conf, "chat", fmt.Sprintf("room-%d", i))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		_, again, _ := runCLI("route", "-config", conf, "chat", fmt.Sprintf("room-%d", i))
		if out != again || !strings.HasPrefix(out, "10.0.0.") {
			t.Fatalf("answers %q then %q", out, again)
		}
		seen[out] = true
	}
	if len(seen) != 3 {
		t.Fatalf("20 keys went to %v", seen)
	}
	code, out, _ := runCLI("route", "-config", conf, "-json", "chat", "room-1")
	if code != 0 || !strings.Contains(out, `"preference"`) {
		t.Fatalf("-json: %d %s", code, out)
	}
	if code, _, errs := runCLI("route", "-config", conf, "nope", "k"); code != 1 || !strings.Contains(errs, "chat") {
		t.Fatalf("unknown route: %d %s", code, errs)
	}
}

// silentListener accepts connections and never answers them (a Consul
// agent or an ACME CA that hangs); it and they close with the test.
func silentListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln
}

// TestSIGHUPDuringStartup: a SIGHUP while the proxy starts (here, waiting
// for a Consul agent that accepts and never answers) does not end it; it
// reloads once the proxy is up.
func TestSIGHUPDuringStartup(t *testing.T) {
	t.Parallel()
	agent := silentListener(t)
	conf := fmt.Sprintf("{\n\tlog_level debug\n\tgrace_period 1s\n\tconsul {\n\t\taddress %s\n\t}\n}\n127.0.0.1:%d {\n\troute /ws {\n\t\tconsul chat\n\t}\n}\n",
		agent.Addr(), freePort(t))
	p := startProc(t, "run", "-config", writeFile(t, "Caddyfile", conf))
	p.waitLog(t, `msg=starting`)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `msg=listening`)
	p.waitLog(t, `reload`)
	if p.exited() {
		t.Fatalf("exited after a SIGHUP during start-up:\n%s", p.log())
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestReloadCannotMoveAPort: a reload whose sites need a port on another
// interface (loopback to all, or back) is refused with the reason, and the
// port keeps serving; it used to be accepted and the socket stayed where
// it was, exposed or unreachable.
func TestReloadCannotMoveAPort(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	site := "{\n\tgrace_period 1s\n}\n%s:%d {\n\troute /ws {\n\t\tto 127.0.0.1:1\n\t}\n}\n"
	path := writeFile(t, "Caddyfile", fmt.Sprintf(site, "localhost", port))
	p := startProc(t, "run", "-config", path)
	p.waitLog(t, `msg=listening addr=127.0.0.1:`)
	os.WriteFile(path, []byte(fmt.Sprintf(site, "", port)), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `reload failed.*cannot move a listening socket`)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("the port stopped serving: %v", err)
	}
	c.Close()
}

// TestReloadAdminAccess: a reload that changes the admin token applies it
// at once (a leaked token is rotated by a reload); one that would move the
// admin API is refused, since the API stays where it started.
func TestReloadAdminAccess(t *testing.T) {
	t.Parallel()
	adminPort, port := freePort(t), freePort(t)
	conf := func(adminPort int, token string) string {
		return fmt.Sprintf("{\n\tgrace_period 1s\n\tadmin 127.0.0.1:%d {\n\t\ttoken %s\n\t}\n}\n127.0.0.1:%d {\n\troute /ws {\n\t\tto 127.0.0.1:1\n\t}\n}\n", adminPort, token, port)
	}
	path := writeFile(t, "Caddyfile", conf(adminPort, "old-token"))
	p := startProc(t, "run", "-config", path)
	p.waitLog(t, `admin API listening`)
	status := func(token string) int {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/status", adminPort), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("old-token"); got != 200 {
		t.Fatalf("old token before the reload: %d", got)
	}
	os.WriteFile(path, []byte(conf(adminPort, "new-token")), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `config reloaded`)
	if old, cur := status("old-token"), status("new-token"); old != 401 || cur != 200 {
		t.Fatalf("after rotating the token: old %d, new %d; want 401, 200", old, cur)
	}
	os.WriteFile(path, []byte(conf(freePort(t), "new-token")), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `reload failed.*a reload cannot move it`)
	if got := status("new-token"); got != 200 {
		t.Fatalf("the admin API after a refused move: %d", got)
	}
}

// TestSIGTERMDuringSlowReload: a reload waiting for a certificate from a CA
// that never answers does not hold SIGTERM up; shutting down ends the
// wait, the reload fails, and the process exits within its grace period.
func TestSIGTERMDuringSlowReload(t *testing.T) {
	t.Parallel()
	ca := silentListener(t)
	port := freePort(t)
	plain := fmt.Sprintf("{\n\tgrace_period 1s\n\tlog_level info\n}\n127.0.0.1:%d {\n\troute /ws {\n\t\tto 127.0.0.1:1\n\t}\n}\n", port)
	path := writeFile(t, "Caddyfile", plain)
	p := startProc(t, "run", "-config", path)
	p.waitLog(t, `msg=listening`)

	withACME := fmt.Sprintf("{\n\tgrace_period 1s\n\tlog_level info\n\thttp_port %d\n\tacme_ca https://%s/dir\n\temail ops@example.test\n\tstorage %s\n}\n"+
		"127.0.0.1:%d {\n\troute /ws {\n\t\tto 127.0.0.1:1\n\t}\n}\nhttps://slow.example.test:%d {\n\troute /ws {\n\t\tto 127.0.0.1:1\n\t}\n}\n",
		freePort(t), ca.Addr(), t.TempDir(), port, freePort(t))
	os.WriteFile(path, []byte(withACME), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, `obtaining certificate`)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("exited %v after SIGTERM with grace_period 1s", d)
	}
	p.waitLog(t, `reload failed`)
}
