package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// recorder is a plain HTTP backend that records the request-targets and
// Host fields it was sent.
type recorder struct {
	addr string
	mu   sync.Mutex
	reqs []string // "HOST TARGET"
}

func recordingHTTP(t testing.TB, handler func(w http.ResponseWriter, r *http.Request)) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{addr: ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.Host+" "+r.RequestURI)
		rec.mu.Unlock()
		if handler != nil {
			handler(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", strconv.Itoa(len(body)))
		io.WriteString(w, "ok "+r.RequestURI)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return rec
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reqs...)
}

// response is one HTTP response read off a raw connection.
type response struct {
	status int
	header map[string]string
	body   string
}

func readResponse(t testing.TB, br *bufio.Reader) response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: map[string]string{}, body: string(b)}
	for k, v := range resp.Header {
		r.header[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	if resp.Close {
		r.header["connection"] = "close"
	}
	return r
}

// expectClosed reads what is left on c and fails if it is more than the
// end of the connection.
func expectClosed(t testing.TB, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection stayed open (read %q)", rest)
	}
	if len(rest) > 0 {
		t.Fatalf("after the answer the connection carried %q", rest)
	}
}

func dialProxy(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	return c, bufio.NewReader(c)
}

// TestFramingAmbiguitiesAreRefused sends requests whose end is in doubt,
// each followed by a second request a smuggler would want run: each must
// get 400 with Connection: close and reach no backend.
func TestFramingAmbiguitiesAreRefused(t *testing.T) {
	t.Parallel()
	rec := recordingHTTP(t, nil)
	tp := startProxy(t, ":{port} {\n\troute /* {\n\t\tto "+rec.addr+"\n\t}\n}", 0)
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct{ name, head, body string }{
		{"CL and TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"},
		{"TE and CL", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n", "0\r\n\r\n"},
		{"differing CLs", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 0\r\n", "hello"},
		{"CL list", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 5\r\n", "hello"},
		{"chunked not last", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"},
		{"chunked twice", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"},
		{"unknown coding", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"},
		{"TE in HTTP/1.0", "POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"},
		{"space before colon", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n", "hello"},
		{"folded TE", "POST /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nTransfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"},
	}
	for _, tc := range cases {
		c, br := dialProxy(t, tp.addr)
		io.WriteString(c, tc.head+"\r\n"+tc.body+smuggled)
		r := readResponse(t, br)
		if r.status != 400 || r.header["connection"] != "close" {
			t.Errorf("%s: status %d, Connection %q, want 400 and close", tc.name, r.status, r.header["connection"])
			continue
		}
		expectClosed(t, c, br)
	}
	if got := rec.requests(); len(got) > 0 {
		t.Fatalf("the backend was sent %q", got)
	}
	// The unambiguous forms still pass.
	c, br := dialProxy(t, tp.addr)
	io.WriteString(c, "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"+
		"POST /ok2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	for _, want := range []string{"ok /ok", "ok /ok2"} {
		if r := readResponse(t, br); r.status != 200 || r.body != want || r.header["x-got"] != "5" {
			t.Fatalf("valid request: %d %q %v", r.status, r.body, r.header)
		}
	}
}

// TestSlowUploadOutlivesHandshakeTimeout streams a body for longer than
// handshake_timeout, a byte at a time within request_body_timeout.
func TestSlowUploadOutlivesHandshakeTimeout(t *testing.T) {
	t.Parallel()
	rec := recordingHTTP(t, nil)
	tp := startProxy(t, "{\n\thandshake_timeout 300ms\n\trequest_body_timeout 2s\n}\n:{port} {\n\troute /* {\n\t\tto "+rec.addr+"\n\t}\n}", 0)
	c, br := dialProxy(t, tp.addr)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
	for i := 0; i < 8; i++ {
		time.Sleep(120 * time.Millisecond)
		io.WriteString(c, "x")
	}
	if r := readResponse(t, br); r.status != 200 || r.header["x-got"] != "8" {
		t.Fatalf("a slow upload got %d %q", r.status, r.body)
	}
}

// TestStalledUploadIsCutAndClosed stalls a body past request_body_timeout
// and then sends, as the rest of the body, a request of its own: the
// client gets 408 with Connection: close and that request is never run.
func TestStalledUploadIsCutAndClosed(t *testing.T) {
	t.Parallel()
	rec := recordingHTTP(t, nil)
	tp := startProxy(t, "{\n\thandshake_timeout 400ms\n\trequest_body_timeout 400ms\n}\n:{port} {\n\troute /* {\n\t\tto "+rec.addr+"\n\t}\n}", 0)
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	// Past the 8 KiB fasthttp reads before the handler: the rest streams.
	sent := strings.Repeat("x", 9000)
	c, br := dialProxy(t, tp.addr)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(sent)+len(smuggled))+"\r\n\r\n"+sent)
	r := readResponse(t, br)
	io.WriteString(c, smuggled)
	if r.status != 408 || r.header["connection"] != "close" {
		t.Fatalf("stalled upload: status %d, Connection %q, want 408 and close", r.status, r.header["connection"])
	}
	expectClosed(t, c, br)
	time.Sleep(100 * time.Millisecond)
	for _, q := range rec.requests() {
		if strings.Contains(q, "smuggled") {
			t.Fatalf("the rest of the body ran as a request: %q", rec.requests())
		}
	}
}

// TestFailedUpgradeClosesConnection: a 502 to a WebSocket handshake says
// Connection: close on the wire, and the connection ends after it.
func TestFailedUpgradeClosesConnection(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	tp := startProxy(t, ":{port} {\n\troute /* {\n\t\tto "+dead+"\n\t\tlb_retries 0\n\t}\n}", 0)
	c, br := dialProxy(t, tp.addr)
	io.WriteString(c, wsHead("/ws"))
	r := readResponse(t, br)
	if r.status != 502 || r.header["connection"] != "close" {
		t.Fatalf("status %d, Connection %q, want 502 and close", r.status, r.header["connection"])
	}
	expectClosed(t, c, br)
}

// longPollBackend answers every plain request after hold.
func longPollBackend(t testing.TB, hold time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			time.Sleep(hold)
			ctx.SetBodyString("done")
		},
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// getStatus does one request on a fresh connection and returns the status,
// or the error that prevented one.
func getStatus(addr, path string, timeout time.Duration) (int, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// concurrentGets runs n requests at once and counts them by status (0 for
// a failed request).
func concurrentGets(addr string, n int, timeout time.Duration) map[int]int {
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := getStatus(addr, "/poll", timeout)
			mu.Lock()
			counts[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return counts
}

// TestThousandLongPolls holds 1,000 plain requests open on one backend at
// once: all are answered (fasthttp's default of 512 connections per host
// answered the rest 502 at once). Not parallel: its load would skew the
// timing tests.
func TestThousandLongPolls(t *testing.T) {
	backend := longPollBackend(t, time.Second)
	tp := startProxy(t, "{\n\taccess_log off\n}\n:{port} {\n\troute /* {\n\t\tto "+backend+"\n\t}\n}", 0)
	if counts := concurrentGets(tp.addr, 1000, 30*time.Second); counts[200] != 1000 {
		t.Fatalf("1,000 long-polls: %v, want all 200", counts)
	}
}

// TestBackendConnCapQueues caps connections to a backend: requests past
// the cap wait for one and are all answered; with a short wait the late
// ones get 503, not 502.
func TestBackendConnCapQueues(t *testing.T) {
	t.Parallel()
	backend := longPollBackend(t, 100*time.Millisecond)
	tp := startProxy(t, "{\n\taccess_log off\n}\n:{port} {\n\troute /* {\n\t\tto "+backend+"\n\t\tmax_conns_per_backend 10 10s\n\t}\n}", 0)
	if counts := concurrentGets(tp.addr, 100, 20*time.Second); counts[200] != 100 {
		t.Fatalf("100 requests over 10 connections: %v, want all 200", counts)
	}
	slow := longPollBackend(t, time.Second)
	tp2 := startProxy(t, "{\n\taccess_log off\n}\n:{port} {\n\troute /* {\n\t\tto "+slow+"\n\t\tmax_conns_per_backend 1 200ms\n\t}\n}", 0)
	if counts := concurrentGets(tp2.addr, 3, 10*time.Second); counts[200] != 1 || counts[503] != 2 {
		t.Fatalf("3 requests over 1 connection with a 200ms wait: %v, want 1 x 200 and 2 x 503", counts)
	}
}

// TestResponseTimeout: a backend that never answers costs the client
// response_timeout and a 504, not forever.
func TestResponseTimeout(t *testing.T) {
	t.Parallel()
	tp := startProxy(t, ":{port} {\n\troute /* {\n\t\tto "+silentBackend(t)+"\n\t\tresponse_timeout 300ms\n\t}\n}", 0)
	start := time.Now()
	code, err := getStatus(tp.addr, "/never", 5*time.Second)
	if err != nil || code != 504 {
		t.Fatalf("status %d, %v after %v, want 504", code, err, time.Since(start).Round(time.Millisecond))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("504 came after %v", d)
	}
}

// TestStalledReaderOfStreamIsCut: a client that asks for a streamed
// answer and stops reading is cut after write_timeout, and the backend's
// request ends with it; fasthttp's own writes have no deadline.
func TestStalledReaderOfStreamIsCut(t *testing.T) {
	t.Parallel()
	ended := make(chan struct{})
	rec := recordingHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(ended)
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			default:
			}
		}
	})
	tp := startProxy(t, "{\n\twrite_timeout 500ms\n}\n:{port} {\n\troute /* {\n\t\tto "+rec.addr+"\n\t}\n}", 0)
	c, br := dialProxy(t, tp.addr)
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	// Read the head and a little, then nothing more.
	if _, err := br.Peek(1024); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream to a client that stopped reading was still running after 20 s")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the client's connection was not closed: %v", err)
	}
}
