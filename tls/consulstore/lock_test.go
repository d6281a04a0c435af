package consulstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// The test binary doubles as the other process of the lock tests: run with
// helperEnv set, TestMain calls helperMain instead of the tests.
const (
	helperEnv    = "WSPROXY_CONSULSTORE_HELPER"
	helperAddr   = "WSPROXY_CONSULSTORE_ADDR"
	helperPrefix = "WSPROXY_CONSULSTORE_PREFIX"
	helperLock   = "WSPROXY_CONSULSTORE_LOCK"
	helperRounds = "WSPROXY_CONSULSTORE_ROUNDS"
)

// helperMain is the helper process. Modes:
//
//	hold   Lock, print "locked", wait for a line on stdin (or EOF), Unlock,
//	       print "unlocked"
//	count  ROUNDS times: Lock, read the counter, sleep, write counter+1,
//	       Unlock; then print "done"
func helperMain(mode string) int {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address, cfg.Scheme, cfg.Token, cfg.TokenFile = os.Getenv(helperAddr), "http", "", ""
	client, err := api.NewClient(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := New(Config{Client: client, Prefix: os.Getenv(helperPrefix), SessionTTL: MinSessionTTL, LockDelay: time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := os.Getenv(helperLock)
	switch mode {
	case "hold":
		if err := s.Lock(ctx, name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("locked")
		bufio.NewReader(os.Stdin).ReadString('\n')
		if err := s.Unlock(ctx, name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("unlocked")
		return 0
	case "count":
		rounds, _ := strconv.Atoi(os.Getenv(helperRounds))
		for range rounds {
			if err := increment(ctx, s, name); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		fmt.Println("done")
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// increment adds one to the counter under the lock with a read, a pause and
// a write: without exclusion, concurrent increments get lost.
func increment(ctx context.Context, s *Store, name string) error {
	if err := s.Lock(ctx, name); err != nil {
		return err
	}
	defer s.Unlock(ctx, name)
	n := 0
	if b, err := s.Load(ctx, "counter"); err == nil {
		n, _ = strconv.Atoi(string(b))
	}
	time.Sleep(3 * time.Millisecond)
	return s.Store(ctx, "counter", []byte(strconv.Itoa(n+1)))
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan error
}

func startHelper(t *testing.T, mode, prefix, lock string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperAddr+"="+agent.Addr(), helperPrefix+"="+prefix, helperLock+"="+lock)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		h.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		for range h.lines {
		}
	})
	return h
}

// expect waits for the helper to print want.
func (h *helper) expect(t *testing.T, want string, within time.Duration) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper (pid %d) exited before printing %q", h.cmd.Process.Pid, want)
			}
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("helper (pid %d) did not print %q within %v", h.cmd.Process.Pid, want, within)
		}
	}
}

// TestLockExclusionBetweenProcesses: a lock held by another process is not
// taken (TryLock says so, Lock waits) until that process unlocks, and then
// at once (no lock-delay after an Unlock).
func TestLockExclusionBetweenProcesses(t *testing.T) {
	t.Parallel()
	s := newStore(t, "")
	ctx := ctxT(t, time.Minute)
	h := startHelper(t, "hold", s.Prefix(), "issue_cert_example.com")
	h.expect(t, "locked", 30*time.Second)

	if ok, err := s.TryLock(ctx, "issue_cert_example.com"); ok || err != nil {
		t.Fatalf("TryLock of a lock another process holds = %v, %v; want false, nil", ok, err)
	}
	if ok, err := s.TryLock(ctx, "issue_cert_other.com"); !ok || err != nil {
		t.Fatalf("TryLock of a free lock = %v, %v", ok, err)
	}
	if err := s.Unlock(ctx, "issue_cert_other.com"); err != nil {
		t.Fatal(err)
	}

	got := make(chan time.Time, 1)
	go func() {
		if err := s.Lock(ctx, "issue_cert_example.com"); err != nil {
			t.Error(err)
		}
		got <- time.Now()
	}()
	select {
	case <-got:
		t.Fatal("Lock returned while another process held the lock")
	case <-time.After(time.Second):
	}
	released := time.Now()
	fmt.Fprintln(h.stdin, "unlock")
	h.expect(t, "unlocked", 10*time.Second)
	select {
	case at := <-got:
		t.Logf("lock passed from the helper to the test in %v after the helper was told to unlock", at.Sub(released).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("Lock did not return within 5s of the other process's Unlock")
	}
	if err := s.Unlock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	if err := <-h.done; err != nil {
		t.Fatalf("helper: %v", err)
	}
}

// TestLockMutualExclusionCounter: two processes and two goroutines here
// increment one counter with a read, a pause and a write under the lock;
// none of the 40 increments is lost.
func TestLockMutualExclusionCounter(t *testing.T) {
	t.Parallel()
	s := newStore(t, "")
	ctx := ctxT(t, 2*time.Minute)
	const rounds = 10
	hs := []*helper{
		startHelper(t, "count", s.Prefix(), "counter", helperRounds+"="+strconv.Itoa(rounds)),
		startHelper(t, "count", s.Prefix(), "counter", helperRounds+"="+strconv.Itoa(rounds)),
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range rounds {
				if err := increment(ctx, s, "counter"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, h := range hs {
		h.expect(t, "done", time.Minute)
	}
	b, err := s.Load(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != strconv.Itoa(4*rounds) {
		t.Fatalf("counter = %s after %d increments under the lock", got, 4*rounds)
	}
}

// TestLockFreedWhenHolderKilled: the lock of a SIGKILLed holder is not free
// at once, and is free once Consul has invalidated its session (TTL 10s,
// Consul's minimum: up to twice that) plus the lock-delay (1ms here). The
// holder first keeps the lock well past one TTL: its session is renewed.
func TestLockFreedWhenHolderKilled(t *testing.T) {
	t.Parallel()
	s := newStore(t, "")
	ctx := ctxT(t, 2*time.Minute)
	h := startHelper(t, "hold", s.Prefix(), "killed")
	h.expect(t, "locked", 30*time.Second)

	time.Sleep(MinSessionTTL + 2*time.Second) // past one TTL, so renewals matter
	if ok, err := s.TryLock(ctx, "killed"); ok || err != nil {
		t.Fatalf("TryLock after the holder kept it for a TTL = %v, %v; want false (its session is renewed)", ok, err)
	}
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-h.done
	killed := time.Now()
	if ok, _ := s.TryLock(ctx, "killed"); ok {
		t.Fatal("lock free right after its holder was killed: no session TTL at work?")
	}
	if err := s.Lock(ctx, "killed"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(killed)
	t.Logf("lock of a SIGKILLed holder taken %v after the kill (session TTL %v)", took.Round(100*time.Millisecond), MinSessionTTL)
	if limit := 2*MinSessionTTL + 5*time.Second; took > limit {
		t.Errorf("took %v, more than 2×TTL + slack (%v)", took, limit)
	}
	if err := s.Unlock(ctx, "killed"); err != nil {
		t.Fatal(err)
	}
}

// TestTryLockAndLease: TryLock inside one process excludes another
// goroutine; RenewLockLease succeeds while the lock is held and reports a
// lost lock once its session is destroyed behind the holder's back (as
// Consul does to a holder cut off for longer than its TTL), as does
// Unlock; Lock waits out the lock-delay of the destroyed session.
func TestTryLockAndLease(t *testing.T) {
	t.Parallel()
	s := newStore(t, "", func(c *Config) { c.LockDelay = 2 * time.Second })
	ctx := ctxT(t, time.Minute)
	if ok, err := s.TryLock(ctx, "lease"); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	other := make(chan bool, 1)
	go func() {
		ok, _ := s.TryLock(ctx, "lease")
		other <- ok
	}()
	if <-other {
		t.Fatal("a second TryLock of a held lock succeeded")
	}
	if err := s.RenewLockLease(ctx, "lease", time.Minute); err != nil {
		t.Fatalf("RenewLockLease while held: %v", err)
	}
	if err := s.RenewLockLease(ctx, "not-held", time.Minute); err == nil {
		t.Fatal("RenewLockLease of a lock not held succeeded")
	}

	s.mu.Lock()
	id := s.held["lease"].lease.id
	s.mu.Unlock()
	if _, err := agent.Client(t).Session().Destroy(id, nil); err != nil {
		t.Fatal(err)
	}
	destroyed := time.Now()
	if err := s.RenewLockLease(ctx, "lease", time.Minute); !errors.Is(err, errLost) {
		t.Fatalf("RenewLockLease after the session was destroyed: %v, want a lost lock", err)
	}
	if err := s.Unlock(ctx, "lease"); !errors.Is(err, errLost) {
		t.Fatalf("Unlock of a lost lock: %v, want a lost lock", err)
	}
	if err := s.Lock(ctx, "lease"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(destroyed); took < 1500*time.Millisecond {
		t.Errorf("lock taken %v after its session was destroyed, inside the 2s lock-delay", took)
	}
	if err := s.Unlock(ctx, "lease"); err != nil {
		t.Fatal(err)
	}
}

// TestLockHonoursContextAndClose: a waiting Lock ends with its context, and
// with Close; Close releases what the Store holds.
func TestLockHonoursContextAndClose(t *testing.T) {
	t.Parallel()
	a := newStore(t, "")
	b := newStore(t, a.Prefix())
	ctx := ctxT(t, time.Minute)
	if err := a.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := b.Lock(short, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with a context that ends: %v", err)
	}
	waiting := make(chan error, 1)
	go func() { waiting <- b.Lock(ctx, "x") }()
	time.Sleep(200 * time.Millisecond)
	b.Close()
	select {
	case err := <-waiting:
		if err == nil {
			t.Fatal("Lock succeeded after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Lock")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	c := newStore(t, a.Prefix())
	if ok, err := c.TryLock(ctx, "x"); !ok || err != nil {
		t.Fatalf("TryLock after the holder's Close = %v, %v", ok, err)
	}
	// No session is left behind by any of it but c's.
	sessions, _, err := agent.Client(t).Session().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, se := range sessions {
		if se.Name == "wsproxy lock x" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d sessions for lock x, want 1 (c's)", n)
	}
}
