package echoserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// maxRetainedBuffer is the largest message buffer a connection keeps for
// the next message; a bigger one, left by a big message, is dropped.
const maxRetainedBuffer = 1 << 20

// handshake is what the WebSocket handler needs from the upgrade request,
// copied out before fasthttp recycles the request.
type handshake struct {
	headers map[string][]string
	query   string
	hello   bool
}

// upgrade answers a WebSocket handshake and hands the connection to serveWS.
func (s *Server) upgrade(ctx *fasthttp.RequestCtx) {
	tc, ok := ctx.Conn().(*trackedConn)
	if !ok {
		httpError(ctx, "echoserver: connection not accepted by this server", fasthttp.StatusInternalServerError)
		return
	}
	hs := snapshot(ctx)
	if p := s.selectSubprotocol(ctx); p != "" {
		ctx.Response.Header.Set("Sec-WebSocket-Protocol", p)
	}
	if !tc.BeginUpgrade() {
		httpError(ctx, "echoserver: shutting down", fasthttp.StatusServiceUnavailable)
		return
	}
	err := s.upgrader.Upgrade(ctx, func(ws *websocket.Conn) { s.serveWS(tc, ws, hs) })
	if err != nil {
		// The upgrader has already written the error response.
		tc.AbortUpgrade()
	}
}

// snapshot copies the request headers and query of a handshake.
func snapshot(ctx *fasthttp.RequestCtx) *handshake {
	hs := &handshake{
		headers: make(map[string][]string, ctx.Request.Header.Len()),
		query:   string(ctx.URI().QueryString()),
		hello:   string(ctx.QueryArgs().Peek("hello")) == "1",
	}
	for k, v := range ctx.Request.Header.All() {
		key := string(k)
		hs.headers[key] = append(hs.headers[key], string(v))
	}
	return hs
}

// selectSubprotocol returns the first subprotocol offered by the client, in
// the client's order, that the server supports, or "".
func (s *Server) selectSubprotocol(ctx *fasthttp.RequestCtx) string {
	if len(s.protocols) == 0 {
		return ""
	}
	for _, line := range ctx.Request.Header.PeekAll("Sec-WebSocket-Protocol") {
		for offer := range bytes.SplitSeq(line, []byte(",")) {
			offer = bytes.TrimSpace(offer)
			for _, p := range s.protocols {
				if string(offer) == p {
					return p
				}
			}
		}
	}
	return ""
}

// serveWS echoes messages until the connection ends. It is the only writer
// of data messages on ws; Close may send a close frame concurrently, which
// the WebSocket library allows.
func (s *Server) serveWS(tc *trackedConn, ws *websocket.Conn, hs *handshake) {
	if !s.addWS(tc, ws) {
		return // Close is under way; fasthttp closes the connection.
	}
	defer s.removeWS(tc)
	ws.SetReadLimit(s.readLimit)

	if hs.hello {
		if err := ws.WriteMessage(websocket.TextMessage, []byte("hello from "+s.id)); err != nil {
			s.finish(ws, err)
			return
		}
	}

	var buf bytes.Buffer
	for {
		// The default close handler answers a client's close frame with the
		// same code, and NextReader then returns the *CloseError.
		mt, r, err := ws.NextReader()
		if err != nil {
			return
		}
		if buf.Cap() > maxRetainedBuffer {
			buf = bytes.Buffer{}
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return // read limit exceeded (1009 already sent) or connection lost
		}
		msg := buf.Bytes()
		if mt == websocket.TextMessage && bytes.HasPrefix(msg, []byte("__")) {
			handled, err := s.command(ws, msg, hs)
			if err != nil {
				s.finish(ws, err)
				return
			}
			if handled {
				continue
			}
		}
		if err := ws.WriteMessage(mt, msg); err != nil {
			s.finish(ws, err)
			return
		}
	}
}

// errClosing reports that a "__close" command has sent its close frame.
var errClosing = errors.New("echoserver: close requested by client command")

// command runs a scripted text command. It reports false for a message that
// is not a command, which is then echoed like any other.
func (s *Server) command(ws *websocket.Conn, msg []byte, hs *handshake) (bool, error) {
	var reply []byte
	switch cmd := string(msg); {
	case cmd == "__id":
		reply = []byte(s.id)
	case cmd == "__query":
		reply = []byte(hs.query)
	case cmd == "__headers":
		flat := make(map[string]string, len(hs.headers))
		for k, v := range hs.headers {
			flat[k] = strings.Join(v, ", ")
		}
		b, err := json.Marshal(flat)
		if err != nil {
			return true, err
		}
		reply = b
	case strings.HasPrefix(cmd, "__flood "):
		return true, s.flood(ws, strings.TrimPrefix(cmd, "__flood "))
	case cmd == "__close" || strings.HasPrefix(cmd, "__close "):
		payload, err := closePayload(strings.TrimPrefix(cmd, "__close"))
		if err != nil {
			reply = []byte("error: " + err.Error())
			break
		}
		if err := ws.WriteControl(websocket.CloseMessage, payload, time.Now().Add(closeGrace)); err != nil {
			return true, err
		}
		return true, errClosing
	default:
		return false, nil
	}
	return true, ws.WriteMessage(websocket.TextMessage, reply)
}

// closePayload parses " CODE REASON" (both optional; code 1000 by default)
// into a close frame payload. The code is sent as given, even one RFC 6455
// forbids on the wire, so tests can script misbehaving backends; 1005 gives
// an empty payload.
func closePayload(args string) ([]byte, error) {
	args = strings.TrimPrefix(args, " ")
	codeText, reason, _ := strings.Cut(args, " ")
	code := websocket.CloseNormalClosure
	if codeText != "" {
		n, err := strconv.ParseUint(codeText, 10, 16)
		if err != nil {
			return nil, errors.New("__close: code must be a number from 0 to 65535")
		}
		code = int(n)
	}
	if len(reason) > 123 {
		return nil, errors.New("__close: reason longer than 123 bytes")
	}
	return websocket.FormatCloseMessage(code, reason), nil
}

// finish ends a connection after a write error. If a close frame has been
// sent (by "__close" or by Server.Close), it waits a little for the peer's
// close frame, as RFC 6455 asks, before the connection is closed.
func (s *Server) finish(ws *websocket.Conn, err error) {
	if !errors.Is(err, errClosing) && !errors.Is(err, websocket.ErrCloseSent) {
		return
	}
	_ = ws.SetReadDeadline(time.Now().Add(closeGrace))
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

// Bounds of "__flood COUNT SIZE": a test that needs a backend that keeps
// sending (to a client that stops reading, say) gets one, within reason.
const (
	maxFloodCount = 1_000_000
	maxFloodSize  = 1 << 20
	floodWait     = time.Minute // how long one message may wait for the socket
)

// flood sends COUNT binary messages of SIZE bytes as fast as the
// connection takes them, then answers "flooded".
func (s *Server) flood(ws *websocket.Conn, args string) error {
	var count, size int
	if _, err := fmt.Sscanf(args, "%d %d", &count, &size); err != nil || count < 0 || count > maxFloodCount || size < 0 || size > maxFloodSize {
		return ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("error: __flood COUNT SIZE, COUNT up to %d, SIZE up to %d", maxFloodCount, maxFloodSize)))
	}
	msg := make([]byte, size)
	for i := 0; i < count; i++ {
		ws.SetWriteDeadline(time.Now().Add(floodWait))
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return err
		}
	}
	ws.SetWriteDeadline(time.Time{})
	return ws.WriteMessage(websocket.TextMessage, []byte("flooded"))
}
