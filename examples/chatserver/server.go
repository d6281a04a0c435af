// Package chatserver is a WebSocket chat backend with rooms, for the
// wsproxy examples.
//
// A client joins a room with a WebSocket to /chat?room=NAME&user=NAME.
// Every text message it sends is broadcast, as a JSON Message, to every
// client of that room connected to this server, and to no other server:
// behind wsproxy's `lb_policy hash query:room` every client of a room
// reaches the same backend, so a room needs no fan-out between nodes. On
// joining, a client first receives a System message ("joined") naming the
// server. GET / serves a self-contained chat page (see Page) that joins
// the room in its own query string and reconnects when the connection
// drops; GET /healthz answers 200 "ok" for health checks.
//
// A Server owns every goroutine it starts: Close returns only after all of
// them, including the ones serving upgraded connections, have ended.
package chatserver

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// Defaults of Options.
const (
	// DefaultReadLimit is the largest message a client may send when
	// Options.ReadLimit is zero or negative.
	DefaultReadLimit int64 = 16 << 10
	// DefaultSendBuffer is the number of bytes of messages that may wait
	// for a client when Options.SendBuffer is zero or negative.
	DefaultSendBuffer = 1 << 20
	// DefaultWriteTimeout bounds one write to a client when
	// Options.WriteTimeout is zero or negative.
	DefaultWriteTimeout = 10 * time.Second
)

// Limits of the handshake's query parameters, in bytes.
const (
	MaxRoomLen = 64
	MaxUserLen = 32
)

const (
	// closeGrace bounds how long Close waits for clients to answer its
	// close frame.
	closeGrace = 500 * time.Millisecond

	// headerBufferSize is the fasthttp read buffer, which bounds the size
	// of a request's header block; proxies add headers, so leave room.
	headerBufferSize = 32 << 10

	// wsBufferSize is the WebSocket read and write buffer size.
	wsBufferSize = 4 << 10

	// maxAcceptBackoff caps the wait after a temporary Accept error.
	maxAcceptBackoff = time.Second
)

// Options configures a Server. The zero value is valid.
type Options struct {
	// ID names the server in every message it sends ("backend"), so that
	// clients and tests can see which backend serves a room. If empty, the
	// listen address (host:port) is used.
	ID string

	// ReadLimit is the largest message, in bytes, a client may send; a
	// larger one closes its connection with 1009. If zero or negative,
	// DefaultReadLimit is used.
	ReadLimit int64

	// SendBuffer is how many bytes of messages may wait for a client that
	// reads slowly, besides what its socket buffers hold. A client whose
	// backlog would grow past it is disconnected rather than allowed to
	// hold up its room or grow without bound. If zero or negative,
	// DefaultSendBuffer is used.
	SendBuffer int

	// WriteTimeout bounds each write to a client; a client that does not
	// take a message within it is disconnected. If zero or negative,
	// DefaultWriteTimeout is used.
	WriteTimeout time.Duration
}

// Server is a running chat backend started by Listen.
//
// All methods are safe for concurrent use.
type Server struct {
	id           string
	readLimit    int64
	sendBuffer   int
	writeTimeout time.Duration

	ln       net.Listener
	http     *fasthttp.Server
	upgrader *websocket.FastHTTPUpgrader
	done     chan struct{} // closed by Close, stops the accept loop's backoff

	// wg counts the accept loop, one goroutine per accepted connection
	// running fasthttp's ServeConn, every upgrade from the moment its
	// handshake is accepted until fasthttp closes the hijacked connection,
	// and every client's writer. Every Add happens on a goroutine that wg
	// already counts, so no Add can race with the Wait in Close.
	wg sync.WaitGroup

	// mu guards everything below and every client's room membership.
	mu      sync.Mutex
	closed  bool
	conns   map[*trackedConn]struct{}       // every accepted TCP connection still open
	rooms   map[string]map[*client]struct{} // clients by room; empty rooms are deleted
	clients int                             // clients in rooms
	drained chan struct{}                   // closed when clients reaches 0 after Close
}

