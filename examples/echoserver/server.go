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
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/examples/internal/serve"
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

	// mu guards conns' state (including every trackedConn's Data) and
	// everything below.
	mu      sync.Mutex
	conns   *serve.Conns[*websocket.Conn]
	wsCount int           // conns with a non-nil Data
	drained chan struct{} // closed when wsCount reaches 0 after Close
}

// trackedConn is an accepted TCP connection. Its Data is the WebSocket
// while the handler runs, and the handler cannot return while mu is held
// (removeWS waits for it), so Data may be used (WriteControl only) under
// mu.
type trackedConn = serve.Conn[*websocket.Conn]

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
		Logger:                       serve.DiscardLogger{},
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
	s.conns = serve.New[*websocket.Conn](ln, s.http, &s.mu)
	s.conns.Start()
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
		// WriteControl may run concurrently with the handler's reads and
		// writes. Holding s.mu keeps the handler from returning (removeWS
		// waits for it), so fasthttp cannot recycle the connection under
		// the write. The shared deadline bounds the whole loop.
		_ = tc.Data.WriteControl(websocket.CloseMessage, msg, deadline)
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

	s.conns.CloseAll()
	s.conns.Wait()
	if err != nil {
		return fmt.Errorf("echoserver: close listener: %w", err)
	}
	return nil
}

// Kill closes every open TCP connection at once, WebSocket or not, without
// sending close frames, as a crashed backend would. The server keeps
// listening and accepts new connections; call Close as well to simulate a
// backend that stays down.
func (s *Server) Kill() { s.conns.CloseAll() }

// addWS registers a live WebSocket connection so Close can reach it.
func (s *Server) addWS(tc *trackedConn, ws *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns.Closed() {
		return false
	}
	tc.Data = ws
	s.wsCount++
	return true
}

func (s *Server) removeWS(tc *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tc.Data = nil
	s.wsCount--
	if s.wsCount == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}
