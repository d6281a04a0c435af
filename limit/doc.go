// Package limit holds the per-client-IP limits checked at the WebSocket
// handshake: PerIP caps the live connections of one client (the proxy
// answers 429 when Acquire fails) and Rate caps how fast one client may open
// them (429 when Allow fails). The totals per proxy and per route are plain
// atomics kept elsewhere.
//
// Both group clients the same way (see Options): an IPv4 address by itself
// and an IPv6 address by its /64, because one customer usually holds a whole
// /64 and could otherwise take 2^64 slots. IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) count as the IPv4 address; zones are ignored; every
// invalid address (the zero netip.Addr) is one group of its own.
//
// Both are built to survive a client with many addresses:
//
//   - Memory is bounded. PerIP deletes a group when its last connection is
//     released, so it holds at most one entry per live connection. Rate
//     drops a group whose bucket is full again (a missing entry means a full
//     bucket, so nothing is lost), sweeping incrementally as new groups
//     arrive, and hard-caps the groups it tracks (Options.MaxEntries).
//   - Handshakes do not queue on one lock: the state is split into 64 shards,
//     each a mutex and a map, chosen by a hash of the group keyed with a
//     per-instance random seed, so a client cannot aim its addresses at one
//     shard.
//   - No goroutine: all work happens inside the calls.
//   - Acquire, Release and Allow do not allocate for a group that already
//     has an entry; a new group costs one map insert.
//
// A handshake's life:
//
//	ip := clientIP // netip.Addr of the client, after trusted proxies
//	if !rate.Allow(ip, time.Now()) {
//		return 429
//	}
//	if !perIP.Acquire(ip) {
//		return 429
//	}
//	defer perIP.Release(ip) // when the connection ends, on the same PerIP
//
// A PerIP's counts are live state: across a config reload, keep the same
// PerIP, or take one with the new cap from WithMax, which shares the counts;
// a connection may be released on any PerIP that shares its counts.
package limit
