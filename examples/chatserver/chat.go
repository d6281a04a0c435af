package chatserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// Message is a chat message as every client of its room receives it: a
// JSON text frame.
type Message struct {
	Room string `json:"room"`
	User string `json:"user"`
	Text string `json:"text"`
	// Backend is the ID of the server that relayed the message.
	Backend string `json:"backend"`
}

// System is a message from the server itself, told apart from a Message
// by its "system" field. A client's first message is always
// {"system":"joined",...}.
type System struct {
	// System is the event: "joined".
	System string `json:"system"`
	// Backend is the server's ID.
	Backend string `json:"backend"`
	Room    string `json:"room,omitempty"`
	User    string `json:"user,omitempty"`
	// Members counts the room's clients on this server, the new one
	// included.
	Members int `json:"members,omitempty"`
}

// SystemJoined is System.System of the message that confirms a join.
const SystemJoined = "joined"

// DefaultUser is the user name of a client whose handshake has none.
const DefaultUser = "anonymous"

// client is one WebSocket in a room. Its connection has two goroutines:
// the reader (fasthttp's hijack handler, serveClient) and the writer
// (writeLoop), the only one to write data messages.
type client struct {
	ws   *websocket.Conn
	tc   *trackedConn
	room string
	user string

	wake       chan struct{} // capacity 1: the queue has news for the writer
	writerDone chan struct{} // closed when writeLoop returns

	mu     sync.Mutex
	queue  [][]byte // encoded messages the writer has not taken yet
	queued int      // bytes in queue and in the batch the writer is sending
	closed bool     // no more messages: the writer sends what is queued and ends
}

// push queues msg for the writer. It reports false, queueing nothing, if
// that would put more than limit bytes behind the client (a single
// message is always accepted). After finish, push drops msg and reports
// true.
func (c *client) push(msg []byte, limit int) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return true
	}
	if c.queued > 0 && c.queued+len(msg) > limit {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, msg)
	c.queued += len(msg)
	c.mu.Unlock()
	c.signal()
	return true
}

// finish tells the writer to end once it has sent what is queued.
func (c *client) finish() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.signal()
}

