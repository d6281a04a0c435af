package tls

import (
	"bytes"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// acmeChallengePrefix is where HTTP-01 challenges are asked (RFC 8555 8.3).
var acmeChallengePrefix = []byte("/.well-known/acme-challenge/")

// HandleHTTPChallenge answers an ACME HTTP-01 challenge request and reports
// whether it did; if not, ctx is untouched. It answers challenges begun by
// any Manager in this process (certmagic keeps them in memory) and by any
// instance sharing the storage directory (certmagic writes them there), so
// the old Manager answers for the new one during a reload. Cheap for other
// requests: one prefix comparison.
func (m *Manager) HandleHTTPChallenge(ctx *fasthttp.RequestCtx) bool {
	path := ctx.Path()
	if !bytes.HasPrefix(path, acmeChallengePrefix) || !ctx.IsGet() {
		return false
	}
	// certmagic's solver speaks net/http; hand it the four things it reads.
	r := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: string(path)},
		Host:       string(ctx.Host()),
		RequestURI: string(ctx.RequestURI()),
		RemoteAddr: ctx.RemoteAddr().String(),
		Header:     http.Header{"User-Agent": {string(ctx.UserAgent())}},
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
	r = r.WithContext(ctx)
	w := &challengeWriter{header: make(http.Header)}
	if !m.baseIss.HandleHTTPChallenge(w, r) {
		return false
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	ctx.SetStatusCode(w.status)
	if ct := w.header.Get("Content-Type"); ct != "" {
		ctx.SetContentType(ct)
	}
	ctx.SetBody(w.body.Bytes())
	ctx.SetConnectionClose()
	return true
}

// challengeWriter is the http.ResponseWriter certmagic's solver writes to.
type challengeWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *challengeWriter) Header() http.Header         { return w.header }
func (w *challengeWriter) Write(p []byte) (int, error) { return w.body.Write(p) }
func (w *challengeWriter) WriteHeader(status int)      { w.status = status }

// HTTPRedirect is a fasthttp handler for the plain HTTP port of HTTPS sites:
// it answers ACME HTTP-01 challenges and redirects everything else to the
// same host and URI over https (308, on Global.HTTPSPort when that is not
// 443). Plain http:// sites on the same port route before it.
func (m *Manager) HTTPRedirect(ctx *fasthttp.RequestCtx) {
	if m.HandleHTTPChallenge(ctx) {
		return
	}
	host := string(ctx.Host())
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		ctx.Error("Bad Request: no Host", fasthttp.StatusBadRequest)
		return
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if m.g.HTTPSPort != 443 {
		host += ":" + strconv.Itoa(m.g.HTTPSPort)
	}
	ctx.Response.Header.Set("Location", "https://"+host+string(ctx.RequestURI()))
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	ctx.SetConnectionClose()
}
