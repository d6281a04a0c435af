package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestValidateBuildsNothing: validating a config with TLS sites (local CA
// and automatic ACME) and an access log file leaves no goroutine, no file
// descriptor (socket, epoll set, file) and no access log file behind: it
// checks the config, it does not start a proxy. Not parallel, so that no
// other test's goroutines or descriptors come and go while it counts.
func TestValidateBuildsNothing(t *testing.T) {
	dir := t.TempDir()
	accessLog := filepath.Join(dir, "access.log")
	conf := writeFile(t, "tls.Caddyfile", "{\n\tstorage "+filepath.Join(dir, "certs")+"\n\temail ops@example.com\n\taccess_log "+accessLog+"\n}\n"+
		"chat.localhost:8443 {\n\ttls internal\n\troute /* {\n\t\tto 127.0.0.1:9\n\t}\n}\n"+
		"chat.example.com {\n\troute /* {\n\t\tto 127.0.0.1:9\n\t}\n}\n")
	// One validate first, so that lazily started runtime goroutines and
	// package-level state (not ours to count) exist before the baseline.
	if code, out, errs := runCLI("validate", "-config", conf); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	os.Remove(accessLog)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	for range 3 {
		if code, out, errs := runCLI("validate", "-config", conf); code != 0 || !strings.Contains(out, "valid") {
			t.Fatalf("exit %d: %s%s", code, out, errs)
		}
	}
	// Anything validate started would be running now; give goroutines
	// that end by themselves a moment, bounded.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > goroutines || openFDs(t) > fds {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("after validate: %d goroutines (was %d), %d fds (was %d)\n%s",
				runtime.NumGoroutine(), goroutines, openFDs(t), fds, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(accessLog); !os.IsNotExist(err) {
		t.Fatalf("validate created the access log (stat: %v)", err)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestSubcommandHelpExitsZero: asking a subcommand for its flags is not an
// error.
func TestSubcommandHelpExitsZero(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"run", "validate", "fmt", "route", "reload", "demo", "version"} {
		for _, h := range []string{"-h", "-help", "--help"} {
			if code, _, errs := runCLI(cmd, h); code != 0 {
				t.Errorf("wsproxy %s %s: exit %d: %s", cmd, h, code, errs)
			}
		}
	}
}

// TestRouteCommandOnConsulRoute: the config does not list a Consul route's
// backends, so answering from it is an error that says so and points at
// -admin, not an empty line.
func TestRouteCommandOnConsulRoute(t *testing.T) {
	t.Parallel()
	conf := writeFile(t, "Caddyfile", "127.0.0.1:8080 {\n\troute /chat {\n\t\tname chat\n\t\tconsul chat\n\t\tlb_policy hash query:room\n\t}\n}\n")
	code, out, errs := runCLI("route", "-config", conf, "chat", "room-1")
	if code != 1 || out != "" || !strings.Contains(errs, "Consul") || !strings.Contains(errs, "-admin") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and an error naming Consul and -admin", code, out, errs)
	}
}

// TestBuiltBinaryRemovedAtExit: the wsproxy binary the process tests build
// is removed when the test binary exits, so that runs do not pile up
// binaries in the temp directory. It runs this test binary again, with its
// own TMPDIR, to build the binary and exit.
func TestBuiltBinaryRemovedAtExit(t *testing.T) {
	if os.Getenv("WSPROXY_TEST_BUILD_ONLY") == "1" {
		if _, err := binary(); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Parallel()
	tmp := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBuiltBinaryRemovedAtExit$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WSPROXY_TEST_BUILD_ONLY=1", "TMPDIR="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("test binary: %v\n%s", err, out)
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in the temp directory: %s", e.Name())
	}
}

// TestReadmeTryIt: the README gives the demo's WebSocket URL (the path and
// query TestDemo connects to, on the default -listen address) and copies
// Caddyfile.example before the first command that runs ./Caddyfile.
func TestReadmeTryIt(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, try, _ := strings.Cut(readme, "## Try it\n")
	try, _, _ = strings.Cut(try, "\n## ")
	if !strings.Contains(try, "ws://127.0.0.1:8080/ws?room=") {
		t.Error("README's Try it does not give the demo's WebSocket URL ws://127.0.0.1:8080/ws?room=...")
	}
	cp := strings.Index(readme, "cp Caddyfile.example Caddyfile")
	run := strings.Index(readme, "run -config Caddyfile ")
	if cp < 0 || run < 0 || cp > run {
		t.Errorf("README: copy of Caddyfile.example at %d, first run of ./Caddyfile at %d; want the copy first", cp, run)
	}
}
