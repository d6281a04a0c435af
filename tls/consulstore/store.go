// Package consulstore is a certmagic.Storage on Consul's KV store, so that a
// fleet of wsproxy instances shares certificates, ACME accounts, challenge
// tokens, the local CA of `tls internal`, and the locks that keep two
// instances from ordering the same certificate.
//
// Layout under the prefix P (default DefaultPrefix):
//
//	P/data/KEY    one certmagic key: the value as is (a PEM file stays a PEM
//	              file for `consul kv get`), the time it was stored in the
//	              pair's Flags (Unix nanoseconds), for Stat's Modified
//	P/locks/NAME  a held lock: acquired by a Consul session, its value says
//	              who holds it
//
// Reads are consistent (?consistent): a Load after a Store anywhere in the
// fleet sees the Store. "Directories" are implicit, as certmagic defines
// them: a key is a directory when other keys lie under KEY/.
//
// Locks are Consul sessions (TTL, lock-delay, behaviour delete) acquiring
// P/locks/NAME; see Lock.
package consulstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hashicorp/consul/api"
)

// Defaults of Config.
const (
	DefaultPrefix         = "wsproxy"
	DefaultSessionTTL     = 15 * time.Second
	DefaultLockDelay      = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second

	// MinSessionTTL is the shortest session TTL Consul accepts by default
	// (its session_ttl_min).
	MinSessionTTL = 10 * time.Second

	// MaxValueSize is the largest value Consul's KV store takes by default
	// (its kv_max_value_size, 512 KiB). Store refuses larger values with
	// ErrValueTooLarge rather than letting Consul answer 413.
	MaxValueSize = 512 << 10
)

// ErrValueTooLarge is returned (wrapped) by Store for a value over
// MaxValueSize.
var ErrValueTooLarge = errors.New("consulstore: value larger than Consul's 512 KiB KV limit")

// Config says where and how a Store keeps its data.
type Config struct {
	// Client is the Consul API client. Required. The Store does not own it.
	Client *api.Client

	// Prefix is the KV path under which everything is kept, without
	// leading or trailing slashes. Default DefaultPrefix ("wsproxy").
	// Instances that share it share certificates.
	Prefix string

	// SessionTTL is the TTL of a lock's session: the session is renewed
	// every SessionTTL/2 while its holder lives, and a holder that dies
	// loses its locks SessionTTL to 2×SessionTTL later (Consul's rule),
	// plus LockDelay. Default DefaultSessionTTL (15s); Consul refuses less
	// than its session_ttl_min (10s unless the agent's config lowers it).
	SessionTTL time.Duration

	// LockDelay is how long Consul keeps a lock from being taken again
	// after its session was invalidated (not after Unlock): time for a
	// holder that lost its session in a partition to notice and stop.
	// Default DefaultLockDelay (5s). Consul's own default of 15s applies
	// if it is negative; the smallest real value is 1ms.
	LockDelay time.Duration

	// RequestTimeout bounds every request to Consul, on top of the wait of
	// the blocking queries Lock uses. Default DefaultRequestTimeout (10s).
	RequestTimeout time.Duration

	// Logger receives lock events (a lost session); slog.Default() if nil.
	Logger *slog.Logger
}

// Store is a certmagic.Storage, certmagic.TryLocker and
// certmagic.LockLeaseRenewer on Consul KV. Its methods are safe for
// concurrent use. Close releases the locks it holds.
type Store struct {
	kv      *api.KV
	session *api.Session
	cfg     Config
	data    string // Prefix + "/data/"
	locks   string // Prefix + "/locks/"
	log     *slog.Logger

	// closing is cancelled by Close, ending Lock calls that wait.
	closing context.Context
	closeFn context.CancelFunc

	mu     sync.Mutex
	held   map[string]*heldLock // by lock name
	closed bool
}

var (
	_ certmagic.Storage          = (*Store)(nil)
	_ certmagic.TryLocker        = (*Store)(nil)
	_ certmagic.LockLeaseRenewer = (*Store)(nil)
)

