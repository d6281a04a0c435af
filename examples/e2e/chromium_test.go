//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/proxy"
	wstls "github.com/wsproxy/wsproxy/tls"
)

// testBudget bounds the whole test, the build of the chat backend
// included.
const testBudget = 60 * time.Second

// installChromium is the command that provides the browser on Debian.
const installChromium = "apt-get update && apt-get install -y chromium"

// siteName is the host of examples/configs/tls.Caddyfile's site; Chromium
// is told it resolves to 127.0.0.1.
const siteName = "chat.localhost"

// TestChromiumChat: two headless Chromium pages chat through wsproxy
// (examples/configs/tls.Caddyfile: wss:// with tls internal, sticky on the
// room) with two chat backends, each a separate process built from
// examples/chat. The backend serving the room is killed with SIGKILL; both
// pages must show the disconnection, reconnect (to the other backend, the
// room's next choice) and chat again.
func TestChromiumChat(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v); as root: %s (scripts/test.sh does it)", err, installChromium)
	}
	begin := time.Now()
	step := func(format string, args ...any) {
		t.Helper()
		t.Logf("%5.2fs "+format, append([]any{time.Since(begin).Seconds()}, args...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testBudget)
	defer cancel()

	bin := buildChat(ctx, t)
	step("built examples/chat")
	backends := map[string]*chatProcess{}
	for _, id := range []string{"chat-1", "chat-2"} {
		backends[id] = startChat(ctx, t, bin, id)
	}
	step("backends: chat-1 on %s, chat-2 on %s", backends["chat-1"].addr, backends["chat-2"].addr)

	px := startProxy(t, backends["chat-1"].addr, backends["chat-2"].addr)
	roots := px.roots(t)
	pins := pinnedKeys(t, px, roots)
	getPage(t, px, roots)
	step("proxy on %s (config port %d), tls internal root %s", px.addr, px.configPort, px.root)

	br := startChromium(ctx, t, chromium, pins)
	step("chromium %d, DevTools at %s", br.cmd.Process.Pid, br.devtools)
	dt, err := dialCDP(ctx, br.devtools)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dt.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser events:\n%s", strings.Join(dt.Events(), "\n"))
		}
	})

	base := fmt.Sprintf("https://%s:%d/", siteName, px.port)
	var pages []*page
	for _, user := range []string{"ann", "bob"} {
		p, err := dt.openPage(ctx, user, base+"?room=lobby&user="+user)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, p)
	}
	ann, bob := pages[0], pages[1]
	w := &waiter{t: t, ctx: ctx, pages: pages}

	// Both join the room over wss://, on the backend the proxy says.
	w.until("both pages joined lobby", func(s map[string]chatState) bool {
		return s["ann"].joined() && s["bob"].joined()
	})
	st := w.states()
	first := st["ann"].Backend
	if st["bob"].Backend != first {
		t.Fatalf("ann is on %s, bob on %s: the room is split", first, st["bob"].Backend)
	}
	if l, err := px.srv.Lookup("chat", "lobby"); err != nil || l.Backend != backends[first].addr {
		t.Fatalf("proxy Lookup(chat, lobby) = %+v, %v; the pages are on %s (%s)", l, err, first, backends[first].addr)
	}
	for _, p := range pages {
		var proto string
		if err := p.Eval(ctx, `location.protocol`, &proto); err != nil || proto != "https:" {
			t.Fatalf("%s: location.protocol %q, %v", p.name, proto, err)
		}
	}
	step("ann and bob joined lobby on %s over wss://", first)

	w.exchange(ann, bob, "hello bob, this is ann")
	w.exchange(bob, ann, "hi ann! bob here")
	step("messages exchanged both ways")
	// Chromium speaks TLS 1.3: after the upgrade its connections leave
	// crypto/tls for the loops' own record layer.
	if n := px.srv.TLSRecordLegs(); n < 2 {
		t.Errorf("%d wss connections moved to the record layer, want both pages'", n)
	}

	// Kill the room's backend.
	second := "chat-1"
	if first == second {
		second = "chat-2"
	}
	backends[first].kill(t)
	step("killed %s (pid %d) with SIGKILL", first, backends[first].cmd.Process.Pid)

	w.until("both pages reconnected to "+second, func(s map[string]chatState) bool {
		return s["ann"].joined() && s["ann"].Backend == second && len(s["ann"].Closes) > 0 &&
			s["bob"].joined() && s["bob"].Backend == second && len(s["bob"].Closes) > 0
	})
	step("both pages reconnected to %s", second)
	for name, s := range w.states() {
		// The proxy tells a client whose backend vanished with 1011; the
		// page shows it and reconnects.
		if !slices.Equal(s.Closes, []int{1011}) || s.Connects != 2 {
			t.Errorf("%s: close codes %v after %d connections, want [1011] after 2", name, s.Closes, s.Connects)
		}
		if !strings.Contains(s.Log, "disconnected (1011") || !strings.Contains(s.Log, "joined lobby on "+second) {
			t.Errorf("%s: the page does not show the reconnection:\n%s", name, s.Log)
		}
		if s.Status != "connected" || s.Shown != second {
			t.Errorf("%s: status %q, backend shown %q", name, s.Status, s.Shown)
		}
	}

	w.exchange(ann, bob, "ann again, after the crash")
	w.exchange(bob, ann, "bob again, still here")
	step("messages exchanged both ways on %s", second)

	png, err := ann.Screenshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("WSPROXY_E2E_ARTIFACTS") // to keep it after the test
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "chat-ann-after-reconnect.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	step("screenshot of ann's page: %s (%d bytes)", shot, len(png))
}

