//go:build linux

package relay

import (
	"crypto/cipher"
	"encoding/binary"
	"sync/atomic"

	"github.com/wsproxy/wsproxy/proxy/relay/tlsrec"
)

// recTrack follows the records crypto/tls reads and writes on a Socket
// from the ClientHello until the loop takes the connection over, to learn
// for certain how many records each direction has protected under its
// application traffic key: the sequence numbers the record layer must
// continue from. A record is counted only if it opens under that key at
// the next number, so a miscount cannot go unnoticed (AEAD
// authentication); records under handshake keys simply fail to open.
//
// It gives up (the connection stays with crypto/tls) on anything it cannot
// account for: not TLS 1.3 or a suite it lacks, a post-handshake message
// other than the server's session tickets, a record that should open and
// does not, or more records than an upgrade takes.
type recTrack struct {
	keys   *KeyLog // nil: no record layer for this connection
	off    atomic.Bool
	hello  bool // random is registered with keys
	random [32]byte
	suite  tlsrec.Suite // from the ServerHello
	rd, wr recCount
}

// recCount is one direction of a recTrack. Read and Write may run on two
// goroutines: each touches only its own recCount.
type recCount struct {
	rec   []byte // the record being passed, copied so it can be opened
	keyed bool
	dir   tlsrec.Dir
	aead  cipher.AEAD
	app   bool // a record opened under the application key
	seen  int  // records since the key was known
	bad   bool
}

// trackLimit bounds the records followed per direction: an upgrade comes
// within a few; a connection serving plain HTTPS stops paying for this.
const trackLimit = 64

// tracked follows p, bytes crypto/tls read (read) or wrote.
func (t *recTrack) tracked(p []byte, read bool) {
	if t.keys == nil || t.off.Load() {
		return
	}
	c := &t.wr
	if read {
		c = &t.rd
	}
	for len(p) > 0 {
		if len(c.rec) < tlsrec.HeaderLen {
			k := min(len(p), tlsrec.HeaderLen-len(c.rec))
			c.rec, p = append(c.rec, p[:k]...), p[k:]
			continue
		}
		total := tlsrec.HeaderLen + int(binary.BigEndian.Uint16(c.rec[3:5]))
		k := min(len(p), total-len(c.rec))
		c.rec, p = append(c.rec, p[:k]...), p[k:]
		if len(c.rec) < total {
			return
		}
		if !t.record(c, read) {
			t.stopTracking()
			return
		}
		c.rec = c.rec[:0]
	}
}

// record judges one whole record; false ends the tracking.
func (t *recTrack) record(c *recCount, read bool) bool {
	rec := c.rec
	if read && !t.hello {
		// The ClientHello: its random names the connection in the key log.
		if rec[0] != tlsrec.TypeHandshake || len(rec) < 43 || rec[5] != 1 {
			return false
		}
		copy(t.random[:], rec[11:43])
		t.hello = true
		t.keys.register(t.random)
		return true
	}
	if !read && t.suite == 0 && rec[0] == tlsrec.TypeHandshake && len(rec) > 44 && rec[5] == 2 {
		// The ServerHello (or a HelloRetryRequest, which names the same
		// suite): legacy_version, random, session id, cipher_suite.
		if i := 44 + int(rec[43]); len(rec) >= i+2 {
			t.suite = tlsrec.Suite(binary.BigEndian.Uint16(rec[i:]))
		}
		if !t.suite.Supported() {
			return false
		}
		return true
	}
	if rec[0] != tlsrec.TypeApplicationData {
		// change_cipher_spec (compatibility mode) and plaintext alerts
		// belong before the application keys.
		return !c.app
	}
	if !c.keyed {
		if !t.key(c, read) {
			return true // not yet: a record under a handshake key
		}
		if c.bad {
			return false
		}
	}
	if c.seen++; c.seen > trackLimit {
		return false
	}
	typ, pt, err := tlsrec.Open(c.aead, &c.dir, rec)
	if err != nil {
		// Before the first application record, a handshake key's.
		return !c.app
	}
	c.app = true
	switch {
	case typ == tlsrec.TypeApplicationData:
		return true
	case typ == tlsrec.TypeHandshake && !read:
		// The server's session tickets: all that crypto/tls sends after
		// its Finished on its own. Anything else (a KeyUpdate) is left
		// to crypto/tls.
		for len(pt) >= 4 && pt[0] == 4 {
			n := 4 + (int(pt[1])<<16 | int(pt[2])<<8 | int(pt[3]))
			if n > len(pt) {
				return false
			}
			pt = pt[n:]
		}
		return len(pt) == 0
	}
	return false
}

// key sets c's application key once the key log has it.
func (t *recTrack) key(c *recCount, read bool) bool {
	client, server, tls12 := t.keys.secrets(t.random)
	defer clear(client)
	defer clear(server)
	if tls12 {
		c.bad = true
		return true
	}
	sec := server
	if read {
		sec = client
	}
	if sec == nil {
		return false
	}
	d, err := tlsrec.NewDir(t.suite, sec, 0)
	if err == nil {
		c.aead, err = d.NewAEAD()
	}
	if err != nil {
		c.bad = true
		return true
	}
	c.dir, c.keyed = d, true
	return true
}

// stopTracking ends the tracking for good and wipes the secrets; each
// direction drops its own state when it next looks (it may be on another
// goroutine).
func (t *recTrack) stopTracking() {
	if t.keys == nil || t.off.Swap(true) {
		return
	}
	if t.hello {
		t.keys.forget(t.random)
	}
}

// takeRecords ends the tracking and returns both directions' states, with
// the bytes of a record crypto/tls has read in part (it holds them too,
// and never gets the rest), if every record either way is accounted for.
// The caller guarantees crypto/tls holds nothing else unread: no
// plaintext, no whole record.
func (t *recTrack) takeRecords() (rd, wr tlsrec.Dir, partial []byte, ok bool) {
	if t.keys == nil || t.off.Load() || !t.hello || t.suite == 0 {
		return
	}
	defer func() {
		t.stopTracking()
		for _, c := range []*recCount{&t.rd, &t.wr} {
			c.dir.Zero()
			c.aead, c.rec = nil, nil
		}
	}()
	for i, c := range []*recCount{&t.rd, &t.wr} {
		if !c.keyed && !t.key(c, i == 0) {
			return
		}
		if c.bad {
			return
		}
	}
	if len(t.wr.rec) > 0 {
		return // crypto/tls writes whole records: never seen
	}
	return t.rd.dir, t.wr.dir, append([]byte(nil), t.rd.rec...), true
}
