package proxy

import (
	"bufio"
	"bytes"
	cryptotls "crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsproxy/wsproxy/proxy/relay"
	"github.com/wsproxy/wsproxy/upgrade"
)

// front is a listening port's relay.Front: on plain ports the event loops
// accept the connections and read the first request themselves, and a
// WebSocket handshake is checked, routed and admitted right there, with
// the same code fasthttp's handler runs (route, admitWebSocket), then
// completed with its backend on the same loop. Anything else goes to
// fasthttp with the bytes already read: plain HTTP, TLS ports (crypto/tls
// performs their handshakes), the ACME HTTP port, and heads the loop does
// not judge (too large, unparsable), which fasthttp answers as always.
type front struct {
	s     *Server
	port  int
	local net.Addr
	tls   func() *cryptotls.Config // nil: the port is plain
	ep    *acceptEpisode
}

func (f *front) Plain() bool { return f.tls == nil || f.tls() == nil }

func (f *front) Limits() (int, time.Duration) {
	g := &f.s.rt.Load().cfg.Global
	return g.MaxHeaderBytes, g.HandshakeTimeout
}

func (f *front) AcceptFailed(err error, refused bool) { f.ep.failed(err, refused) }
func (f *front) Accepted()                            { f.ep.succeeded() }

// frontCtx is what judging one request head takes, pooled.
type frontCtx struct {
	ctx    fasthttp.RequestCtx
	conn   addrConn
	remote net.TCPAddr // conn.remote, reused: nothing keeps a RemoteAddr past Request
	ip     [16]byte    // remote.IP's bytes
	rd     bytes.Reader
	br     *bufio.Reader
}

var frontCtxPool = sync.Pool{New: func() any {
	fc := &frontCtx{}
	fc.br = bufio.NewReaderSize(&fc.rd, 4096)
	return fc
}}

func (f *front) Request(head, rest []byte, remote netip.AddrPort) (relay.Upstream, []byte) {
	s := f.s
	if rt := s.rt.Load().tls; rt != nil && rt.httpPort == f.port {
		return nil, nil // ACME challenges and redirects: fasthttp's
	}
	fc := frontCtxPool.Get().(*frontCtx)
	defer func() {
		fc.ctx.Request.Reset()
		fc.ctx.Response.Reset()
		fc.rd.Reset(nil)
		fc.conn = addrConn{}
		frontCtxPool.Put(fc)
	}()
	ctx := &fc.ctx
	ip := remote.Addr()
	fc.ip = ip.As16()
	fc.remote.IP = fc.ip[:]
	if ip.Is4() {
		fc.remote.IP = fc.ip[12:] // as net.TCPAddrFromAddrPort gives it
	}
	fc.remote.Port, fc.remote.Zone = int(remote.Port()), ip.Zone()
	fc.conn.local, fc.conn.remote = f.local, &fc.remote
	ctx.Init2(&fc.conn, fasthttpLogger{s.log}, false)
	fc.rd.Reset(head)
	fc.br.Reset(&fc.rd)
	if err := ctx.Request.Header.Read(fc.br); err != nil || !upgrade.IsAttempt(&ctx.Request.Header) {
		return nil, nil
	}
	if t, r, ok := s.route(ctx, f.port); ok {
		if h := s.admitWebSocket(ctx, t, r); h != nil {
			h.port = f.port
			return h, nil
		}
	}
	ctx.SetConnectionClose()
	var out bytes.Buffer
	if _, err := ctx.Response.WriteTo(&out); err != nil {
		return nil, nil
	}
	return nil, out.Bytes()
}

// addrConn gives a RequestCtx the addresses of a connection the loop
// owns; nothing is ever read or written through it.
type addrConn struct{ local, remote net.Addr }

var errLoopConn = errors.New("proxy: the connection belongs to an event loop")

func (c *addrConn) Read([]byte) (int, error)         { return 0, errLoopConn }
func (c *addrConn) Write([]byte) (int, error)        { return 0, errLoopConn }
func (c *addrConn) Close() error                     { return nil }
func (c *addrConn) LocalAddr() net.Addr              { return c.local }
func (c *addrConn) RemoteAddr() net.Addr             { return c.remote }
func (c *addrConn) SetDeadline(time.Time) error      { return nil }
func (c *addrConn) SetReadDeadline(time.Time) error  { return nil }
func (c *addrConn) SetWriteDeadline(time.Time) error { return nil }
