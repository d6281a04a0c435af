package relay

import (
	"bytes"
	"encoding/hex"
	"sync"
)

// KeyLog is the tls.Config.KeyLogWriter of the proxy's TLS listeners: the
// way crypto/tls hands over a TLS 1.3 connection's application traffic
// secrets, so that the loops can take the connection's records over after
// its handshake (see Socket). One KeyLog serves every connection of the
// configs it is set on (a per-connection config would be a Clone, which
// gives each its own session-ticket keys and breaks resumption).
//
// It keeps secrets only for connections whose Socket registered its
// ClientHello random, and only until that Socket takes them or closes;
// every other line (TLS 1.2's, handshake secrets) is dropped. Nothing is
// ever written anywhere. It is safe for concurrent use.
type KeyLog struct {
	mu sync.Mutex
	m  map[[32]byte]*keySecrets
}

// keySecrets are one connection's application traffic secrets, under the
// KeyLog's lock.
type keySecrets struct {
	client, server []byte // CLIENT_/SERVER_TRAFFIC_SECRET_0
	tls12          bool   // a TLS 1.2 line came: nothing to take over
}

// NewKeyLog returns an empty KeyLog.
func NewKeyLog() *KeyLog { return &KeyLog{m: make(map[[32]byte]*keySecrets)} }

// Write files one NSS key log line ("LABEL <client random> <secret>\n",
// which is how crypto/tls calls it: a whole line per call). It then wipes
// the line: crypto/tls builds it for this call alone and drops it, and a
// secret left in garbage lives on until the memory is reused.
func (k *KeyLog) Write(line []byte) (int, error) {
	n := len(line)
	defer clear(line)
	label, rest, _ := bytes.Cut(bytes.TrimRight(line, "\n"), []byte{' '})
	rnd, sec, _ := bytes.Cut(rest, []byte{' '})
	var random [32]byte
	if hex.DecodedLen(len(rnd)) != len(random) {
		return n, nil
	}
	if _, err := hex.Decode(random[:], rnd); err != nil {
		return n, nil
	}
	var dst *[]byte
	k.mu.Lock()
	defer k.mu.Unlock()
	e := k.m[random]
	if e == nil {
		return n, nil
	}
	switch string(label) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &e.client
	case "SERVER_TRAFFIC_SECRET_0":
		dst = &e.server
	case "CLIENT_RANDOM":
		e.tls12 = true
		return n, nil
	default:
		return n, nil
	}
	s := make([]byte, hex.DecodedLen(len(sec)))
	if _, err := hex.Decode(s, sec); err != nil {
		clear(s)
		return n, nil
	}
	*dst = s
	return n, nil
}

// register starts keeping the secrets of the connection whose ClientHello
// carried random.
func (k *KeyLog) register(random [32]byte) {
	k.mu.Lock()
	if k.m[random] == nil {
		k.m[random] = &keySecrets{}
	}
	k.mu.Unlock()
}

// secrets returns copies of what came for random so far (nil if not yet);
// tls12 reports a connection that will never have them.
func (k *KeyLog) secrets(random [32]byte) (client, server []byte, tls12 bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e := k.m[random]
	if e == nil {
		return nil, nil, false
	}
	return bytes.Clone(e.client), bytes.Clone(e.server), e.tls12
}

// forget wipes and drops what was kept for random.
func (k *KeyLog) forget(random [32]byte) {
	k.mu.Lock()
	if e := k.m[random]; e != nil {
		clear(e.client)
		clear(e.server)
		delete(k.m, random)
	}
	k.mu.Unlock()
}

// Len is how many connections' secrets are kept (for tests: it must drop
// to 0 when no connection is between its ClientHello and its handover).
func (k *KeyLog) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
