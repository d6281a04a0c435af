//go:build linux

package relay

import (
	"crypto/cipher"
	"errors"
	"strconv"
	"sync"
	"syscall"

	"github.com/wsproxy/wsproxy/proxy/relay/tlsrec"
)

// recLeg is a TLS 1.3 client leg the loop protects records for itself,
// after crypto/tls's handshake (see takeRecords). Idle, it is two
// directions' keys and sequence numbers: no AEAD (the loop's cache lends
// them while records move), no buffer (a record received in part borrows
// one until it is whole).
type recLeg struct {
	rd, wr   recDir
	in       *[]byte // a record received in part
	updateAt uint64  // wr.Seq at which we update our key unasked
	useless  int     // records in a row that carried no data
	owed     bool    // the client asked for our KeyUpdate; sent before our next record
	closed   bool    // close_notify or a fatal alert went out: nothing more
}

// maxUseless is how many records in a row may carry no data (KeyUpdates,
// empty records, user_canceled) before the client is refused, as
// crypto/tls refuses more than 16: each costs the client a few bytes and
// us a key derivation or a pass through the loop.
const maxUseless = 16

// noData counts a record that carried no data and says whether the
// client has sent too many of them in a row.
func (r *recLeg) noData() error {
	r.useless++
	if r.useless > maxUseless {
		return &tlsrec.Error{Alert: tlsrec.AlertUnexpectedMessage, Msg: "too many records in a row with no data"}
	}
	return nil
}

// recDir is one direction's traffic state and its slot in the loop's AEAD
// cache (-1: none).
type recDir struct {
	tlsrec.Dir
	slot int32
}

// defaultKeyUpdateAfter is how many records we protect under one key
// before we update it: well below AES-GCM's limit of 2^24.5 full-size
// records per key (RFC 8446 §5.5).
const defaultKeyUpdateAfter = 1 << 23

// recLoop is what a loop keeps for its record-layer legs, made with the
// first of them.
type recLoop struct {
	in    []byte // MaxCarry of frame carry, then received records
	out   []byte // records being sealed
	cache aeadCache
	parts sync.Pool // *[]byte of tlsrec.MaxRecord, for records received in part
}

func (l *loop) records() *recLoop {
	if l.rec == nil {
		n := max(len(l.buf)-MaxCarry, tlsrec.MaxRecord)
		l.rec = &recLoop{
			in:    make([]byte, MaxCarry+n),
			out:   make([]byte, 0, 2*tlsrec.MaxRecord),
			cache: aeadCache{slots: make([]aeadSlot, aeadCacheSize)},
		}
		l.rec.parts.New = func() any { b := make([]byte, 0, tlsrec.MaxRecord); return &b }
	}
	return l.rec
}

// maybeTakeRecords moves a TLS client leg from crypto/tls to the record
// layer, when crypto/tls has just reported that it holds nothing it could
// decrypt, and the Socket accounted for every record either way (see
// recTrack). Anything else leaves the leg with crypto/tls.
func (lg *evLeg) maybeTakeRecords() {
	s := lg.sock
	if s == nil || s.keys == nil || s.off.Load() {
		return
	}
	rd, wr, partial, ok := s.takeRecords()
	if !ok {
		return
	}
	lp := lg.s.lp
	rl := lp.records()
	r := &recLeg{rd: recDir{Dir: rd, slot: -1}, wr: recDir{Dir: wr, slot: -1}, updateAt: defaultKeyUpdateAfter}
	if h := lg.s.cfg.recHook; h != nil {
		if h.updateAfter > 0 {
			r.updateAt = h.updateAfter
		}
		// What crypto/tls sealed under this key is used too.
		for i := uint64(0); i < wr.Seq; i++ {
			h.sealed(wr.Key(), wr.Nonce(i))
		}
	}
	if len(partial) > 0 {
		r.in = rl.parts.Get().(*[]byte)
		*r.in = append((*r.in)[:0], partial...)
	}
	lg.rec = r
	lp.owner.recLegs.Add(1)
	if h := lg.s.cfg.recHook; h != nil && h.took != nil {
		h.took()
	}
	s.leg = nil
	lg.tc, lg.sock = nil, nil
}

