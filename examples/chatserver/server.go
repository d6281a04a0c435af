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
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/examples/internal/serve"
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

	// mu guards conns' state (including every trackedConn's Data),
	// everything below and every client's room membership.
	mu      sync.Mutex
	conns   *serve.Conns[*client]           // also counts every client's writer
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
		Logger:                       serve.DiscardLogger{},
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
	s.conns = serve.New[*client](ln, s.http, &s.mu)
	s.conns.Start()
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
	first, err := s.conns.Stop()
	if !first {
		s.mu.Unlock()
		s.conns.Wait()
		return nil
	}
	deadline := time.Now().Add(closeGrace)
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	for tc := range s.conns.All() {
		if tc.Data == nil {
			// Idle keep-alive, mid-request or mid-handshake: nothing to
			// say goodbye to.
			_ = tc.Conn.Close()
			continue
		}
		// WriteControl may run concurrently with the writer's messages.
		// Holding s.mu keeps the client in its room, so its reader cannot
		// return and fasthttp cannot recycle the connection under the
		// write. The shared deadline bounds the whole loop.
		_ = tc.Data.ws.WriteControl(websocket.CloseMessage, msg, deadline)
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

	s.conns.CloseAll()
	s.conns.Wait()
	if err != nil {
		return fmt.Errorf("chatserver: close listener: %w", err)
	}
	return nil
}

// trackedConn is an accepted TCP connection. Its Data is the client while
// the client is in a room; the client's reader cannot leave the room while
// mu is held, so its WebSocket may be used (WriteControl only) under mu.
type trackedConn = serve.Conn[*client]
