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
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestHandshakeRateStorm: 2,000 clients reconnect at once to a route with
// handshake_rate 200/s. Each refused client is told Retry-After (503) and
// comes back after it; the route admits them at 200/s ±10% for as long as
// it is refusing, and every client gets in. Client addresses are spread
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
	deadline := time.Now().Add(60 * time.Second)
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
	first, lastRefusal := admits[0], refusals[len(refusals)-1]
	for _, a := range admits {
		first = minTime(first, a)
	}
	for _, r := range refusals {
		lastRefusal = maxTime(lastRefusal, r)
	}
	// While the route still refuses clients it is saturated: the rate is
	// the admissions of that window, less the initial burst, over its
	// length. (After the last refusal only the last returning clients are
	// left, fewer than the route could take.)
	n, last := 0, first
	for _, a := range admits {
		if !a.After(lastRefusal) {
			n++
			last = maxTime(last, a)
		}
	}
	window := last.Sub(first)
	got := float64(n-burst) / window.Seconds()
	t.Logf("%d admitted, %d refusals, each told Retry-After; %d admitted in the %v the route was refusing: %.1f/s after the burst of %d; all in by +%v",
		len(admits), len(refusals), n, window.Round(time.Millisecond), got, burst, maxAll(admits).Sub(first).Round(time.Millisecond))
	if got < rate*0.9 || got > rate*1.1 {
		t.Fatalf("admitted %.1f/s while saturated, want %d/s ±10%%", got, rate)
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

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func maxAll(ts []time.Time) time.Time {
	m := ts[0]
	for _, t := range ts {
		m = maxTime(m, t)
	}
	return m
}
