package limit

import (
	"encoding/binary"
	"net/netip"
)

// v4 returns the IPv4 address with numeric value 0x0a000000+i (10.0.0.0
// onwards), a distinct address for each i < 2^24.
func v4(i int) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], 0x0a000000+uint32(i))
	return netip.AddrFrom4(a)
}

// v6 returns an address in 2001:db8:<i>::/64 with interface ID host: a
// distinct /64 for each i.
func v6(i int, host uint64) netip.Addr {
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], 0x20010db8<<32|uint64(uint32(i)))
	binary.BigEndian.PutUint64(a[8:], host)
	return netip.AddrFrom16(a)
}
