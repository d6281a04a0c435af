//go:build !race

// Not under the race detector: it slows each handshake several times over,
// so on a 2-core machine the 101s of a 2,000-client storm reach the
// clients seconds after the route admitted them, and the times the
// clients see no longer measure the route's rate.

package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestHandshakeRateStorm: 2,000 clients reconnect at once to a route with
// handshake_rate 200/s. Each refused client is told Retry-After (503) and
// comes back after it; the route never admits more than its burst plus
// 200/s, admits close to that for as long as it is refusing, and every
// client gets in. Client addresses are spread
// over 127.0.0.2-251 so no source runs out of ports; the test holds about
// 8,000 descriptors at the end (client, two proxy legs, backend).
func TestHandshakeRateStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a 2,000-connection storm")
	}
	// The default burst, one second's worth: Retry-After is in whole
	// seconds, so clients told the same value come back together, and a
	// smaller burst would turn most of each such clump away again.
	const clients, rate, burst = 2000, 200, 200
	tp := startProxy(t, fmt.Sprintf(":{port} {\n\troute /ws {\n\t\tname storm\n\t\tto {b0}\n\t\thandshake_rate %d/s\n\t}\n}", rate), 1)
	var mu sync.Mutex
	var admits, refusals []time.Time
	var conns []net.Conn
	var failures []string
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	began := time.Now() // the bucket is full: the route has been idle
	deadline := began.Add(60 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%250))}
			for time.Now().Before(deadline) {
				c, status, retry, err := stormHandshake(tp.addr, local)
				now := time.Now()
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case status == http.StatusSwitchingProtocols:
					admits = append(admits, now)
					conns = append(conns, c)
				case status == http.StatusServiceUnavailable && retry >= 1:
					refusals = append(refusals, now)
				default:
					failures = append(failures, fmt.Sprintf("status %d, Retry-After %d", status, retry))
				}
				mu.Unlock()
				if err == nil && status == http.StatusSwitchingProtocols {
					return
				}
				if c != nil {
					c.Close()
				}
				if err != nil || retry < 1 {
					return
				}
				time.Sleep(time.Duration(retry) * time.Second)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d failed attempts, e.g. %s", len(failures), failures[0])
	}
	if len(admits) != clients {
		t.Fatalf("%d of %d clients admitted", len(admits), clients)
	}
	sortTimes(admits)
	sortTimes(refusals)
	// The bucket's ceiling, checked at every admission from the moment the
	// storm began (the route was idle, its bucket full): no more than the
	// burst plus the rate, with 10% and a few clients of slack for the
	// time a client takes to read its answer.
	var excess float64
	for i, a := range admits {
		excess = max(excess, float64(i+1)-burst-rate*1.1*a.Sub(began).Seconds())
	}
	// And its floor: while the route still refuses clients it is
	// saturated, and admits the rate less what lapses between returning
	// clumps. Retry-After is in whole seconds, so each clump returns a
	// second after the route answered the one before, which is a little
	// later each round on a loaded machine, and the bucket holds only a
	// second's worth; the ceiling above and the exact rate on a simulated
	// clock (limit's TestBucketStormStream) are the strict checks.
	lastRefusal := refusals[len(refusals)-1]
	first, n := admits[0], 0
	for n < len(admits) && !admits[n].After(lastRefusal) {
		n++
	}
	window := admits[n-1].Sub(first)
	got := float64(n-burst) / window.Seconds()
	t.Logf("%d admitted, %d refusals, each told Retry-After; %d admitted in the %v the route was refusing: %.1f/s after the burst of %d; all in by +%v; at most %.0f past the ceiling",
		len(admits), len(refusals), n, window.Round(time.Millisecond), got, burst, admits[len(admits)-1].Sub(began).Round(time.Millisecond), excess)
	if excess > 10 {
		t.Errorf("%.0f clients admitted past the burst plus %d/s (with 10%% slack)", excess, rate)
	}
	if got < rate*0.8 || got > rate*1.1 {
		t.Errorf("admitted %.1f/s while saturated, want %d/s, -20%% to +10%%", got, rate)
	}
}

// stormHandshake sends a WebSocket handshake from local and returns the
// connection, the status, and Retry-After in seconds (0 if absent).
func stormHandshake(addr string, local *net.TCPAddr) (net.Conn, int, int, error) {
	d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, 0, 0, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(wsHead("/ws"))); err != nil {
		c.Close()
		return nil, 0, 0, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, 0, 0, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
	}
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	c.SetDeadline(time.Time{})
	return c, resp.StatusCode, retry, nil
}

func sortTimes(ts []time.Time) {
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
}
