// Package consultest runs a real Consul agent in -dev mode for tests: on
// loopback, on free ports of its own, stopped when the test ends.
//
// The agent binary is $WSPROXY_CONSUL_BIN if that is set, else the one
// scripts/install-consul.sh builds (or finds in its cache). If neither
// works the test fails with the reason: the Consul tests are never skipped.
package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/internal/installed"
)

// Timeouts of the agent's life cycle.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 5 * time.Second
)

// Agent is a running (or stopped) Consul dev agent. Its methods are safe
// for concurrent use.
type Agent struct {
	bin   string
	ports ports
	node  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	logs *syncBuffer
}

type ports struct{ http, serfLAN, serfWAN, server int }

// Start starts an agent for t and stops it when t ends. It fails t if the
// agent cannot be found, built or started.
func Start(t testing.TB) *Agent {
	t.Helper()
	a, err := New()
	if err != nil {
		t.Fatalf("consultest: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("consultest: %v", err)
		}
		if t.Failed() {
			t.Logf("consul agent log (tail):\n%s", a.LogTail(4096))
		}
	})
	return a
}

// New starts an agent that the caller must Stop: the form for TestMain,
// which has no testing.TB.
func New() (*Agent, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	var lastErr error
	// Free ports are found by binding and closing: another process can take
	// one before the agent binds it, so try a few sets.
	for range 3 {
		p, err := freePorts()
		if err != nil {
			return nil, err
		}
		a := &Agent{bin: bin, ports: p, node: "wsproxy-test-" + strconv.Itoa(p.http)}
		if lastErr = a.start(); lastErr == nil {
			return a, nil
		}
	}
	return nil, lastErr
}

// Addr returns the agent's HTTP API address, "127.0.0.1:port". It stays the
// same across Stop and Restart.
func (a *Agent) Addr() string { return "127.0.0.1:" + strconv.Itoa(a.ports.http) }

// Node returns the agent's node name.
func (a *Agent) Node() string { return a.node }

// Client returns a Consul API client for the agent, for tests to register
// services and update checks with.
func (a *Agent) Client(t testing.TB) *api.Client {
	t.Helper()
	cfg := api.DefaultNonPooledConfig()
	// Nothing from the environment (CONSUL_HTTP_*): this is the test agent.
	cfg.Address, cfg.Scheme = a.Addr(), "http"
	cfg.Token, cfg.TokenFile = "", ""
	cfg.TLSConfig = api.TLSConfig{}
	cfg.Namespace, cfg.Partition, cfg.Datacenter = "", "", ""
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("consultest: client: %v", err)
	}
	return c
}

// Stop stops the agent: SIGTERM, then SIGKILL if it has not exited after
// stopTimeout (noted in its log; the agent is stopped either way, so that is
// no error). Stopping a stopped agent does nothing. A -dev agent keeps its
// state in memory: it is lost.
func (a *Agent) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopLocked()
}

