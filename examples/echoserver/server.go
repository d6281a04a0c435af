// Package echoserver is an in-process WebSocket and HTTP echo backend.
//
// It is the backend behind `wsproxy demo` and the one tests and benchmarks
// put behind the proxy. A Server echoes every WebSocket message back with
// the same message type, answers a few scripted text commands ("__id",
// "__close CODE REASON", "__headers", "__query") so a test can make the
// backend do what it needs, and answers plain HTTP requests in a way that
// lets a test see what the proxy forwarded.
//
// A Server owns every goroutine it starts: Close returns only after all of
// them, including the ones serving upgraded connections, have ended.
package echoserver

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// DefaultReadLimit is the largest WebSocket message a Server accepts when
// Options.ReadLimit is zero or negative.
const DefaultReadLimit int64 = 64 << 20

const (
	// closeGrace bounds how long a closing handshake may take: Close waits
	// this long for clients to answer its close frame, and a connection that
	// sent a close frame waits this long for the peer's reply.
	closeGrace = 500 * time.Millisecond

	// headerBufferSize is the fasthttp read buffer, which bounds the size of
	// a request's header block; proxies add headers, so leave room.
	headerBufferSize = 32 << 10

	// wsBufferSize is the WebSocket read and write buffer size.
	wsBufferSize = 16 << 10

	// maxAcceptBackoff caps the wait after a temporary Accept error.
	maxAcceptBackoff = time.Second
)

// Options configures a Server. The zero value is valid.
type Options struct {
	// ID is the name reported to clients: the reply to "__id", the
	// "hello from ID" greeting, GET /id and the X-Backend-Id response
	// header. If empty, the listen address (host:port) is used.
	ID string

	// Subprotocols lists the WebSocket subprotocols the server supports.
	// The server picks the first of the client's offers (in the client's
	// order) that appears here. If none matches, or Subprotocols is empty,
	// no subprotocol is negotiated.
	Subprotocols []string

	// EnableCompression negotiates permessage-deflate (no context takeover)
	// when the client offers it.
	EnableCompression bool

	// Page, if non-nil, is served at GET / as text/html. If nil, GET / is
	// answered with 404. See DemoPage.
	Page []byte

	// ReadLimit is the largest WebSocket message, in bytes, the server
	// accepts; a larger one is refused with close code 1009. It also bounds
	// the body of POST /echo. If zero or negative, DefaultReadLimit is used.
	ReadLimit int64
}

// Server is a running echo backend started by Listen.
//
// All methods are safe for concurrent use.
type Server struct {
	id        string
	protocols []string
	page      []byte
	readLimit int64

	ln       net.Listener
	http     *fasthttp.Server
	upgrader *websocket.FastHTTPUpgrader
	done     chan struct{} // closed by Close, stops the accept loop's backoff

	// wg counts the accept loop, one goroutine per accepted connection
	// running fasthttp's ServeConn, and every upgrade from the moment the
	// handshake is accepted until fasthttp closes the hijacked connection.
	// Every Add happens on a goroutine that wg already counts, so no Add
	// can race with the Wait in Close.
	wg sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	conns   map[*trackedConn]struct{} // every accepted TCP connection still open
	wsCount int                       // conns with ws != nil
	drained chan struct{}             // closed when wsCount reaches 0 after Close
}

// Listen starts an echo server on addr ("127.0.0.1:0" picks a free port)
// and serves until Close. opts is copied: changing it, or the slices it
// holds, afterwards does not affect the server.
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("echoserver: listen on %s: %w", addr, err)
	}
	s := &Server{
		id:        opts.ID,
		protocols: append([]string(nil), opts.Subprotocols...),
		readLimit: opts.ReadLimit,
		ln:        ln,
		done:      make(chan struct{}),
		conns:     make(map[*trackedConn]struct{}),
	}
	if s.id == "" {
		s.id = ln.Addr().String()
	}
	if opts.Page != nil {
		s.page = append([]byte{}, opts.Page...)
	}
	if s.readLimit <= 0 {
		s.readLimit = DefaultReadLimit
	}
	s.http = &fasthttp.Server{
		Handler:              s.handle,
		Name:                 "echoserver",
		ReadBufferSize:       headerBufferSize,
		MaxRequestBodySize:   int(min(s.readLimit, math.MaxInt)),
		NoDefaultContentType: true,
		// A Date header would start fasthttp's process-wide clock
		// goroutine, which outlives every Server. ctx.Error forgets this
		// setting, hence ErrorHandler and the upgrader's Error.
		NoDefaultDate:                true,
		ErrorHandler:                 requestError,
		DisablePreParseMultipartForm: true,
		Logger:                       discardLogger{},
	}
	s.upgrader = &websocket.FastHTTPUpgrader{
		ReadBufferSize:    wsBufferSize,
		WriteBufferSize:   wsBufferSize,
		WriteBufferPool:   &sync.Pool{},
		EnableCompression: opts.EnableCompression,
		CheckOrigin:       func(*fasthttp.RequestCtx) bool { return true },
		Error: func(ctx *fasthttp.RequestCtx, status int, reason error) {
			ctx.Response.Header.Del("Sec-WebSocket-Protocol")
			ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
			httpError(ctx, reason.Error(), status)
		},
		// Subprotocols stays nil: the upgrader would choose in the server's
		// order, and we choose in the client's (see selectSubprotocol).
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr returns the address the server listens on, as host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ID returns the name the server reports to clients.
func (s *Server) ID() string { return s.id }

// Conns returns the number of live WebSocket connections.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wsCount
}

