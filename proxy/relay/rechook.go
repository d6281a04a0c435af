package relay

import "crypto/cipher"

// recHook is for tests: it sees every key and nonce sealed with, and can
// make KeyUpdates come sooner.
type recHook struct {
	sealed      func(key, nonce []byte)
	took        func() // a leg moved to the record layer
	updateAfter uint64
}

type hookedAEAD struct {
	cipher.AEAD
	key []byte
	h   *recHook
}

func (a *hookedAEAD) Seal(dst, nonce, plaintext, ad []byte) []byte {
	a.h.sealed(a.key, nonce)
	return a.AEAD.Seal(dst, nonce, plaintext, ad)
}