// chatState is what a chat page shows: window.chat (see
// chatserver.Page) and the text of #status, #backend and #log.
type chatState struct {
	State    string `json:"state"`
	Backend  string `json:"backend"`
	Connects int    `json:"connects"`
	Closes   []int  `json:"closes"`
	Status   string `json:"status"`
	Shown    string `json:"shown"`
	Log      string `json:"log"`
}

func (s chatState) joined() bool { return s.State == "open" && s.Backend != "" && s.Shown == s.Backend }

const stateExpr = `(() => {
	if (!window.chat) return null;
	const text = (id) => document.getElementById(id).innerText;
	return {...window.chat, status: text("status"), shown: text("backend"), log: text("log")};
})()`

// waiter polls the pages until a condition holds, or fails the test
// (from the test's goroutine) when its context ends.
type waiter struct {
	t       *testing.T
	ctx     context.Context
	pages   []*page
	lastErr error
}

// states reads every page's state. A page that cannot answer (still
// loading) has the zero state; the error is kept for the failure message.
func (w *waiter) states() map[string]chatState {
	out := map[string]chatState{}
	for _, p := range w.pages {
		var s chatState
		if err := p.Eval(w.ctx, stateExpr, &s); err != nil {
			w.lastErr = err
		}
		out[p.name] = s
	}
	return out
}

func (w *waiter) until(what string, cond func(map[string]chatState) bool) {
	w.t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s := w.states()
		if cond(s) {
			return
		}
		select {
		case <-w.ctx.Done():
			var b strings.Builder
			for name, st := range s {
				fmt.Fprintf(&b, "\n%s: state %q backend %q connects %d closes %v status %q\n%s", name, st.State, st.Backend, st.Connects, st.Closes, st.Status, st.Log)
			}
			w.t.Fatalf("timed out waiting for %s (last error: %v); pages:%s", what, w.lastErr, b.String())
		case <-tick.C:
		}
	}
}

// exchange types text in from's page, sends it, and waits until both
// pages show it.
func (w *waiter) exchange(from, to *page, text string) {
	w.t.Helper()
	lit, err := json.Marshal(text)
	if err != nil {
		w.t.Fatal(err)
	}
	var sent bool
	err = from.Eval(w.ctx, `(() => {
		const msg = document.getElementById("msg"), send = document.getElementById("send");
		if (send.disabled) return false;
		msg.value = `+string(lit)+`;
		send.click();
		return msg.value === "";
	})()`, &sent)
	if err != nil || !sent {
		w.t.Fatalf("%s could not send %q: %v", from.name, text, err)
	}
	line := from.name + ": " + text
	w.until(fmt.Sprintf("%q on both pages", line), func(s map[string]chatState) bool {
		return strings.Contains(s[from.name].Log, line) && strings.Contains(s[to.name].Log, line)
	})
}

// buildChat builds examples/chat into a temporary directory.
func buildChat(ctx context.Context, t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build examples/chat: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "chat")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/wsproxy/wsproxy/examples/chat")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build examples/chat: %v\n%s", err, out)
	}
	return bin
}

// chatProcess is a chat backend running as a separate process.
type chatProcess struct {
	id, addr string
	cmd      *exec.Cmd
	out      *syncBuffer   // its stderr
	exited   chan struct{} // closed once the process has been waited for
}

