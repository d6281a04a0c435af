package main

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// openMany opens n WebSockets to url, spreading their source addresses over
// 127.0.0.2-127.0.0.201 so that no source runs out of ports.
func openMany(t *testing.T, url string, n int) []*websocket.Conn {
	t.Helper()
	conns := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialFrom(net.IPv4(127, 0, byte(i/200), byte(2+i%200)), url)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	select {
	case err := <-errs:
		t.Fatalf("opening %d connections: %v", n, err)
	default:
	}
	return conns
}

// TestIdleConnectionsHoldNoGoroutines: 5,000 relayed connections live on
// the event loops; the proxy's goroutine count stays within a small
// constant of its count with none.
func TestIdleConnectionsHoldNoGoroutines(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test; run without -short")
	}
	const conns = 5000
	b0 := echoProcess(t, "e0")
	port, adminPort := freePort(t), freePort(t)
	path := writeFile(t, "Caddyfile", fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\taccess_log off\n}\n:%d {\n\troute /ws {\n\t\tto %s\n\t}\n}\n", adminPort, port, b0))
	p := startProc(t, "run", "-config", path)
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
	p.waitLog(t, `msg="admin API listening"`)
	url := fmt.Sprintf("ws://127.0.0.1:%d/ws", port)
	// One round trip first, so lazily started goroutines are counted in
	// the baseline.
	c, _ := echoID(t, url)
	c.Close()
	time.Sleep(200 * time.Millisecond)
	base := proxyGoroutines(t, admin)

	cs := openMany(t, url, conns)
	for _, c := range cs[:100] { // some traffic, then idle
		c.WriteMessage(websocket.TextMessage, []byte("x"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	var got int
	for deadline := time.Now().Add(10 * time.Second); ; {
		got = proxyGoroutines(t, admin)
		if got <= base+20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got > base+20 {
		t.Fatalf("%d goroutines with %d connections, %d with none", got, conns, base)
	}
	if fds := procFDs(t, p.cmd.Process.Pid); fds < 2*conns {
		t.Fatalf("the proxy holds %d fds for %d connections: are they relayed?", fds, conns)
	}
	t.Logf("%d goroutines with %d relayed connections, %d with none", got, conns, base)
}

// TestSIGTERMWithStalledReaders: 1,000 connections, 500 of whose clients
// stopped reading while their backend floods them; SIGTERM still ends the
// process within grace_period, and the clients that read get their 1001.
func TestSIGTERMWithStalledReaders(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test; run without -short")
	}
	const conns, stalled = 1000, 500
	const grace = 3 * time.Second
	b0 := echoProcess(t, "e0")
	port, adminPort := freePort(t), freePort(t)
	// write_timeout off: the grace period alone must bound the shutdown.
	path := writeFile(t, "Caddyfile", fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tgrace_period %v\n\twrite_timeout off\n}\n:%d {\n\troute /ws {\n\t\tto %s\n\t}\n}\n", adminPort, grace, port, b0))
	p := startProc(t, "run", "-config", path)
	p.waitLog(t, `msg="admin API listening"`)
	url := fmt.Sprintf("ws://127.0.0.1:%d/ws", port)
	cs := openMany(t, url, conns)
	for _, c := range cs[:stalled] {
		// 1 GiB each, never read: the backend blocks once the buffers on
		// the way are full.
		if err := c.WriteMessage(websocket.TextMessage, []byte("__flood 16384 65536")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // let the buffers fill
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got1001 := 0
	for _, c := range cs[stalled:] {
		wg.Add(1)
		go func(c *websocket.Conn) {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(grace + 5*time.Second))
			_, _, err := c.ReadMessage()
			if ce, ok := err.(*websocket.CloseError); ok && ce.Code == 1001 {
				mu.Lock()
				got1001++
				mu.Unlock()
			}
		}(c)
	}
	select {
	case <-p.done:
		p.done <- nil
	case <-time.After(grace + 3*time.Second):
		t.Fatalf("still running %v after SIGTERM with grace_period %v", time.Since(start), grace)
	}
	took := time.Since(start)
	wg.Wait()
	if got1001 != conns-stalled {
		t.Errorf("%d of the %d reading clients got 1001", got1001, conns-stalled)
	}
	if took > grace+2*time.Second {
		t.Errorf("exited %v after SIGTERM, grace_period %v", took, grace)
	}
	t.Logf("exited %v after SIGTERM (grace_period %v) with %d stalled readers", took.Round(time.Millisecond), grace, stalled)
}

// TestReloadAppliesLogLevel: log_level takes effect on reload, not only at
// start.
func TestReloadAppliesLogLevel(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	conf := func(level string) string {
		return fmt.Sprintf("{\n\tlog_level %s\n}\n127.0.0.1:%d {\n\troute /ws {\n\t\tto 127.0.0.1:9\n\t}\n}\n", level, port)
	}
	path := writeFile(t, "Caddyfile", conf("warn"))
	p := startProc(t, "run", "-config", path)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.WriteFile(path, []byte(conf("info")), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP) // logged at warn: not shown
	time.Sleep(300 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGHUP) // now at info
	p.waitLog(t, `msg="config reloaded"`)
}
