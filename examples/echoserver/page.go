package echoserver

import _ "embed"

//go:embed page.html
var demoPage string

// DemoPage returns the demo web page, a self-contained HTML page that opens
// a WebSocket to /ws?room=demo on the host that served it, shows which
// backend answers ("__id") and echoes what the user types. Pass it as
// Options.Page. Each call returns a fresh copy.
func DemoPage() []byte { return []byte(demoPage) }