// readRec reads the socket once, opens every whole record in place in the
// loop's buffer, moving the plaintexts together, and forwards them at once.
func (lg *evLeg) readRec() {
	lp := lg.s.lp
	rl := lp.rec
	r := lg.rec
	have := 0
	if r.in != nil {
		have = len(*r.in)
	}
	// Not more than a record or a loop buffer's worth beyond what we
	// have, so the peer is never handed more than a plain leg's read.
	want := max(len(lp.buf)-MaxCarry, tlsrec.MaxRecord) - have
	n, err := readFD(lg.fd, rl.in[MaxCarry+have:MaxCarry+have+want])
	switch {
	case err == syscall.EAGAIN:
		return
	case err != nil || n == 0:
		lg.releaseIn()
		lg.ended()
		return
	}
	lg.lastRead = lp.now
	if have > 0 {
		copy(rl.in[MaxCarry:], *r.in)
		lg.releaseIn()
	}
	data := rl.in[MaxCarry : MaxCarry+have+n]
	w := MaxCarry // where the next plaintext goes
	for p := 0; ; {
		k, typ, pt, err := tlsrec.Next(lg.rdAEAD, &r.rd.Dir, data[p:])
		if err != nil {
			lg.forwardRec(w)
			lg.recFail(err)
			return
		}
		if k == 0 {
			if p < len(data) {
				r.in = rl.parts.Get().(*[]byte)
				*r.in = append((*r.in)[:0], data[p:]...)
			}
			break
		}
		p += k
		if typ == tlsrec.TypeApplicationData && len(pt) > 0 {
			r.useless = 0
			w += copy(rl.in[w:], pt)
			continue
		}
		switch typ { // err is nil here
		case tlsrec.TypeApplicationData: // empty
			err = r.noData()
		case tlsrec.TypeHandshake:
			var requested bool
			if requested, err = tlsrec.ParseKeyUpdate(pt); err == nil {
				err = r.rd.Update()
				lp.dropAEAD(&r.rd)
			}
			if err == nil {
				err = r.noData()
			}
			// Answered at once when nothing waits for the client;
			// otherwise before our next record, so a client that asks
			// again and again while it reads nothing gets one answer
			// (RFC 8446 §4.6.3) and nothing piles up for it.
			if err == nil && requested {
				r.owed = true
				if lg.out == nil {
					lg.updateWriteKey()
				}
			}
		case tlsrec.TypeAlert:
			if !tlsrec.IsUserCanceled(pt) {
				lg.forwardRec(w)
				lg.recAlert(pt)
				return
			}
			// A warning only; what follows it is read as usual.
			err = r.noData()
		default:
			err = &tlsrec.Error{Alert: tlsrec.AlertUnexpectedMessage, Msg: "unexpected record content type " + strconv.Itoa(int(typ))}
		}
		if err != nil {
			lg.forwardRec(w)
			lg.recFail(err)
			return
		}
	}
	lg.forwardRec(w)
}

// forwardRec forwards the plaintext gathered before end in the loop's
// record buffer, after the leg's carried partial frame.
func (lg *evLeg) forwardRec(end int) {
	if end == MaxCarry || lg.eof {
		return
	}
	in := lg.s.lp.rec.in
	start := MaxCarry - lg.carryN
	if lg.carryN > 0 {
		copy(in[start:], lg.carry[:lg.carryN])
	}
	lg.forward(in[start:end])
	lg.afterForward()
}

func (lg *evLeg) releaseIn() {
	if r := lg.rec; r != nil && r.in != nil {
		*r.in = (*r.in)[:0]
		lg.s.lp.rec.parts.Put(r.in)
		r.in = nil
	}
}