// New returns a Store for cfg, with its empty fields set to their
// defaults. It does not contact Consul.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("consulstore: no Consul client")
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.SessionTTL < time.Second {
		return nil, fmt.Errorf("consulstore: session TTL %v is under a second", cfg.SessionTTL)
	}
	if cfg.LockDelay == 0 {
		cfg.LockDelay = DefaultLockDelay
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	closing, closeFn := context.WithCancel(context.Background())
	return &Store{
		closing: closing,
		closeFn: closeFn,
		kv:      cfg.Client.KV(),
		session: cfg.Client.Session(),
		cfg:     cfg,
		data:    cfg.Prefix + "/data/",
		locks:   cfg.Prefix + "/locks/",
		log:     cfg.Logger.With("component", "consulstore"),
		held:    make(map[string]*heldLock),
	}, nil
}

// Prefix returns the KV prefix the Store keeps its data under.
func (s *Store) Prefix() string { return s.cfg.Prefix }

// Locate returns where key lives, for messages: "consul:PREFIX/data/KEY".
func (s *Store) Locate(key string) string { return "consul:" + s.data + cleanKey(key) }

// String describes the Store for logs.
func (s *Store) String() string { return "consul:" + s.cfg.Prefix }

// cleanKey drops the slashes certmagic keys must not have at either end.
func cleanKey(key string) string { return strings.Trim(key, "/") }

// request returns ctx bounded by the request timeout.
func (s *Store) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

