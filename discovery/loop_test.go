package discovery

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests check the loop's protocol handling against a scripted HTTP
// server, where the index Consul answers can be chosen. Everything else is
// tested against a real Consul agent (consul_test.go).

// scripted answers each health query with the next scripted index (or a
// 500 for index 0 when fail is set), and then blocks until the client
// gives up.
type scripted struct {
	mu      sync.Mutex
	answers []uint64
	fail    int // answer this many requests with 500 first
	asked   []string
	waits   []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.asked = append(s.asked, r.URL.Query().Get("index"))
	s.waits = append(s.waits, r.URL.Query().Get("wait"))
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		http.Error(w, "scripted failure", http.StatusInternalServerError)
		return
	}
	if len(s.answers) == 0 {
		s.mu.Unlock()
		<-r.Context().Done()
		return
	}
	idx := s.answers[0]
	s.answers = s.answers[1:]
	s.mu.Unlock()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"a","Service":"svc","Port":80,"Weights":{"Passing":1,"Warning":1}},"Checks":[]}]`))
}

func (s *scripted) requests() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.asked), slices.Clone(s.waits)
}

// testLogger logs to t. The Consul using it must be closed before t ends.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoopIndexRules(t *testing.T) {
	t.Parallel()
	s := &scripted{answers: []uint64{5, 5, 3, 0, 0, 7}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, err := NewConsul(ConsulConfig{Address: srv.URL, MinInterval: time.Millisecond, WaitTime: time.Minute}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var updates []Update
	stop := c.Watch(Query{Service: "svc"}, func(u Update) {
		mu.Lock()
		updates = append(updates, u)
		mu.Unlock()
	})
	defer stop()
	want := []string{"", "5", "5", "", "1", "", "7"}
	waitUntil(t, "7 requests", func() bool { a, _ := s.requests(); return len(a) >= len(want) })
	asked, waits := s.requests()
	if !slices.Equal(asked, want) {
		t.Errorf("wait indexes sent: %q, want %q", asked, want)
	}
	for i, idx := range asked {
		if idx == "0" {
			t.Errorf("request %d waited on index 0", i)
		}
		if (idx == "") != (waits[i] == "") {
			t.Errorf("request %d: index %q with wait %q", i, idx, waits[i])
		}
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	// The set never changed: one Update only, whatever the index did.
	if len(updates) != 1 || len(updates[0].Instances) != 1 || updates[0].Err != nil {
		t.Errorf("updates: %+v", updates)
	}
}

func TestLoopFailureOnceThenRecovery(t *testing.T) {
	t.Parallel()
	s := &scripted{fail: 5, answers: []uint64{9}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, err := NewConsul(ConsulConfig{Address: srv.URL, MinInterval: time.Millisecond, BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := make(chan Update, 16)
	stop := c.Watch(Query{Service: "svc"}, func(u Update) { ch <- u })
	defer stop()

	u := <-ch
	if u.Err == nil || u.Stale || len(u.Instances) != 0 {
		t.Fatalf("first update: %+v, want an error with no instances, not stale", u)
	}
	u = <-ch
	if u.Err != nil || len(u.Instances) != 1 || u.Index != 9 {
		t.Fatalf("after recovery: %+v", u)
	}
	st := c.State()
	if len(st) != 1 || !st[0].Healthy || st[0].Errors != 5 || st[0].Updates != 2 || st[0].LastError != nil {
		t.Fatalf("state: %+v", st)
	}
	select {
	case u := <-ch:
		t.Fatalf("an update per retry: %+v", u)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestConfigDefaultsAndErrors(t *testing.T) {
	t.Parallel()
	c, err := ConsulConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.WaitTime != DefaultWaitTime || c.MinInterval != DefaultMinInterval || c.BackoffMin != DefaultBackoffMin ||
		c.BackoffMax != DefaultBackoffMax || c.RequestTimeout != DefaultRequestTimeout {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []ConsulConfig{
		{WaitTime: 11 * time.Minute},
		{BackoffMin: time.Second, BackoffMax: time.Millisecond},
		{MinInterval: -1},
		{Scheme: "ftp"},
		{Address: "https://127.0.0.1:1", TLS: TLSConfig{CAFile: "/nonexistent/ca.pem"}},
	} {
		if _, err := NewConsul(bad, nil); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestConfigEnvFallback(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "10.1.2.3:8501")
	t.Setenv("CONSUL_HTTP_TOKEN", "from-env")
	c := ConsulConfig{}
	ac := c.apiConfig()
	if ac.Address != "10.1.2.3:8501" || ac.Token != "from-env" {
		t.Fatalf("env not used: %s %s", ac.Address, ac.Token)
	}
	c = ConsulConfig{Address: "127.0.0.1:9", Token: "mine", Datacenter: "dc9", TLS: TLSConfig{ServerName: "consul.example", InsecureSkipVerify: true}}
	ac = c.apiConfig()
	if ac.Address != "127.0.0.1:9" || ac.Token != "mine" || ac.Datacenter != "dc9" ||
		ac.TLSConfig.Address != "consul.example" || !ac.TLSConfig.InsecureSkipVerify {
		t.Fatalf("explicit config not used: %+v", ac)
	}
}

func TestInvalidQuery(t *testing.T) {
	t.Parallel()
	c, err := NewConsul(ConsulConfig{Address: "127.0.0.1:1"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := make(chan Update, 1)
	stop := c.Watch(Query{}, func(u Update) { ch <- u })
	defer stop()
	if u := <-ch; u.Err == nil {
		t.Fatalf("invalid query: %+v", u)
	}
	if len(c.State()) != 0 {
		t.Fatal("invalid query started a watch")
	}
}