// Listen starts a chat server on addr ("127.0.0.1:0" picks a free port)
// and serves until Close.
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("chatserver: listen on %s: %w", addr, err)
	}
	s := &Server{
		id:           opts.ID,
		readLimit:    opts.ReadLimit,
		sendBuffer:   opts.SendBuffer,
		writeTimeout: opts.WriteTimeout,
		ln:           ln,
		done:         make(chan struct{}),
		conns:        make(map[*trackedConn]struct{}),
		rooms:        make(map[string]map[*client]struct{}),
	}
	if s.id == "" {
		s.id = ln.Addr().String()
	}
	if s.readLimit <= 0 {
		s.readLimit = DefaultReadLimit
	}
	if s.sendBuffer <= 0 {
		s.sendBuffer = DefaultSendBuffer
	}
	if s.writeTimeout <= 0 {
		s.writeTimeout = DefaultWriteTimeout
	}
	s.http = &fasthttp.Server{
		Handler:        s.handle,
		Name:           "chatserver",
		ReadBufferSize: headerBufferSize,
		// Chat pages send no bodies.
		MaxRequestBodySize: 1 << 10,
		// A Date header would start fasthttp's process-wide clock
		// goroutine, which outlives every Server. ctx.Error forgets this
		// setting, hence ErrorHandler and the upgrader's Error.
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		ErrorHandler:                 requestError,
		DisablePreParseMultipartForm: true,
		Logger:                       discardLogger{},
	}
	s.upgrader = &websocket.FastHTTPUpgrader{
		ReadBufferSize:  wsBufferSize,
		WriteBufferSize: wsBufferSize,
		WriteBufferPool: &sync.Pool{},
		// The proxy in front checks Origin (its `origins` directive).
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
		Error: func(ctx *fasthttp.RequestCtx, status int, reason error) {
			ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
			httpError(ctx, reason.Error(), status)
		},
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr returns the address the server listens on, as host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ID returns the name the server puts in its messages.
func (s *Server) ID() string { return s.id }

// Conns returns the number of clients in rooms.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients
}

// Members returns the number of clients in room.
func (s *Server) Members(room string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rooms[room])
}

// Close stops the server. It closes the listener, sends every client a
// close frame (1001, "server shutting down") and waits briefly for the
// clients to answer, then closes every remaining TCP connection, and
// returns once every goroutine the server started has ended. Calling Close
// again waits for the first call and returns nil.
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
		if tc.client == nil {
			// Idle keep-alive, mid-request or mid-handshake: nothing to
			// say goodbye to.
			_ = tc.Conn.Close()
			continue
		}
		// WriteControl may run concurrently with the writer's messages.
		// Holding s.mu keeps the client in its room, so its reader cannot
		// return and fasthttp cannot recycle the connection under the
		// write. The shared deadline bounds the whole loop.
		_ = tc.client.ws.WriteControl(websocket.CloseMessage, msg, deadline)
	}
	var drained chan struct{}
	if s.clients > 0 {
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
		return fmt.Errorf("chatserver: close listener: %w", err)
	}
	return nil
}

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
// It runs on the connection's serveConn goroutine. The count is released
// by trackedConn.Close, which fasthttp calls either when writing the 101
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

// trackedConn is an accepted TCP connection. fasthttp sees it as a plain
// net.Conn and calls Close exactly once when it is done with it; the server
// itself closes the embedded Conn directly, so that the bookkeeping in
// Close always runs on fasthttp's schedule.
type trackedConn struct {
	net.Conn
	srv       *Server
	upgrading atomic.Bool // an upgrade counted in srv.wg is outstanding

	// client is guarded by srv.mu. It is non-nil while the client is in a
	// room; its reader cannot leave the room while srv.mu is held, so its
	// WebSocket may be used (WriteControl only) under srv.mu.
	client *client
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

// discardLogger silences fasthttp's connection error log: chat clients
// vanish all the time.
type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
