package proxy

import (
	"testing"

	"github.com/wsproxy/wsproxy/examples/echoserver"
)

// healthOf reports the health the proxy shows for a backend address.
func healthOf(tp *testProxy, addr string) (healthy, found bool) {
	for _, r := range tp.srv.Routes() {
		for _, b := range r.Backends {
			if b.Addr == addr {
				return b.Healthy, true
			}
		}
	}
	return false, false
}

func TestActiveHealthCheckRemovesAndRestoresBackend(t *testing.T) {
	t.Parallel()
	conf := ":{port} {\n\troute /* {\n\t\tto {b0} {b1}\n\t\thealth_websocket /ws\n\t\thealth_interval 50ms\n\t\thealth_timeout 500ms\n\t\thealth_passes 1\n\t\thealth_fails 2\n\t}\n}"
	tp := startProxy(t, conf, 2)
	addr := tp.backends[0].Addr()
	eventually(t, tp.addr, "b0", "b1")

	tp.backends[0].Close() // its checks now fail
	waitFor(t, func() bool { h, _ := healthOf(tp, addr); return !h })
	eventually(t, tp.addr, "b1")

	back, err := echoserver.Listen(addr, echoserver.Options{ID: "b0"})
	if err != nil {
		t.Skipf("could not listen again on %s: %v", addr, err)
	}
	t.Cleanup(func() { back.Close() })
	waitFor(t, func() bool { h, _ := healthOf(tp, addr); return h })
	eventually(t, tp.addr, "b0", "b1")
}

func TestPassiveHealthEjectsRefusingBackend(t *testing.T) {
	t.Parallel()
	conf := ":{port} {\n\troute /* {\n\t\tto 127.0.0.1:1 {b0}\n\t\tlb_policy round_robin\n\t\tmax_fails 2\n\t\teject_duration 300ms\n\t}\n}"
	tp := startProxy(t, conf, 1)
	for i := 0; i < 6; i++ { // every connection lands, on b0, retried if need be
		if got := backendsSeen(t, tp.addr, 1); got[0] != "b0" {
			t.Fatalf("connection %d reached %v", i, got)
		}
	}
	if h, ok := healthOf(tp, "127.0.0.1:1"); !ok || h {
		t.Fatalf("the refusing backend is not ejected (healthy=%v found=%v)", h, ok)
	}
	// The ejection expires.
	waitFor(t, func() bool { h, _ := healthOf(tp, "127.0.0.1:1"); return h })
}
