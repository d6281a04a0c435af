// Package balancer holds backend sets and the policies that choose a
// backend for each new WebSocket connection.
//
// # Pieces
//
//   - Backend: an address and a weight, with live state (open connections,
//     health) kept as atomics behind it. A Registry hands out Backends keyed
//     by address, so live state survives every rebuild of a Set.
//   - Set: an immutable, sorted snapshot of a route's backends. The proxy
//     holds the current one in an atomic.Pointer[Set], discovery swaps it,
//     and a pick reads it without any lock.
//   - Policy: Hash (sticky, weighted rendezvous hashing with bounded loads),
//     LeastConn, RoundRobin (smooth, weighted) and RandomTwo (power of two
//     choices). Pick counts the connection on the backend it returns, takes
//     the backends already tried (Tried) so that a failed upstream handshake
//     can ask for the key's next choice, and never allocates. Peek gives
//     the same answer without counting or advancing anything (for /lookup).
//   - KeySpec: where a connection's sticky key comes from: a query
//     parameter, a header, a cookie, the client IP (through trusted
//     proxies' X-Forwarded-For or Forwarded) or the path; first present wins.
//
// A connection's life:
//
//	set := route.backends.Load()           // one snapshot for the whole connection
//	key, _ := route.keys.Key(ctx, buf[:0]) // nil when the request has none
//	var tried balancer.Tried
//	for {
//		b := route.policy.Pick(set, key, tried) // counted on b
//		if b == nil {
//			return 502 // or 503: nothing healthy and untried
//		}
//		up, err := dialAndHandshake(b.Addr)
//		if err == nil {
//			relay(up)
//			b.Release()
//			return
//		}
//		b.Release()
//		if !tried.Add(b) {
//			return 502
//		}
//	}
//
// # Where a key goes
//
// Every wsproxy process with the same backend addresses and weights sends a
// key to the same backend, whatever the order discovery listed them in and
// whatever the process: nothing depends on map order, a random seed or
// time. For equal weights the rule is simple enough to compute outside Go
// (a publisher looking for the backend a user is connected to):
//
//	kh     = XXH64(key, seed 0)
//	seed_b = XXH64(addr_b, seed 0)
//	h_b    = Mix13(kh XOR seed_b)   // splitmix64's finalizer; see mix
//	the backend with the highest h_b wins; on a tie, the smaller addr
//
// With weights the backend with the lowest −log2(h_b/2⁶⁴)/weight_b wins, the
// logarithm being the fixed-point neglog2 of this package (integer
// arithmetic only, so it is bit-for-bit the same on every platform); use
// Set.Lookup. TestGolden pins these results: a change to any of it moves
// every user in production and must be deliberate. Bounded loads can send
// a hot key's overflow connections to its next choice, which Lookup cannot
// know; Set.AppendPreference lists the order they follow.
//
// # Choosing the consistent hash
//
// Four candidates were measured, all fed the same 64-bit key hash; the
// three that lost live in algorithms_test.go. Figures from an AMD EPYC
// (2 vCPU, shared, so ±20% on timings), equal weights, reproduced by
//
//	go test -run xxx -bench Algorithms -benchmem ./balancer/
//
//	                     lookup ns   build     table imbalance  strays on remove  moved on add (ideal)
//	rendezvous  n=10         40        10 µs        none              0            9.40% (9.09%)
//	            n=100       247        29 µs        none              0            1.00% (0.99%)
//	            n=1000     1574       245 µs        none              0            0.10% (0.10%)
//	maglev      n=10          2.3    4253 µs       0.01%            0.08%          9.60%
//	(131,071    n=100         3.1    3951 µs       0.05%            0.36%          1.40%
//	 slots)     n=1000        2.6    6849 µs       0.71%            0.56%          0.62%
//	ring, 160   n=10         16       210 µs      14.5%               0            9.33%
//	vnodes      n=100        76      2346 µs      21.8%               0            1.02%
//	            n=1000      168     22412 µs      30.8%               0            0.12%
//	jump        n=10         19         0           none           39%             8.93%
//	            n=100        62         0           none           49%             0.99%
//	            n=1000       72         0           none           50%             0.10%
//
// "Build" includes making the Backends. "Strays on remove" are the keys, as a share of all keys, that move between
// two surviving backends when the middle backend is removed; "moved on add"
// the keys that move when an (n+1)th is added. (The benchmark's maxdev%
// column adds key-sampling noise of 1,000 keys per backend to the table
// imbalance: rendezvous 5.2/9.9/12.9%, which is that noise alone.)
//
// Weighted rendezvous hashing wins:
//
//   - It is exactly minimal. Removing a backend moves its keys and nothing
//     else; adding one moves exactly its weight share; changing a weight
//     moves keys only to or from that backend. Maglev moves 0.1–0.6% of all
//     keys between survivors on every change and up to 6× the ideal on add
//     (each of those is a user whose next connection lands away from its
//     room); jump hash can only remove the last bucket, so losing an
//     arbitrary backend moves about half of all keys, and it has no weights.
//   - Weights are exact, any integer from 1 to MaxWeight, and shares follow
//     them to sampling noise. A ring with 160 points per backend is 15–31%
//     off; Maglev rounds weights to table slots.
//   - The preference order is just the score order, so "the key's next
//     choice" for a retry, an unhealthy backend or a full one under bounded
//     loads is well defined and costs one more scan. Maglev and rings have
//     no natural next choice (walking the table repeats backends).
//   - No table: NewSet is O(n log n) (45 µs and 41 KiB for 1,000 backends)
//     where Maglev needs 4–7 ms and 512 KiB per Set, per route, on every
//     discovery change.
//
// Its cost is an O(n) pick: 40 ns at 10 backends, 225 ns at 100 (450 ns
// weighted), about 2–4 µs at 1,000. A pick happens once per WebSocket
// connection, not per message, next to a TCP connect and an HTTP upgrade to
// the backend that take 100 µs or more, so even 1,000 backends are cheap;
// a route with many thousands would want hierarchical rendezvous hashing
// (a tree of rendezvous choices, O(log n)), not a table.
//
// # Bounded loads
//
// Hash takes a load factor c (1.25 is a good start; 0 turns the bound
// off): backend i accepts a new connection only while it holds fewer than
// ⌈c·(L+1)·wᵢ/W⌉ of the L live connections on healthy backends of total
// weight W (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
// Bounded Loads", SODA 2018). A connection whose first choice is full goes
// to its key's next choice with room. In TestBoundedLoads, 20,000
// connections whose keys are 80% on 5 hot keys (or Zipf-distributed) end
// with the busiest backend at exactly 1.25× its weighted average, against
// 1.65–3.86× without the bound.
//
// # Policy costs
//
// ns per Pick+Release (0 allocations for all), 20 connections per backend,
// reproduced by
//
//	go test -run xxx -bench 'Pick|Key|NewSet' -benchmem ./balancer/
//
//	                       n=10 equal/weighted   n=100 equal/weighted   n=1000 equal/weighted
//	hash                       40 / 55               225 / 450             1793 / 4110
//	hash, c=1.25               75 / 81               339 / 624             3226 / 6256
//	least_conn                 58 / 29               333 / 230             3229 / 2408
//	round_robin                18 / 15                14 / 13               14 / 14
//	random_two                 27 / 55                19 / 85               21 / 117
//
// A retry (third attempt, c=1.25, 100 backends) costs 654 ns. KeySpec.Key
// costs 16 ns for a query parameter, 19 ns for a cookie and 165 ns for a
// client IP walked out of X-Forwarded-For, with no allocation.
package balancer
