package consulstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hashicorp/consul/api"

	"github.com/wsproxy/wsproxy/discovery/consultest"
)

// agent is the one Consul agent of the package's tests; each test works
// under a prefix of its own.
var agent *consultest.Agent

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	a, err := consultest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "consulstore tests:", err)
		os.Exit(1)
	}
	agent = a
	code := m.Run()
	if err := a.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "consulstore tests:", err)
	}
	os.Exit(code)
}

var prefixes atomic.Int64

// newStore returns a Store on the test agent under a fresh prefix (or the
// given one), closed when t ends.
func newStore(t testing.TB, prefix string, mod ...func(*Config)) *Store {
	t.Helper()
	if prefix == "" {
		prefix = fmt.Sprintf("test-%d-%d", os.Getpid(), prefixes.Add(1))
	}
	cfg := Config{Client: agent.Client(t), Prefix: prefix, SessionTTL: MinSessionTTL, LockDelay: time.Millisecond}
	for _, f := range mod {
		f(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestContract runs certmagic's documented Storage contract, step by step
// over one tree, against a real agent:
//
//	a/b/c.crt  a/b/d.key  a/e.json  ab/x  (ab is no part of a)
func TestContract(t *testing.T) {
	t.Parallel()
	s := newStore(t, "")
	ctx := ctxT(t, time.Minute)
	before := time.Now()
	files := map[string]string{"a/b/c.crt": "CERT", "a/b/d.key": "KEY", "a/e.json": "{}", "ab/x": "x", "/slashes/": "trimmed"}

	type step struct {
		name string
		run  func(t *testing.T)
	}
	notExist := func(err error) bool { return errors.Is(err, fs.ErrNotExist) }
	load := func(key, want string) func(*testing.T) {
		return func(t *testing.T) {
			got, err := s.Load(ctx, key)
			if err != nil || string(got) != want {
				t.Fatalf("Load(%q) = %q, %v; want %q", key, got, err, want)
			}
		}
	}
	loadMissing := func(key string) func(*testing.T) {
		return func(t *testing.T) {
			if got, err := s.Load(ctx, key); !notExist(err) {
				t.Fatalf("Load(%q) = %q, %v; want fs.ErrNotExist", key, got, err)
			}
		}
	}
	exists := func(key string, want bool) func(*testing.T) {
		return func(t *testing.T) {
			if got := s.Exists(ctx, key); got != want {
				t.Fatalf("Exists(%q) = %v, want %v", key, got, want)
			}
		}
	}
	list := func(dir string, recursive bool, want ...string) func(*testing.T) {
		return func(t *testing.T) {
			got, err := s.List(ctx, dir, recursive)
			if len(want) == 0 {
				if err != nil || len(got) != 0 {
					t.Fatalf("List(%q, %v) = %q, %v; want nothing", dir, recursive, got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("List(%q, %v) = %q, %v; want %q", dir, recursive, got, err, want)
			}
		}
	}
	listMissing := func(dir string, recursive bool) func(*testing.T) {
		return func(t *testing.T) {
			if got, err := s.List(ctx, dir, recursive); !notExist(err) {
				t.Fatalf("List(%q, %v) = %q, %v; want fs.ErrNotExist", dir, recursive, got, err)
			}
		}
	}
	stat := func(key string, terminal bool, size int64) func(*testing.T) {
		return func(t *testing.T) {
			ki, err := s.Stat(ctx, key)
			if err != nil || ki.Key != strings.Trim(key, "/") || ki.IsTerminal != terminal || ki.Size != size {
				t.Fatalf("Stat(%q) = %+v, %v; want key %q, terminal %v, size %d", key, ki, err, key, terminal, size)
			}
			if terminal && (ki.Modified.Before(before) || ki.Modified.After(time.Now())) {
				t.Fatalf("Stat(%q).Modified = %v, not between %v and now", key, ki.Modified, before)
			}
		}
	}
	statMissing := func(key string) func(*testing.T) {
		return func(t *testing.T) {
			if ki, err := s.Stat(ctx, key); !notExist(err) {
				t.Fatalf("Stat(%q) = %+v, %v; want fs.ErrNotExist", key, ki, err)
			}
		}
	}
	del := func(key string) func(*testing.T) {
		return func(t *testing.T) {
			if err := s.Delete(ctx, key); err != nil {
				t.Fatalf("Delete(%q): %v", key, err)
			}
		}
	}

	steps := []step{
		{"empty: Load is ErrNotExist", loadMissing("a/b/c.crt")},
		{"empty: Stat is ErrNotExist", statMissing("a")},
		{"empty: List is ErrNotExist", listMissing("a", true)},
		{"empty: List of the root is ErrNotExist", listMissing("", false)},
		{"empty: Exists is false", exists("a", false)},
		{"empty: Delete of a missing key is no error", del("a/b/c.crt")},
		{"Store", func(t *testing.T) {
			for k, v := range files {
				if err := s.Store(ctx, k, []byte(v)); err != nil {
					t.Fatalf("Store(%q): %v", k, err)
				}
			}
		}},
		{"Load a file", load("a/b/c.crt", "CERT")},
		{"keys lose leading and trailing slashes", load("slashes", "trimmed")},
		{"Store overwrites", func(t *testing.T) {
			if err := s.Store(ctx, "a/b/c.crt", []byte("CERT2")); err != nil {
				t.Fatal(err)
			}
			load("a/b/c.crt", "CERT2")(t)
		}},
		{"Load of a directory is ErrNotExist", loadMissing("a/b")},
		{"Load of a partial component is ErrNotExist", loadMissing("a/b/c")},
		{"Exists: a file", exists("a/b/c.crt", true)},
		{"Exists: a directory", exists("a/b", true)},
		{"Exists: a top directory", exists("a", true)},
		{"Exists: a partial component is not a key", exists("a/b/c", false)},
		{"Exists: a string prefix is not a directory", exists("a/b/d", false)},
		{"Stat: a file is terminal with size and time", stat("a/b/c.crt", true, 5)},
		{"Stat: a directory is not terminal", stat("a/b", false, 0)},
		{"Stat: a partial component is ErrNotExist", statMissing("a/e")},
		{"List: one level", list("a", false, "a/b", "a/e.json")},
		{"List: recursive, directories included", list("a", true, "a/b", "a/b/c.crt", "a/b/d.key", "a/e.json")},
		{"List: the root, one level", list("", false, "a", "ab", "slashes")},
		{"List: a file has nothing under it", list("a/e.json", false)},
		{"List: a partial component is ErrNotExist", listMissing("a/b/c", false)},
		{"Delete a directory: everything under it", del("a/b")},
		{"  its files are gone", loadMissing("a/b/d.key")},
		{"  it is gone", exists("a/b", false)},
		{"  its sibling stays", load("a/e.json", "{}")},
		{"Delete a top directory", del("a")},
		{"  a is gone", exists("a", false)},
		{"  ab, a string prefix of it, stays", load("ab/x", "x")},
		{"Delete a file", del("ab/x")},
		{"  and again: no error", del("ab/x")},
		{"  its directory is gone with it", exists("ab", false)},
		{"Delete of the root is refused", func(t *testing.T) {
			if err := s.Delete(ctx, ""); err == nil {
				t.Fatal("Delete(\"\") deleted everything")
			}
			load("slashes", "trimmed")(t)
		}},
		{"values up to 512 KiB are stored", func(t *testing.T) {
			v := bytes.Repeat([]byte{'x'}, MaxValueSize)
			if err := s.Store(ctx, "big/max", v); err != nil {
				t.Fatalf("Store of %d bytes: %v", len(v), err)
			}
			got, err := s.Load(ctx, "big/max")
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("Load of %d bytes: %d bytes, %v", len(v), len(got), err)
			}
		}},
		{"values over 512 KiB are refused with a clear error", func(t *testing.T) {
			err := s.Store(ctx, "big/over", make([]byte, MaxValueSize+1))
			if !errors.Is(err, ErrValueTooLarge) || !strings.Contains(err.Error(), "512 KiB") {
				t.Fatalf("Store of 512 KiB + 1: %v, want ErrValueTooLarge", err)
			}
			exists("big/over", false)(t)
		}},
		{"a cancelled context fails", func(t *testing.T) {
			c, cancel := context.WithCancel(ctx)
			cancel()
			if err := s.Store(c, "cancelled", []byte("x")); err == nil {
				t.Fatal("Store with a cancelled context succeeded")
			}
		}},
	}
	for _, st := range steps {
		if !t.Run(st.name, st.run) {
			return
		}
	}
}

// TestReadsAreConsistentAcrossStores: what one Store (one instance) writes,
// another with its own client reads at once, and sees deleted at once.
func TestReadsAreConsistentAcrossStores(t *testing.T) {
	t.Parallel()
	a := newStore(t, "")
	b := newStore(t, a.Prefix())
	ctx := ctxT(t, time.Minute)
	for i := range 20 {
		key := fmt.Sprintf("certificates/x/%d.crt", i)
		want := fmt.Sprintf("v%d", i)
		if err := a.Store(ctx, key, []byte(want)); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Load(ctx, key); err != nil || string(got) != want {
			t.Fatalf("b.Load(%q) right after a.Store = %q, %v; want %q", key, got, err, want)
		}
		if err := a.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if b.Exists(ctx, key) {
			t.Fatalf("b.Exists(%q) right after a.Delete", key)
		}
	}
}

// TestValuesAreRawInConsul: a certificate is a plain PEM file for `consul
// kv get PREFIX/data/KEY`, and Consul's own writes are read back (with no
// modification time, which Stat then leaves zero).
func TestValuesAreRawInConsul(t *testing.T) {
	t.Parallel()
	s := newStore(t, "")
	ctx := ctxT(t, time.Minute)
	if err := s.Store(ctx, "pki/root.crt", []byte("-----BEGIN CERTIFICATE-----\n")); err != nil {
		t.Fatal(err)
	}
	kv := agent.Client(t).KV()
	p, _, err := kv.Get(s.Prefix()+"/data/pki/root.crt", nil)
	if err != nil || p == nil || string(p.Value) != "-----BEGIN CERTIFICATE-----\n" {
		t.Fatalf("raw pair: %+v, %v", p, err)
	}
	if _, err := kv.Put(&api.KVPair{Key: s.Prefix() + "/data/by/hand", Value: []byte("hi")}, nil); err != nil {
		t.Fatal(err)
	}
	ki, err := s.Stat(ctx, "by/hand")
	if err != nil || !ki.IsTerminal || ki.Size != 2 || !ki.Modified.IsZero() {
		t.Fatalf("Stat of a pair written by hand = %+v, %v", ki, err)
	}
	if s.Locate("pki/root.crt") != "consul:"+s.Prefix()+"/data/pki/root.crt" {
		t.Errorf("Locate = %q", s.Locate("pki/root.crt"))
	}
}

// TestCertmagicUsesIt: certmagic's own storage check and key helpers work
// over the Store (what a renewal runs before it locks).
func TestCertmagicUsesIt(t *testing.T) {
	t.Parallel()
	s := newStore(t, "")
	ctx := ctxT(t, time.Minute)
	key := certmagic.StorageKeys.SiteCert("acme-v02", "example.com")
	if err := s.Store(ctx, key, []byte("cert")); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx, certmagic.StorageKeys.CertsPrefix("acme-v02"), false)
	if err != nil || !slices.Equal(got, []string{certmagic.StorageKeys.CertsSitePrefix("acme-v02", "example.com")}) {
		t.Fatalf("List of the issuer's certificates = %q, %v", got, err)
	}
}