// recAlert handles an alert from the client other than user_canceled:
// close_notify ends its direction as a FIN does; any other is fatal (RFC
// 8446 §6.2) and ends it too, with the alert as the reason.
func (lg *evLeg) recAlert(pt []byte) {
	if len(pt) != 2 {
		lg.recFail(&tlsrec.Error{Alert: tlsrec.AlertDecodeError, Msg: "malformed alert"})
		return
	}
	switch a := tlsrec.Alert(pt[1]); a {
	case tlsrec.AlertCloseNotify:
	default:
		lg.s.pub.noteReason("client TLS alert " + strconv.Itoa(int(a)))
		lg.closeRec() // it will read no more from us
	}
	if !lg.eof {
		lg.ended()
	}
}

// recFail ends the leg after a record it must not accept: it gets the
// alert the error names, then a FIN; its backend hears that the client
// went away.
func (lg *evLeg) recFail(err error) {
	alert := tlsrec.AlertInternalError
	var te *tlsrec.Error
	if errors.As(err, &te) {
		alert = te.Alert
	}
	lg.s.pub.noteReason("client " + err.Error())
	lg.sealOwn(tlsrec.TypeAlert, []byte{2, byte(alert)})
	lg.closeRec()
	lg.shutWant = true
	if !lg.eof {
		lg.ended()
	}
	lg.maybeShut()
}

// closeRec stops everything that would still go to the leg.
func (lg *evLeg) closeRec() {
	lg.rec.closed = true
	lg.closeSent = true
	lg.wantClose, lg.wantPing = false, false
}

// writeRec seals p into records and writes them.
func (lg *evLeg) writeRec(p []byte) {
	r := lg.rec
	if r.closed {
		return
	}
	rl := lg.s.lp.rec
	out := rl.out[:0]
	for len(p) > 0 {
		k := min(len(p), tlsrec.MaxPlaintext)
		if len(out)+2*tlsrec.Overhead+k+len(tlsrec.KeyUpdateNotRequested) > cap(out) {
			lg.rawWrite(out)
			out = out[:0]
		}
		if r.owed || r.wr.Seq >= r.updateAt {
			out = lg.sealUpdate(out, false)
		}
		out = tlsrec.Seal(out, lg.wrAEAD(), &r.wr.Dir, tlsrec.TypeApplicationData, p[:k])
		p = p[k:]
	}
	lg.rawWrite(out)
}

// sealOwn writes one record of the layer's own (an alert).
func (lg *evLeg) sealOwn(typ uint8, msg []byte) {
	if lg.rec.closed || lg.dead || lg.fd < 0 {
		return
	}
	lg.rawWrite(tlsrec.Seal(lg.s.lp.rec.out[:0], lg.wrAEAD(), &lg.rec.wr.Dir, typ, msg))
}

// updateWriteKey sends the KeyUpdate the client asked for.
func (lg *evLeg) updateWriteKey() {
	if lg.rec.closed || lg.dead || lg.fd < 0 {
		return
	}
	lg.rawWrite(lg.sealUpdate(lg.s.lp.rec.out[:0], false))
}

// sealUpdate appends our KeyUpdate under the current key, then moves to
// the next.
func (lg *evLeg) sealUpdate(out []byte, request bool) []byte {
	r := lg.rec
	msg := tlsrec.KeyUpdateNotRequested
	if request {
		msg = tlsrec.KeyUpdateRequested
	}
	out = tlsrec.Seal(out, lg.wrAEAD(), &r.wr.Dir, tlsrec.TypeHandshake, msg)
	r.owed = false
	lg.s.lp.dropAEAD(&r.wr)
	if err := r.wr.Update(); err != nil {
		// Cannot happen for a key that derived once; never reuse it.
		r.closed = true
	}
	return out
}

