//go:build !linux

package relay

import "errors"

// Poller is only implemented on Linux; elsewhere every direction keeps a
// goroutine.
type Poller struct{}

// NewPoller fails on this platform: sessions run a goroutine per direction.
func NewPoller() (*Poller, error) { return nil, errors.New("relay: no poller on this platform") }

// Close does nothing.
func (p *Poller) Close() error { return nil }

func (p *Poller) register(d *direction) bool { return false }
func (p *Poller) arm(d *direction) bool      { return false }
func (p *Poller) remove(d *direction)        {}