// startChat starts the chat binary on a free loopback port and waits for
// its "listening on ADDR" line. It is stopped when the test ends (SIGTERM,
// then SIGKILL).
func startChat(ctx context.Context, t *testing.T, bin, id string) *chatProcess {
	t.Helper()
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-id", id)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cp := &chatProcess{id: id, cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		defer close(cp.exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			cp.out.Write([]byte(line + "\n"))
			if _, addr, ok := strings.Cut(line, " listening on "); ok {
				select {
				case addrc <- addr:
				default:
				}
			}
		}
		_, _ = io.Copy(cp.out, stderr) // after a line too long to scan
		// The pipe is at EOF: the process has exited (Wait may close the
		// pipe only after the reads are done).
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-cp.exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-cp.exited:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-cp.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", id, cp.out.String())
		}
	})
	select {
	case cp.addr = <-addrc:
	case <-cp.exited:
		t.Fatalf("%s exited: %s", id, cp.out.String())
	case <-ctx.Done():
		t.Fatalf("%s did not start listening: %v\n%s", id, ctx.Err(), cp.out.String())
	}
	return cp
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (cp *chatProcess) kill(t *testing.T) {
	t.Helper()
	if err := cp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", cp.id, err)
	}
	select {
	case <-cp.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still running 5 s after SIGKILL", cp.id)
	}
}

// testProxy is wsproxy in this process, running
// examples/configs/tls.Caddyfile.
type testProxy struct {
	srv        *proxy.Server
	addr       string // where it listens
	port       int    // the port of addr
	configPort int    // the site's port in the file (8443)
	root       string // the local CA's root certificate file
	log        *syncBuffer
}

// startProxy runs examples/configs/tls.Caddyfile with the two backends
// (its {$CHAT_1} and {$CHAT_2}), its storage and local CA in a temporary
// directory, and the site's port served by a listener on a free loopback
// port. It is shut down when the test ends.
func startProxy(t *testing.T, chat1, chat2 string) *testProxy {
	t.Helper()
	data := t.TempDir()
	t.Setenv("CHAT_1", chat1)
	t.Setenv("CHAT_2", chat2)
	t.Setenv("XDG_DATA_HOME", data) // the default storage directory
	cfg, err := config.Load(filepath.Join("..", "configs", "tls.Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Global.GracePeriod = 2 * time.Second
	cfg.Global.AccessLog = filepath.Join(data, "access.log")
	site := cfg.Sites[0]
	if site.TLS == nil || site.TLS.Mode != wstls.ModeInternal || site.Addresses[0].Host != siteName {
		t.Fatalf("tls.Caddyfile: site %+v is not %s with tls internal", site.Addresses, siteName)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &testProxy{
		addr:       ln.Addr().String(),
		port:       ln.Addr().(*net.TCPAddr).Port,
		configPort: site.Addresses[0].Port,
		root:       filepath.Join(data, "wsproxy", "pki", "root.crt"),
		log:        &syncBuffer{},
	}
	srv, err := proxy.New(cfg, proxy.Options{
		Logger:    slog.New(slog.NewTextHandler(px.log, nil)),
		Listeners: map[int]net.Listener{px.configPort: ln},
	})
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	px.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if t.Failed() {
			access, _ := os.ReadFile(cfg.Global.AccessLog)
			t.Logf("proxy logs:\n%s\naccess log:\n%s", px.log.String(), access)
		}
	})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(px.log.String(), "root="+px.root) {
		t.Fatalf("the proxy did not log the root to trust (%s):\n%s", px.root, px.log.String())
	}
	return px
}

// roots returns a pool of the local CA's root the proxy logged.
func (px *testProxy) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(px.root)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", px.root)
	}
	return roots
}

// getPage fetches the chat page through the proxy over TLS, so that a
// proxy that cannot serve it fails the test at once, with the answer,
// rather than after the browser has waited for the page.
func getPage(t *testing.T, px *testProxy, roots *x509.CertPool) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, px.addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("https://%s:%d/?room=lobby&user=probe", siteName, px.port)
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s through the proxy: %v", url, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("<title>wsproxy chat</title>")) {
		t.Fatalf("GET %s through the proxy: %s %q %v", url, resp.Status, body, err)
	}
}

