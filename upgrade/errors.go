package upgrade

import (
	"errors"
	"os"
	"strconv"

	"github.com/valyala/fasthttp"
)

// DialError reports that a backend could not be reached: the TCP connection
// was refused, timed out or failed. Nothing was sent, so the proxy may always
// try another backend.
type DialError struct {
	// Addr is the backend address that was dialled.
	Addr string
	// Err is the error from the dialer.
	Err error
}

// Error describes the failed dial.
func (e *DialError) Error() string { return "upgrade: dial " + e.Addr + ": " + e.Err.Error() }

// Unwrap returns the dialer's error.
func (e *DialError) Unwrap() error { return e.Err }

// HandshakeError reports that a backend was reached but did not complete a
// valid WebSocket handshake: the request could not be written, the response
// was malformed, truncated, too large or late, or its 101 failed a check of
// RFC 6455 §4.2.2 (Upgrade, Connection, Sec-WebSocket-Accept, a subprotocol
// or extension the client did not offer). The client has been sent nothing
// yet, so the proxy may try another backend.
type HandshakeError struct {
	// Addr is the backend's address; empty when ReadResponse is used alone.
	Addr string
	// Reason says what was wrong, in a few words.
	Reason string
	// Err is the underlying I/O or parse error, if any.
	Err error

	inBody bool // reading an error answer's body failed: more may come
}

// Error describes what went wrong and with which backend.
func (e *HandshakeError) Error() string {
	s := "upgrade: backend handshake"
	if e.Addr != "" {
		s += " with " + e.Addr
	}
	s += ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error, if any.
func (e *HandshakeError) Unwrap() error { return e.Err }

// Timeout reports whether the handshake failed because its deadline passed.
func (e *HandshakeError) Timeout() bool {
	return errors.Is(e.Err, os.ErrDeadlineExceeded) || errors.Is(e.Err, fasthttp.ErrTimeout)
}

// HTTPResponseError reports that the backend answered the handshake with a
// complete ordinary HTTP response instead of 101, typically 401 or 403 from
// its authentication. The backend made a decision, so the proxy should not
// retry; it passes the response on with WriteResponse.
type HTTPResponseError struct {
	// Addr is the backend's address; empty when ReadResponse is used alone.
	Addr string
	// StatusCode is the backend's status code.
	StatusCode int
	// Header holds the backend's end-to-end fields in order, without the
	// hop-by-hop ones, Content-Length and Transfer-Encoding (the body is
	// re-framed when it is passed on).
	Header []Field
	// Body is the response body, decoded from chunked if need be. It is nil
	// when Truncated.
	Body []byte
	// Truncated is set when the body was longer than MaxErrorBodySize; it
	// was then dropped, not cut.
	Truncated bool

	toClose bool // the body ran to the end of the connection
}

// MaxErrorBodySize is the largest backend error body that ReadResponse keeps
// for an HTTPResponseError: 64 KiB.
const MaxErrorBodySize = 64 << 10

// Error names the backend and its status.
func (e *HTTPResponseError) Error() string {
	s := "upgrade: backend "
	if e.Addr != "" {
		s += e.Addr + " "
	}
	return s + "answered the handshake with HTTP " + strconv.Itoa(e.StatusCode)
}

// WriteResponse replaces ctx's response with the backend's: its status, its
// end-to-end fields and its body (none if Truncated). fasthttp frames the
// body and adds its own Date.
func (e *HTTPResponseError) WriteResponse(ctx *fasthttp.RequestCtx) {
	e.FillResponse(&ctx.Response)
}

// FillResponse makes resp the backend's response, as WriteResponse does.
func (e *HTTPResponseError) FillResponse(resp *fasthttp.Response) {
	resp.Reset()
	resp.Header.SetNoDefaultContentType(true)
	resp.SetStatusCode(e.StatusCode)
	for _, f := range e.Header {
		resp.Header.Add(f.Name, f.Value)
	}
	resp.SetBody(e.Body)
}

// Field is one header field.
type Field struct {
	Name, Value string
}

// Retryable reports whether err means the proxy may try another backend: a
// *DialError or a *HandshakeError anywhere in its chain. An
// *HTTPResponseError is the backend's answer and is not retryable, and
// neither is a cancelled context (Dial returns the context's error then).
func Retryable(err error) bool {
	var de *DialError
	var he *HandshakeError
	return errors.As(err, &de) || errors.As(err, &he)
}