// closeNotify sends close_notify before the leg's FIN.
func (lg *evLeg) closeNotify() {
	if r := lg.rec; r != nil && !r.closed {
		lg.sealOwn(tlsrec.TypeAlert, []byte{1, byte(tlsrec.AlertCloseNotify)})
		r.closed = true
	}
}

func (lg *evLeg) rdAEAD() cipher.AEAD { return lg.s.lp.aead(&lg.rec.rd, lg.s.cfg.recHook) }
func (lg *evLeg) wrAEAD() cipher.AEAD { return lg.s.lp.aead(&lg.rec.wr, lg.s.cfg.recHook) }

// endRec drops what the leg holds of the record layer when the session
// ends.
func (lg *evLeg) endRec() {
	r := lg.rec
	if r == nil {
		return
	}
	lg.releaseIn()
	lg.s.lp.dropAEAD(&r.rd)
	lg.s.lp.dropAEAD(&r.wr)
	r.rd.Zero()
	r.wr.Zero()
	r.closed = true
}

// aeadCacheSize is how many AEADs a loop keeps: enough for the legs that
// move records at once (a 64 B echo over 100 connections uses 100 per
// loop); building one costs about 0.7 µs and 1.3 KB with AES-GCM, more
// than sealing and opening a small record, so active legs must hit. Slots
// unused for aeadIdle are freed, so idle legs hold none.
const (
	aeadCacheSize = 256
	aeadIdle      = int64(1e9)
)

// aeadCache lends AEADs to record directions, evicting by clock (second
// chance) when full.
type aeadCache struct {
	slots []aeadSlot
	hand  int
	live  int
}

type aeadSlot struct {
	owner *recDir
	a     cipher.AEAD
	used  bool
	at    int64
}

// aead returns d's AEAD, building it if the cache has none.
func (l *loop) aead(d *recDir, h *recHook) cipher.AEAD {
	c := &l.rec.cache
	if d.slot >= 0 {
		if s := &c.slots[d.slot]; s.owner == d {
			s.used, s.at = true, l.now
			return s.a
		}
	}
	i := c.victim()
	a, err := d.NewAEAD()
	if err != nil {
		panic("relay: a traffic key that derived does not make an AEAD: " + err.Error())
	}
	if h != nil {
		a = &hookedAEAD{AEAD: a, key: append([]byte(nil), d.Key()...), h: h}
	}
	if c.slots[i].owner == nil {
		c.live++
	}
	c.slots[i] = aeadSlot{owner: d, a: a, used: true, at: l.now}
	d.slot = int32(i)
	return a
}

// victim returns a free slot, evicting the first one not used since the
// hand last passed it.
func (c *aeadCache) victim() int {
	for {
		i := c.hand
		c.hand = (c.hand + 1) % len(c.slots)
		s := &c.slots[i]
		if s.owner == nil {
			return i
		}
		if !s.used {
			s.owner.slot = -1
			*s = aeadSlot{}
			c.live--
			return i
		}
		s.used = false
	}
}

// dropAEAD forgets d's AEAD (a new key, or the leg is done).
func (l *loop) dropAEAD(d *recDir) {
	if l.rec != nil && d.slot >= 0 {
		c := &l.rec.cache
		if s := &c.slots[d.slot]; s.owner == d {
			*s = aeadSlot{}
			c.live--
		}
	}
	d.slot = -1
}

// sweepAEADs frees the AEADs of directions idle for aeadIdle. It reports
// whether any are left, for the loop to come back for them.
func (l *loop) sweepAEADs() bool {
	if l.rec == nil || l.rec.cache.live == 0 {
		return false
	}
	c := &l.rec.cache
	for i := range c.slots {
		s := &c.slots[i]
		if s.owner != nil && l.now-s.at >= aeadIdle {
			s.owner.slot = -1
			*s = aeadSlot{}
			c.live--
		}
	}
	return c.live > 0
}
