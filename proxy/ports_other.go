//go:build !linux

package proxy

import "net"

// delayACKs: TCP_QUICKACK is Linux's.
func delayACKs(net.Listener) {}