func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// join answers a handshake on /chat and hands the connection to
// serveClient.
func (s *Server) join(ctx *fasthttp.RequestCtx) {
	if !websocket.FastHTTPIsWebSocketUpgrade(ctx) {
		ctx.Response.Header.Set("Upgrade", "websocket")
		httpError(ctx, "chatserver: /chat is a WebSocket endpoint\n", fasthttp.StatusUpgradeRequired)
		return
	}
	room, user, err := joinParams(ctx.QueryArgs())
	if err != nil {
		httpError(ctx, "chatserver: "+err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	tc, ok := ctx.Conn().(*trackedConn)
	if !ok {
		httpError(ctx, "chatserver: connection not accepted by this server\n", fasthttp.StatusInternalServerError)
		return
	}
	if !tc.BeginUpgrade() {
		httpError(ctx, "chatserver: shutting down\n", fasthttp.StatusServiceUnavailable)
		return
	}
	err = s.upgrader.Upgrade(ctx, func(ws *websocket.Conn) { s.serveClient(tc, ws, room, user) })
	if err != nil {
		// The upgrader has already written the error response.
		tc.AbortUpgrade()
	}
}

// joinParams returns the room and user of a handshake's query: room is
// required, user defaults to DefaultUser; both must be printable UTF-8 of
// at most MaxRoomLen and MaxUserLen bytes.
func joinParams(args *fasthttp.Args) (room, user string, err error) {
	room = string(args.Peek("room"))
	user = string(args.Peek("user"))
	if room == "" {
		return "", "", errors.New("the room query parameter is required: /chat?room=NAME&user=NAME")
	}
	if user == "" {
		user = DefaultUser
	}
	if err := checkName("room", room, MaxRoomLen); err != nil {
		return "", "", err
	}
	if err := checkName("user", user, MaxUserLen); err != nil {
		return "", "", err
	}
	return room, user, nil
}

func checkName(what, v string, maxLen int) error {
	if len(v) > maxLen {
		return fmt.Errorf("%s is longer than %d bytes", what, maxLen)
	}
	if !utf8.ValidString(v) || strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%s must be printable UTF-8", what)
	}
	return nil
}

// serveClient runs a client's reader: it puts the client in its room,
// starts its writer, and broadcasts every text message it sends until the
// connection ends.
func (s *Server) serveClient(tc *trackedConn, ws *websocket.Conn, room, user string) {
	c := &client{
		ws:         ws,
		tc:         tc,
		room:       room,
		user:       user,
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
	}
	if !s.enter(c) {
		return // Close is under way; fasthttp closes the connection.
	}
	s.conns.Go(func() { s.writeLoop(c) }) // on a goroutine conns counts (the upgrade)
	defer func() {
		s.leave(c)
		// The writer may be blocked on a client that does not read: the
		// connection is over, so cut it rather than wait.
		_ = tc.Conn.Close()
		<-c.writerDone
	}()

	ws.SetReadLimit(s.readLimit)
	for {
		// The default close handler answers a close frame with the same
		// code, and ReadMessage then returns the *CloseError. A message
		// over the read limit is answered with 1009 by the library.
		mt, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if mt != websocket.TextMessage {
			s.refuse(ws, websocket.CloseUnsupportedData, "text messages only")
			return
		}
		msg, err := json.Marshal(Message{Room: room, User: user, Text: string(data), Backend: s.id})
		if err != nil {
			return
		}
		s.broadcast(room, msg)
	}
}

// refuse sends a close frame and waits briefly for the client's answer,
// as RFC 6455 asks, before the connection is closed.
func (s *Server) refuse(ws *websocket.Conn, code int, reason string) {
	deadline := time.Now().Add(closeGrace)
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline); err != nil {
		return
	}
	_ = ws.SetReadDeadline(deadline)
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

// enter puts c in its room, with the "joined" message first in its queue.
// It reports false if the server is closing.
func (s *Server) enter(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns.Closed() {
		return false
	}
	members := s.rooms[c.room]
	if members == nil {
		members = make(map[*client]struct{})
		s.rooms[c.room] = members
	}
	members[c] = struct{}{}
	s.clients++
	c.tc.Data = c
	joined, err := json.Marshal(System{System: SystemJoined, Backend: s.id, Room: c.room, User: c.user, Members: len(members)})
	if err == nil {
		c.push(joined, s.sendBuffer) // the first message, before any broadcast
	}
	return true
}

// leave takes c out of its room and ends its writer once the writer has
// sent what is queued.
func (s *Server) leave(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[c.room]
	delete(members, c)
	if len(members) == 0 {
		delete(s.rooms, c.room)
	}
	c.finish()
	c.tc.Data = nil
	s.clients--
	if s.clients == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// broadcast queues msg for every client of room on this server. A client
// whose backlog would pass the send buffer is disconnected (its reader then
// leaves the room), so that one slow reader can neither hold up the others
// nor make the server buffer without bound.
func (s *Server) broadcast(room string, msg []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.rooms[room] {
		if !c.push(msg, s.sendBuffer) {
			_ = c.tc.Conn.Close()
		}
	}
}

// writeLoop sends a client's queued messages, in batches, until finish
// has been called and the queue is empty, or a write fails.
func (s *Server) writeLoop(c *client) {
	defer close(c.writerDone)
	var batch [][]byte
	for range c.wake {
		c.mu.Lock()
		batch, c.queue = c.queue, batch[:0]
		closed := c.closed
		c.mu.Unlock()
		sent := 0
		for _, msg := range batch {
			_ = c.ws.SetWriteDeadline(time.Now().Add(s.writeTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				// Lost, or too slow: cut the connection so the reader
				// returns.
				_ = c.tc.Conn.Close()
				return
			}
			sent += len(msg)
		}
		clear(batch) // let the messages be collected
		c.mu.Lock()
		c.queued -= sent
		c.mu.Unlock()
		if closed {
			return
		}
	}
}
