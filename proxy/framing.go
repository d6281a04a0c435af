package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// framingError says why a request's message framing is ambiguous, or "" if
// it is not. Front proxies and backends that resolve an ambiguity
// differently disagree on where the request ends, and the rest of the
// bytes become a request of the attacker's making (smuggling), so such a
// request is answered 400 and its connection closed before anything is
// forwarded (RFC 9112 §6.1, §6.3):
//
//   - Transfer-Encoding together with Content-Length;
//   - Transfer-Encoding in an HTTP/1.0 request;
//   - Transfer-Encoding other than exactly "chunked" (chunked not last,
//     chunked twice, or a coding the proxy does not decode);
//   - Content-Length values that differ (repeated fields or a list), or one
//     that is not a plain decimal number;
//   - white space between a field name and its colon (RFC 9112 §5.1), or a
//     field folded over lines (obs-fold, RFC 9112 §5.2), which parsers read
//     as different fields.
//
// It reads the header block as the client sent it, not fasthttp's parse of
// it, because that parse is one of the interpretations in question.
func framingError(h *fasthttp.RequestHeader) string {
	raw := h.RawHeaders()
	var cl []byte
	clSeen, te, teSeen := false, 0, false
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		line := raw
		if i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "header field folded over lines"
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue // fasthttp has refused or ignored it already
		}
		name := line[:colon]
		if c := name[len(name)-1]; c == ' ' || c == '\t' {
			return "white space before a header field's colon"
		}
		// Only two names matter here; the length rules out nearly every
		// other field before any case-folding compare.
		if len(name) != len("Content-Length") && len(name) != len("Transfer-Encoding") {
			continue
		}
		value := bytes.Trim(line[colon+1:], " \t")
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			for _, v := range bytes.Split(value, []byte{','}) {
				v = bytes.Trim(v, " \t")
				if !isDigits(v) {
					return "Content-Length is not a number"
				}
				if clSeen && !bytes.Equal(bytes.TrimLeft(v, "0"), bytes.TrimLeft(cl, "0")) {
					return "Content-Length values differ"
				}
				cl, clSeen = v, true
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			teSeen = true
			for _, v := range bytes.Split(value, []byte{','}) {
				v = bytes.Trim(v, " \t")
				if len(v) == 0 {
					continue
				}
				if !bytes.EqualFold(v, []byte("chunked")) {
					return "Transfer-Encoding other than chunked"
				}
				te++
			}
		}
	}
	switch {
	case !teSeen:
		return ""
	case clSeen:
		return "both Transfer-Encoding and Content-Length"
	case !h.IsHTTP11():
		return "Transfer-Encoding in an HTTP/1.0 request"
	case te != 1:
		return "Transfer-Encoding other than chunked"
	}
	return ""
}

func isDigits(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