// Close stops the server. It closes the listener, sends every live
// WebSocket connection a close frame (1001, "server shutting down") and
// waits briefly for the clients to answer, then closes every remaining TCP
// connection, and returns once every goroutine the server started has
// ended. Calling Close again waits for the first call and returns nil.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	err := s.ln.Close()
	deadline := time.Now().Add(closeGrace)
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	for tc := range s.conns {
		if tc.ws == nil {
			// Idle keep-alive, mid-request or mid-handshake: nothing to
			// say goodbye to.
			_ = tc.Conn.Close()
			continue
		}
		// WriteControl may run concurrently with the handler's reads and
		// writes. Holding s.mu keeps the handler from returning (removeWS
		// waits for it), so fasthttp cannot recycle the connection under
		// the write. The shared deadline bounds the whole loop.
		_ = tc.ws.WriteControl(websocket.CloseMessage, msg, deadline)
	}
	var drained chan struct{}
	if s.wsCount > 0 {
		drained = make(chan struct{})
		s.drained = drained
	}
	s.mu.Unlock()

	if drained != nil {
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-drained:
		case <-timer.C:
		}
		timer.Stop()
	}

	s.closeAll()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("echoserver: close listener: %w", err)
	}
	return nil
}

// Kill closes every open TCP connection at once, WebSocket or not, without
// sending close frames, as a crashed backend would. The server keeps
// listening and accepts new connections; call Close as well to simulate a
// backend that stays down.
func (s *Server) Kill() { s.closeAll() }

// closeAll closes every tracked TCP connection underneath fasthttp and the
// WebSocket layer. The goroutines serving them notice on their next read or
// write and return.
func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tc := range s.conns {
		_ = tc.Conn.Close()
	}
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary trouble such as running out of file descriptors:
			// back off as net/http does, but stop at once on Close.
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			timer := time.NewTimer(backoff)
			select {
			case <-s.done:
				timer.Stop()
				return
			case <-timer.C:
			}
			continue
		}
		backoff = 0
		tc := &trackedConn{Conn: c, srv: s}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[tc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(tc)
	}
}

// serveConn runs fasthttp on one connection. ServeConn returns when the
// connection is closed or hijacked; a hijacked connection stays counted in
// wg through its upgrade (see beginUpgrade).
func (s *Server) serveConn(tc *trackedConn) {
	defer s.wg.Done()
	_ = s.http.ServeConn(tc)
}

// beginUpgrade counts an upgrade in wg before the handshake is answered.
// It runs on the connection's serveConn goroutine. The count is released by
// trackedConn.Close, which fasthttp calls either when writing the 101
// response fails or after the hijack handler has returned, or by
// abortUpgrade when the upgrader refuses the request.
func (s *Server) beginUpgrade(tc *trackedConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	tc.upgrading.Store(true)
	return true
}

func (s *Server) abortUpgrade(tc *trackedConn) {
	if tc.upgrading.CompareAndSwap(true, false) {
		s.wg.Done()
	}
}

// addWS registers a live WebSocket connection so Close can reach it.
func (s *Server) addWS(tc *trackedConn, ws *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	tc.ws = ws
	s.wsCount++
	return true
}

func (s *Server) removeWS(tc *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tc.ws = nil
	s.wsCount--
	if s.wsCount == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// trackedConn is an accepted TCP connection. fasthttp sees it as a plain
// net.Conn and calls Close exactly once when it is done with it; the server
// itself closes the embedded Conn directly, so that the bookkeeping in Close
// always runs on fasthttp's schedule.
type trackedConn struct {
	net.Conn
	srv       *Server
	upgrading atomic.Bool // an upgrade counted in srv.wg is outstanding

	// ws is guarded by srv.mu. It is non-nil while the WebSocket handler
	// runs, and the handler cannot return while srv.mu is held, so ws may
	// be used (WriteControl only) under srv.mu.
	ws *websocket.Conn
}

// Close closes the connection, forgets it, and releases its upgrade count.
func (tc *trackedConn) Close() error {
	err := tc.Conn.Close()
	tc.srv.mu.Lock()
	delete(tc.srv.conns, tc)
	tc.srv.mu.Unlock()
	tc.srv.abortUpgrade(tc)
	return err
}

// discardLogger silences fasthttp's connection error log: clients of a test
// backend vanish all the time.
type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
