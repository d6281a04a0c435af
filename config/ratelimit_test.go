package config

import (
	"strings"
	"testing"
	"time"
)

func TestMessageRateDirectives(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, testFile, `:8080 {
	route /a {
		to a:1
		lb_policy hash query:user
		max_message_rate 100/s 5/100ms burst 20 pause
		max_message_rate_per_key 600/1m
		handshake_rate 200/s 50
	}
	route /b {
		to a:1
		max_message_rate off 10/s burst 3
		handshake_rate 30/1m
	}
}`)
	a, b := cfg.Sites[0].Routes[0], cfg.Sites[0].Routes[1]
	want := [2]MessageRate{{100, time.Second, 20}, {5, 100 * time.Millisecond, 20}}
	if a.MessageRate != want || !a.MessageRatePause {
		t.Fatalf("max_message_rate = %+v pause %v, want %+v pause", a.MessageRate, a.MessageRatePause, want)
	}
	if k := a.MessageRatePerKey; k[0] != (MessageRate{600, time.Minute, 600}) || k[1] != k[0] {
		t.Fatalf("per key %+v", k)
	}
	if a.MessageRate[0].Interval() != 10*time.Millisecond || a.HandshakeRate != 200 || a.HandshakeBurst != 50 {
		t.Fatalf("interval %v, handshake_rate %v burst %d", a.MessageRate[0].Interval(), a.HandshakeRate, a.HandshakeBurst)
	}
	if b.MessageRate[0].On() || b.MessageRate[1] != (MessageRate{10, time.Second, 3}) || b.MessageRatePause {
		t.Fatalf("route b: %+v pause %v", b.MessageRate, b.MessageRatePause)
	}
	if b.HandshakeRate != 0.5 || b.HandshakeBurst != 1 {
		t.Fatalf("route b handshake_rate %v burst %d", b.HandshakeRate, b.HandshakeBurst)
	}
}

func TestMessageRateErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ directive, want string }{
		{"max_message_rate 100", "want N/DURATION"},
		{"max_message_rate 0/s", "at least 1"},
		{"max_message_rate 100/fortnight", "want N/DURATION"},
		{"max_message_rate 2000000/s", "over a million"},
		{"max_message_rate 100/s burst 0", "burst \"0\""},
		{"max_message_rate 100/s burst", "burst needs a number"},
		{"max_message_rate 100/s 1/s sometimes", "unexpected \"sometimes\""},
		{"max_message_rate_per_key 10/s", "needs lb_policy hash"},
		{"handshake_rate fast", "want N/DURATION"},
		{"handshake_rate 10/s -1", "want a whole number"},
	}
	for _, c := range cases {
		body := ":8080 {\n\troute /a {\n\t\tto a:1\n\t\t" + c.directive + "\n\t}\n}\n"
		_, err := Parse(testFile, []byte(body))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), testFile+":4:") {
			t.Errorf("%s: got %v, want %q at line 4", c.directive, err, c.want)
		}
	}
	_, err := Parse(testFile, []byte(":8080 {\n\troute /a {\n\t\tto a:1\n\t\tlb_policy hash ip\n\t\tmax_message_rate 1/s close\n\t\tmax_message_rate_per_key 1/s pause\n\t}\n}\n"))
	if err == nil || !strings.Contains(err.Error(), ":6: ") || !strings.Contains(err.Error(), "share one action") {
		t.Errorf("conflicting actions: %v", err)
	}
}
