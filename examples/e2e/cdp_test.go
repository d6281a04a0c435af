package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
)

// cdp is a minimal Chrome DevTools Protocol client over the browser's
// WebSocket: commands with replies matched by id, sessions of attached
// targets (flat mode), and events kept as log lines.
//
// Call may be used from any goroutine; one goroutine reads.
type cdp struct {
	conn *websocket.Conn

	writeMu sync.Mutex // one writer on conn

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan cdpMessage
	events  []string // console messages and exceptions, for failure logs
	err     error    // why the reader stopped

	done chan struct{} // closed when the reader stops
}

// cdpMessage is any message of the protocol: a command, its reply, or an
// event.
type cdpMessage struct {
	ID        int64           `json:"id,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    string `json:"data"`
	} `json:"error,omitempty"`
}

// dialCDP connects to the browser's DevTools WebSocket URL.
func dialCDP(ctx context.Context, url string) (*cdp, error) {
	// No Origin header: Chromium refuses DevTools connections from web
	// origins it was not told to allow.
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("devtools: dial %s: %w", url, err)
	}
	c := &cdp{conn: conn, pending: map[int64]chan cdpMessage{}, done: make(chan struct{})}
	go c.read()
	return c, nil
}

// Close closes the connection and waits for the reader to stop.
func (c *cdp) Close() {
	_ = c.conn.Close()
	<-c.done
}

func (c *cdp) read() {
	defer close(c.done)
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		var m cdpMessage
		if err := json.Unmarshal(data, &m); err != nil {
			continue
		}
		if m.ID != 0 {
			c.mu.Lock()
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m // buffered
			}
			continue
		}
		if line := eventLine(m); line != "" {
			c.mu.Lock()
			c.events = append(c.events, line)
			c.mu.Unlock()
		}
	}
}

// eventLine describes the events worth keeping: the pages' console output
// and uncaught exceptions.
func eventLine(m cdpMessage) string {
	switch m.Method {
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		if json.Unmarshal(m.Params, &p) != nil {
			return ""
		}
		var parts []string
		for _, a := range p.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		return fmt.Sprintf("[%s] console.%s: %s", m.SessionID, p.Type, strings.Join(parts, " "))
	case "Runtime.exceptionThrown":
		return fmt.Sprintf("[%s] exception: %s", m.SessionID, m.Params)
	case "Log.entryAdded":
		return fmt.Sprintf("[%s] log: %s", m.SessionID, m.Params)
	}
	return ""
}

// Events returns the kept events.
func (c *cdp) Events() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...)
}

// Call sends a command, to the browser if session is "" or else to an
// attached target, and decodes its result into result (if not nil).
func (c *cdp) Call(ctx context.Context, session, method string, params, result any) error {
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	ch := make(chan cdpMessage, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("devtools: %s: connection lost: %w", method, err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	msg, err := json.Marshal(cdpMessage{ID: id, SessionID: session, Method: method, Params: raw})
	if err != nil {
		return err
	}
	c.writeMu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(dl)
	}
	err = c.conn.WriteMessage(websocket.TextMessage, msg)
	c.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("devtools: %s: %w", method, err)
	}

	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("devtools: %s: %s (%d) %s", method, m.Error.Message, m.Error.Code, m.Error.Data)
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				return fmt.Errorf("devtools: %s: decoding %s: %w", method, m.Result, err)
			}
		}
		return nil
	case <-c.done:
		return fmt.Errorf("devtools: %s: connection lost", method)
	case <-ctx.Done():
		return fmt.Errorf("devtools: %s: %w", method, ctx.Err())
	}
}

// page is a browser tab attached in flat mode.
type page struct {
	name    string
	c       *cdp
	target  string
	session string
}

// openPage opens a new tab on url and attaches to it, with its console
// and exceptions reported as events.
func (c *cdp) openPage(ctx context.Context, name, url string) (*page, error) {
	var created struct {
		TargetID string `json:"targetId"`
	}
	if err := c.Call(ctx, "", "Target.createTarget", map[string]any{"url": url}, &created); err != nil {
		return nil, err
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": created.TargetID, "flatten": true}, &attached); err != nil {
		return nil, err
	}
	p := &page{name: name, c: c, target: created.TargetID, session: attached.SessionID}
	for _, domain := range []string{"Runtime.enable", "Log.enable", "Page.enable"} {
		if err := c.Call(ctx, p.session, domain, map[string]any{}, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Eval evaluates a JavaScript expression in the page and decodes its
// value (returned by value, awaited if a promise) into out (if not nil).
func (p *page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.c.Call(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression":    expr,
		"returnByValue": true,
		"awaitPromise":  true,
	}, &res)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	if e := res.ExceptionDetails; e != nil {
		return fmt.Errorf("%s: %s: %s %s", p.name, expr, e.Text, e.Exception.Description)
	}
	if out == nil {
		return nil
	}
	if res.Result.Type == "undefined" || len(res.Result.Value) == 0 {
		return errors.New(p.name + ": " + expr + ": undefined")
	}
	return json.Unmarshal(res.Result.Value, out)
}

// Screenshot returns a PNG of the page's viewport.
func (p *page) Screenshot(ctx context.Context) ([]byte, error) {
	var shot struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	if err := p.c.Call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	return shot.Data, nil
}