// Restart starts a stopped agent again on the same ports (stopping it first
// if it runs). It comes back empty: -dev keeps nothing.
func (a *Agent) Restart() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.stopLocked(); err != nil {
		return err
	}
	var err error
	// The ports were ours a moment ago; the agent's own sockets may take a
	// moment to go.
	for range 3 {
		if err = a.startLocked(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// LogTail returns up to the last n bytes the agent wrote.
func (a *Agent) LogTail(n int) string {
	a.mu.Lock()
	logs := a.logs
	a.mu.Unlock()
	if logs == nil {
		return ""
	}
	return logs.tail(n)
}

func (a *Agent) start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.startLocked()
}

func (a *Agent) startLocked() error {
	if a.cmd != nil {
		return errors.New("consul agent already running")
	}
	args := []string{
		"agent", "-dev",
		"-node", a.node,
		"-bind", "127.0.0.1",
		"-client", "127.0.0.1",
		"-advertise", "127.0.0.1",
		"-http-port", strconv.Itoa(a.ports.http),
		"-serf-lan-port", strconv.Itoa(a.ports.serfLAN),
		"-serf-wan-port", strconv.Itoa(a.ports.serfWAN),
		"-server-port", strconv.Itoa(a.ports.server),
		"-dns-port", "-1",
		"-grpc-port", "-1",
		"-grpc-tls-port", "-1",
		"-log-level", "warn",
		// Tests hold many blocking queries open at once from loopback.
		"-hcl", "limits { http_max_conns_per_client = 4096 }",
		"-hcl", "disable_update_check = true",
	}
	cmd := exec.Command(a.bin, args...)
	logs := a.logs // one log across restarts
	if logs == nil {
		logs = &syncBuffer{}
	}
	fmt.Fprintf(logs, "consultest: %s %s\n", a.bin, strings.Join(args, " "))
	cmd.Stdout, cmd.Stderr = logs, logs
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", a.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.cmd, a.done, a.logs = cmd, done, logs
	if err := a.waitLeader(done); err != nil {
		_ = a.stopLocked()
		return fmt.Errorf("consul agent on %s: %w\n%s", a.Addr(), err, logs.tail(4096))
	}
	return nil
}

// waitLeader waits until the agent's HTTP API names a raft leader and
// the catalog holds the agent's own node: a session (a lock) made before
// that fails with "Missing node registration".
func (a *Agent) waitLeader(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	get := func(path string) []byte {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Addr()+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil
		}
		return b
	}
	for {
		if len(bytes.Trim(bytes.TrimSpace(get("/v1/status/leader")), `"`)) > 0 &&
			bytes.Contains(get("/v1/catalog/node/"+a.node), []byte(`"Node"`)) { // "null" until registered
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before electing a leader")
		case <-ctx.Done():
			return fmt.Errorf("no leader after %v", startTimeout)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (a *Agent) stopLocked() error {
	if a.cmd == nil {
		return nil
	}
	cmd, done := a.cmd, a.done
	a.cmd, a.done = nil, nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill consul agent (pid %d): %w", cmd.Process.Pid, err)
	}
	<-done
	fmt.Fprintf(a.logs, "consultest: agent (pid %d) still running %v after SIGTERM; killed\n", cmd.Process.Pid, stopTimeout)
	return nil
}

// freePorts returns loopback ports that were free a moment ago: TCP for
// HTTP and the server RPC, TCP and UDP for the two serf ports.
func freePorts() (ports, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	tcp := func(udp bool) (int, error) {
		for range 20 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return 0, err
			}
			held = append(held, l)
			port := l.Addr().(*net.TCPAddr).Port
			if !udp {
				return port, nil
			}
			u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				continue // UDP side taken; keep the TCP one held and try another
			}
			held = append(held, u)
			return port, nil
		}
		return 0, errors.New("no free port pair on loopback")
	}
	var p ports
	var err error
	if p.http, err = tcp(false); err != nil {
		return p, err
	}
	if p.serfLAN, err = tcp(true); err != nil {
		return p, err
	}
	if p.serfWAN, err = tcp(true); err != nil {
		return p, err
	}
	if p.server, err = tcp(false); err != nil {
		return p, err
	}
	return p, nil
}

var binary struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the path of the Consul binary: $WSPROXY_CONSUL_BIN, else
// what scripts/install-consul.sh prints (it builds Consul into a cache
// outside the repository the first time, which takes minutes). The result
// is computed once per process.
func Binary() (string, error) {
	binary.once.Do(func() { binary.path, binary.err = findBinary() })
	return binary.path, binary.err
}

func findBinary() (string, error) {
	return installed.Binary("WSPROXY_CONSUL_BIN", "install-consul.sh")
}

// syncBuffer is the agent's log: written by the process's pipes, read by
// LogTail. It keeps the last 64 KiB.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const logKeep = 64 << 10

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*logKeep {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-logKeep:]...)
	}
	return len(p), nil
}

func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return tailString(string(b.buf), n)
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
