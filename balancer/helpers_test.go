package balancer

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
)

// addr returns the address of test backend i: 10.0.x.y:8080.
func addr(i int) string { return fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256) }

// backends returns n backends from reg (a fresh Registry if nil) with
// weight(i) as weights (1 if nil).
func backends(reg *Registry, n int, weight func(i int) int) []*Backend {
	if reg == nil {
		reg = new(Registry)
	}
	bs := make([]*Backend, n)
	for i := range bs {
		w := 1
		if weight != nil {
			w = weight(i)
		}
		bs[i] = reg.Backend(addr(i), w)
	}
	return bs
}

// shuffled returns a copy of bs in a random order drawn from seed.
func shuffled(bs []*Backend, seed uint64) []*Backend {
	c := append([]*Backend(nil), bs...)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	return c
}

const numKeys = 100_000

var (
	keysOnce sync.Once
	keyList  [][]byte
)

// testKeys returns numKeys distinct keys ("user-0" …), the same every run.
func testKeys() [][]byte {
	keysOnce.Do(func() {
		keyList = make([][]byte, numKeys)
		for i := range keyList {
			keyList[i] = strconv.AppendInt([]byte("user-"), int64(i), 10)
		}
	})
	return keyList
}

// assign returns the index in s.Backends() of every key's first choice.
func assign(s *Set, keys [][]byte) []int {
	idx := make(map[*Backend]int, s.Len())
	for i, b := range s.Backends() {
		idx[b] = i
	}
	out := make([]int, len(keys))
	for i, k := range keys {
		out[i] = idx[s.Lookup(k)]
	}
	return out
}

// lookupAddrs returns the address of every key's first choice.
func lookupAddrs(s *Set, keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = s.Lookup(k).Addr
	}
	return out
}

// releaseAll releases every connection counted on bs.
func releaseAll(bs []*Backend) {
	for _, b := range bs {
		for b.Conns() > 0 {
			b.Release()
		}
	}
}

// skewedKeys returns the keys of n connections, drawn from seed: 80% of
// them on 5 hot keys, the rest spread over 10,000 others.
func skewedKeys(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([][]byte, n)
	for i := range out {
		if r.IntN(10) < 8 {
			out[i] = []byte("hot-" + strconv.Itoa(r.IntN(5)))
		} else {
			out[i] = []byte("cold-" + strconv.Itoa(r.IntN(10_000)))
		}
	}
	return out
}

// zipfKeys returns the keys of n connections drawn from a Zipf law over
// 10,000 keys (exponent 1.1): the top key alone takes about a tenth.
func zipfKeys(n int, seed uint64) [][]byte {
	z := rand.NewZipf(rand.New(rand.NewPCG(seed, 2)), 1.1, 1, 9_999)
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte("zipf-" + strconv.FormatUint(z.Uint64(), 10))
	}
	return out
}