// pinnedKeys connects to the proxy as a client that trusts only the
// local CA's root the proxy logged, verifies the certificate it serves
// for the site, and returns the SHA-256 hashes of the public keys of the
// verified chain (base64, comma-separated) for Chromium's
// --ignore-certificate-errors-spki-list.
//
// Chromium is not told to trust the root itself: that needs an NSS
// database (certutil, another package) in the profile. Pinning the keys
// Go has just verified against that root, on a fresh profile, accepts
// exactly this proxy's certificate and no other, unlike
// --ignore-certificate-errors.
func pinnedKeys(t *testing.T, px *testProxy, roots *x509.CertPool) string {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{ServerName: siteName, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", px.addr)
	if err != nil {
		t.Fatalf("TLS to the proxy, trusting its logged root: %v", err)
	}
	defer c.Close()
	state := c.(*tls.Conn).ConnectionState()
	var pins []string
	for _, cert := range state.VerifiedChains[0] {
		sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
		pins = append(pins, base64.StdEncoding.EncodeToString(sum[:]))
	}
	return strings.Join(pins, ",")
}

// browser is a headless Chromium process.
type browser struct {
	cmd      *exec.Cmd
	devtools string        // the browser's DevTools WebSocket URL
	out      *syncBuffer   // its stderr
	exited   chan struct{} // closed once the process has been waited for
}

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// startChromium starts headless Chromium with a fresh profile, no network
// beyond loopback, the proxy's keys pinned, and the DevTools protocol on a
// free loopback port. Its whole process group is killed, and reaped, when
// the test ends.
func startChromium(ctx context.Context, t *testing.T, path, pins string) *browser {
	t.Helper()
	// Chromium's helper processes outlive the browser process for a
	// moment when it is killed, and its crash handlers detach from it. As
	// a subreaper, this process inherits and reaps them even where PID 1
	// does not reap orphans.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Logf("prctl(PR_SET_CHILD_SUBREAPER): %v; Chromium's helpers are left to PID 1", errno)
	}
	profile := t.TempDir()
	home := filepath.Join(profile, "home") // Chromium writes under $HOME too
	cmd := exec.Command(path,
		"--headless",
		"--no-sandbox", // running as root
		"--disable-gpu",
		"--disable-quic",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-extensions",
		"--disable-default-apps",
		"--disable-breakpad",
		"--disable-crash-reporter",
		"--no-proxy-server",
		// Only the proxy's name resolves, to loopback; nothing else does.
		"--host-resolver-rules=MAP "+siteName+" 127.0.0.1, MAP * ~NOTFOUND",
		"--ignore-certificate-errors-spki-list="+pins,
		"--user-data-dir="+profile,
		"--remote-debugging-address=127.0.0.1",
		"--remote-debugging-port=0",
		"--window-size=900,600",
		"about:blank",
	)
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := &browser{cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	pgid := cmd.Process.Pid
	urlc := make(chan string, 1)
	go func() {
		defer close(br.exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			br.out.Write([]byte(line + "\n"))
			if _, url, ok := strings.Cut(line, "DevTools listening on "); ok {
				select {
				case urlc <- strings.TrimSpace(url):
				default:
				}
			}
		}
		_, _ = io.Copy(br.out, stderr) // after a line too long to scan
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		// The browser's process group, and its crash handlers, which
		// leave the group (setsid) but name the profile's $HOME in their
		// command line: noted while they run, as a zombie has no command
		// line.
		known := map[int]bool{}
		for _, p := range processes() {
			if p.pgrp == pgid || strings.Contains(p.cmdline, profile) {
				known[p.pid] = true
			}
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-br.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("chromium %d still running 10 s after SIGKILL", pgid)
		}
		ours := func(p procInfo) bool { return known[p.pid] || p.pgrp == pgid }
		if left := stopProcesses(ours, 5*time.Second); len(left) > 0 {
			t.Errorf("chromium's processes %v still running after SIGKILL", left)
		}
		if t.Failed() {
			t.Logf("chromium stderr (D-Bus lines left out):\n%s", withoutDBus(br.out.String()))
		}
	})
	select {
	case br.devtools = <-urlc:
	case <-br.exited:
		t.Fatalf("chromium exited:\n%s", withoutDBus(br.out.String()))
	case <-ctx.Done():
		t.Fatalf("chromium did not open DevTools: %v\n%s", ctx.Err(), br.out.String())
	}
	return br
}

// withoutDBus drops Chromium's complaints about the missing D-Bus from its
// output.
func withoutDBus(out string) string {
	var keep []string
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "dbus") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "")
}

// stopProcesses kills (SIGKILL, by PID) every process that ours selects,
// reaps those that are this process's children, and waits until none is
// left running. It returns the PIDs still running after timeout.
func stopProcesses(ours func(procInfo) bool, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var running []int
		for _, p := range processes() {
			switch {
			case !ours(p):
			case p.state == 'Z' && p.ppid == os.Getpid():
				var ws syscall.WaitStatus
				_, _ = syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
			case p.state == 'Z':
				// Another parent's zombie: it holds nothing open.
			default:
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
				running = append(running, p.pid)
			}
		}
		if len(running) == 0 || time.Now().After(deadline) {
			return running
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type procInfo struct {
	pid, ppid, pgrp int
	state           byte
	cmdline         string // arguments joined by spaces
}

// processes lists the machine's processes from /proc.
func processes() []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 {
			continue
		}
		p := procInfo{pid: pid, state: f[0][0]}
		p.ppid, _ = strconv.Atoi(f[1])
		p.pgrp, _ = strconv.Atoi(f[2])
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		p.cmdline = string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		out = append(out, p)
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
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