func (s *Store) readOpts(ctx context.Context) *api.QueryOptions {
	return (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
}

// Store puts value at key, recording the time in the pair's Flags.
func (s *Store) Store(ctx context.Context, key string, value []byte) error {
	key = cleanKey(key)
	if key == "" {
		return errors.New("consulstore: store: empty key")
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("consulstore: store %s: %d bytes: %w", key, len(value), ErrValueTooLarge)
	}
	ctx, cancel := s.request(ctx)
	defer cancel()
	p := &api.KVPair{Key: s.data + key, Value: value, Flags: uint64(time.Now().UnixNano())}
	if _, err := s.kv.Put(p, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consulstore: store %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Store) Load(ctx context.Context, key string) ([]byte, error) {
	key = cleanKey(key)
	if key == "" {
		return nil, fmt.Errorf("consulstore: load of the root: %w", fs.ErrNotExist)
	}
	ctx, cancel := s.request(ctx)
	defer cancel()
	p, _, err := s.kv.Get(s.data+key, s.readOpts(ctx))
	if err != nil {
		return nil, fmt.Errorf("consulstore: load %s: %w", key, err)
	}
	if p == nil {
		return nil, fmt.Errorf("consulstore: load %s: %w", key, fs.ErrNotExist)
	}
	return p.Value, nil
}

// Delete removes key and, when it is a directory, every key under it, in
// one transaction. A key that does not exist is no error.
func (s *Store) Delete(ctx context.Context, key string) error {
	key = cleanKey(key)
	if key == "" {
		return errors.New("consulstore: delete: empty key (refusing to delete everything)")
	}
	ctx, cancel := s.request(ctx)
	defer cancel()
	ops := api.KVTxnOps{
		{Verb: api.KVDelete, Key: s.data + key},
		{Verb: api.KVDeleteTree, Key: s.data + key + "/"},
	}
	ok, resp, _, err := s.kv.Txn(ops, s.readOpts(ctx))
	if err != nil {
		return fmt.Errorf("consulstore: delete %s: %w", key, err)
	}
	if !ok {
		return fmt.Errorf("consulstore: delete %s: transaction refused: %v", key, txnErrors(resp))
	}
	return nil
}

func txnErrors(resp *api.KVTxnResponse) string {
	if resp == nil || len(resp.Errors) == 0 {
		return "no reason given"
	}
	msgs := make([]string, len(resp.Errors))
	for i, e := range resp.Errors {
		msgs[i] = e.What
	}
	return strings.Join(msgs, "; ")
}

// Exists reports whether key is a file or a directory. An error reaching
// Consul reports false (certmagic's contract has no error here).
func (s *Store) Exists(ctx context.Context, key string) bool {
	key = cleanKey(key)
	if key == "" {
		return false
	}
	file, dir, err := s.kind(ctx, key)
	return err == nil && (file || dir)
}

// kind reports whether key is a file and whether it is a directory (it can
// be both in Consul, though certmagic never makes it so), in one request:
// the keys beginning with KEY, cut at the next slash, include KEY itself
// for a file and KEY/ for a directory.
func (s *Store) kind(ctx context.Context, key string) (file, dir bool, err error) {
	ctx, cancel := s.request(ctx)
	defer cancel()
	full := s.data + key
	keys, _, err := s.kv.Keys(full, "/", s.readOpts(ctx))
	if err != nil {
		return false, false, fmt.Errorf("consulstore: %s: %w", key, err)
	}
	for _, k := range keys {
		switch k {
		case full:
			file = true
		case full + "/":
			dir = true
		}
	}
	return file, dir, nil
}

// Stat describes key: a file with its size and the time it was stored
// (zero for a pair written by something else than a Store), or a
// directory (IsTerminal false, no size or time). A key that is neither is
// an error wrapping fs.ErrNotExist.
func (s *Store) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = cleanKey(key)
	if key == "" {
		return certmagic.KeyInfo{Key: key}, nil // the root: a directory
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	p, _, err := s.kv.Get(s.data+key, s.readOpts(rctx))
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("consulstore: stat %s: %w", key, err)
	}
	if p != nil {
		ki := certmagic.KeyInfo{Key: key, Size: int64(len(p.Value)), IsTerminal: true}
		if p.Flags != 0 {
			ki.Modified = time.Unix(0, int64(p.Flags))
		}
		return ki, nil
	}
	_, dir, err := s.kind(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("consulstore: stat: %w", err)
	}
	if !dir {
		return certmagic.KeyInfo{}, fmt.Errorf("consulstore: stat %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key}, nil
}

// List returns the keys under dir, each as a full key (dir/name...), sorted,
// as certmagic's FileStorage does: its files and directories when not
// recursive; with recursive, every file and directory below it at any
// depth. A dir that is a file has no keys under it (no error); one that
// does not exist is an error wrapping fs.ErrNotExist.
func (s *Store) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = cleanKey(dir)
	base := s.data
	if dir != "" {
		base += dir + "/"
	}
	sep := "/"
	if recursive {
		sep = ""
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	keys, _, err := s.kv.Keys(base, sep, s.readOpts(rctx))
	if err != nil {
		return nil, fmt.Errorf("consulstore: list %s: %w", dir, err)
	}
	seen := make(map[string]bool)
	var out []string
	add := func(rel string) {
		if rel == "" || seen[rel] {
			return
		}
		seen[rel] = true
		out = append(out, path.Join(dir, rel))
	}
	for _, k := range keys {
		rel := strings.TrimSuffix(strings.TrimPrefix(k, base), "/")
		if recursive {
			// Leaves only come back: add the directories above each one.
			for i := range len(rel) {
				if rel[i] == '/' {
					add(rel[:i])
				}
			}
		}
		add(rel)
	}
	if len(out) == 0 {
		if dir != "" {
			if file, _, err := s.kind(ctx, dir); err != nil {
				return nil, fmt.Errorf("consulstore: list: %w", err)
			} else if file {
				return nil, nil
			}
		}
		return nil, fmt.Errorf("consulstore: list %s: %w", dir, fs.ErrNotExist)
	}
	slices.Sort(out)
	return out, nil
}

// lockKey is the KV key of a lock name; one path segment whatever the name.
func (s *Store) lockKey(name string) string { return s.locks + url.PathEscape(name) }
