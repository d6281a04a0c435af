package chatserver

import _ "embed"

//go:embed page.html
var chatPage string

// Page returns the chat page served at GET /: a self-contained HTML page
// (no external resources) that joins the room and user named in its own
// query string (/?room=lobby&user=ann) over ws:// or wss://, as the page
// itself was loaded, shows the messages and which backend serves the room,
// and reconnects with a jittered exponential backoff whenever the
// connection closes. Each call returns a fresh copy.
//
// Elements with stable ids, for tests and styling: #msg (the input), #send
// (the button), #log (the messages), #status (the connection state, also
// in its data-state attribute: connecting, open or closed) and #backend
// (the ID of the backend serving the room). window.chat holds the same
// state for scripts: {state, backend, connects, closes: [codes]}.
func Page() []byte { return []byte(chatPage) }
