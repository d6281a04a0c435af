package installed

import (
	"os"
	"path/filepath"
	"testing"
)

// TestScriptsHonourWSPROXY_CACHE: both install scripts look for their
// install under $WSPROXY_CACHE when it is set, and find a complete one
// there without building (PATH is emptied, so a build could not even
// start, and HOME points nowhere).
func TestScriptsHonourWSPROXY_CACHE(t *testing.T) {
	t.Parallel()
	cache := t.TempDir()
	exe := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pebble := filepath.Join(cache, "pebble-vtest")
	exe(filepath.Join(pebble, "pebble"))
	exe(filepath.Join(pebble, "pebble-challtestsrv"))
	for _, f := range []string{"cert.pem", "key.pem", "pebble.minica.pem"} {
		exe(filepath.Join(pebble, "certs", f)) // non-empty is all the script asks
	}
	consul := filepath.Join(cache, "consul", "consul-vtest")
	exe(consul)

	env := []string{"WSPROXY_CACHE=" + cache, "HOME=" + filepath.Join(cache, "no-home"), "XDG_CACHE_HOME=", "PATH=" + filepath.Join(cache, "no-bin")}
	for script, want := range map[string]string{
		"install-pebble.sh": filepath.Join(pebble, "pebble"),
		"install-consul.sh": consul,
	} {
		got, err := Binary("WSPROXY_TEST_UNSET_BINARY", script, append(env, "PEBBLE_VERSION=vtest", "CONSUL_VERSION=vtest")...)
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", script, got, err, want)
		}
	}
}
