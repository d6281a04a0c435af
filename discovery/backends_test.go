package discovery

import (
	"slices"
	"testing"

	"github.com/wsproxy/wsproxy/balancer"
)

func TestNewSetKeepsLiveState(t *testing.T) {
	t.Parallel()
	var reg balancer.Registry
	s1 := NewSet(&reg, []Instance{{Addr: "10.0.0.1:80", Weight: 2}, {Addr: "10.0.0.2:80", Weight: 1}})
	if s1.Len() != 2 {
		t.Fatalf("len %d", s1.Len())
	}
	s1.Backends()[0].Acquire()
	s2 := NewSet(&reg, []Instance{{Addr: "10.0.0.1:80", Weight: 5}})
	if b := s2.Backends()[0]; b.Conns() != 1 || b.Weight != 5 {
		t.Fatalf("backend after rebuild: conns %d weight %d", b.Conns(), b.Weight)
	}
	if NewSet(&reg, nil).Len() != 0 {
		t.Fatal("empty instances, non-empty set")
	}
}

func TestGone(t *testing.T) {
	t.Parallel()
	in := func(addrs ...string) []Instance {
		var out []Instance
		for _, a := range addrs {
			out = append(out, Instance{Addr: a})
		}
		return out
	}
	for _, c := range []struct {
		prev, next []Instance
		want       []string
	}{
		{in("a", "b", "c"), in("a", "c"), []string{"b"}},
		{in("a", "b"), nil, []string{"a", "b"}},
		{nil, in("a"), nil},
		{in("b", "d"), in("a", "c", "d", "e"), []string{"b"}},
		{in("a", "b"), in("a", "b"), nil},
	} {
		if got := Gone(c.prev, c.next); !slices.Equal(got, c.want) {
			t.Errorf("Gone(%v, %v) = %v, want %v", c.prev, c.next, got, c.want)
		}
	}
}
