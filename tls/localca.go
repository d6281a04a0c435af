package tls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

const (
	// localCAIssuerKey names the local CA's certificates in storage
	// (certificates/wsproxy-local/NAME/).
	localCAIssuerKey = "wsproxy-local"
	// localRootLifetime is how long a new local root is valid.
	localRootLifetime = 10 * 365 * 24 * time.Hour
	// localLeafLifetime is how long a `tls internal` certificate is valid;
	// certmagic renews it when a third of that is left.
	localLeafLifetime = 7 * 24 * time.Hour
	// localRootLock is the storage lock held while the root is created, so
	// that two instances sharing storage create one root.
	localRootLock = "wsproxy_local_root"
)

// Storage keys of the local CA's root.
const (
	localRootCertKey = "pki/root.crt"
	localRootKeyKey  = "pki/root.key"
)

// localCA is the CA behind `tls internal`: one self-signed ECDSA P-256 root
// kept in the storage (pki/root.crt and pki/root.key: files under
// StorageDir, or keys in Consul), signing leaves directly (no intermediate).
// Instances sharing the storage share the root. It is a certmagic.Issuer,
// so certmagic stores, caches and renews its certificates like any others.
// Caddy's pki app plays this part in Caddy; certmagic has no local CA of its
// own.
type localCA struct {
	storage certmagic.Storage

	mu      sync.RWMutex
	root    *x509.Certificate
	key     crypto.Signer
	loadErr error
}

var _ certmagic.Issuer = (*localCA)(nil)

func newLocalCA(storage certmagic.Storage) *localCA {
	return &localCA{storage: storage}
}

// RootPath is where the root certificate is: what a user trusts to trust
// `tls internal` certificates. A file name with file storage.
func (ca *localCA) RootPath() string { return locate(ca.storage, localRootCertKey) }

func (ca *localCA) keyPath() string { return locate(ca.storage, localRootKeyKey) }

// locate names a storage key for people: a file name, or what the storage
// says (consul:PREFIX/data/KEY).
func locate(s certmagic.Storage, key string) string {
	switch st := s.(type) {
	case *certmagic.FileStorage:
		return st.Filename(key)
	case interface{ Locate(string) string }:
		return st.Locate(key)
	}
	return key
}

// load reads the root, creating it first if there is none. Creation happens
// under the storage's lock, and the root is read again once the lock is
// held: instances sharing the storage that start together make one root.
func (ca *localCA) load(ctx context.Context) error {
	root, key, err := ca.read(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		if err := ca.storage.Lock(ctx, localRootLock); err != nil {
			return fmt.Errorf("local CA: locking storage: %w", err)
		}
		defer ca.storage.Unlock(context.WithoutCancel(ctx), localRootLock) //nolint:errcheck // nothing to do about it
		// Another instance may have made it meanwhile.
		root, key, err = ca.read(ctx)
		if errors.Is(err, fs.ErrNotExist) {
			root, key, err = ca.create(ctx)
		}
	}
	if err != nil {
		return err
	}
	if time.Now().After(root.NotAfter) {
		return fmt.Errorf("local CA root %s expired on %s; remove it and its key to create a new one (and trust the new one)", ca.RootPath(), root.NotAfter.Format(time.DateOnly))
	}
	ca.mu.Lock()
	ca.root, ca.key = root, key
	ca.mu.Unlock()
	return nil
}

// read loads the root certificate and key; fs.ErrNotExist if there is no
// certificate. The key is written first, so a certificate without its key
// is an error, while a key without its certificate is a root not finished
// (or abandoned) by its creator, which holds the lock: not there yet.
func (ca *localCA) read(ctx context.Context) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := ca.storage.Load(ctx, localRootCertKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fs.ErrNotExist
	}
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	keyPEM, err := ca.storage.Load(ctx, localRootKeyKey)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: key %s: %w", ca.keyPath(), err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("local CA: %s holds no PEM certificate", ca.RootPath())
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: %s: %w", ca.RootPath(), err)
	}
	kblock, _ := pem.Decode(keyPEM)
	if kblock == nil {
		return nil, nil, fmt.Errorf("local CA: %s holds no PEM key", ca.keyPath())
	}
	k, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: %s: %w", ca.keyPath(), err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("local CA: %s: key of type %T cannot sign", ca.keyPath(), k)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(root.PublicKey) {
		return nil, nil, fmt.Errorf("local CA: %s does not match %s", ca.keyPath(), ca.RootPath())
	}
	return root, key, nil
}

// create makes a new root and stores it, key first (see read).
func (ca *localCA) create(ctx context.Context) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "wsproxy Local Root " + now.Format("2006-01-02"), Organization: []string{"wsproxy"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(localRootLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	if err := ca.storage.Store(ctx, localRootKeyKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	if err := ca.storage.Store(ctx, localRootCertKey, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	if fst, ok := ca.storage.(*certmagic.FileStorage); ok {
		// File storage writes 0600; the root is public, and users point
		// other programs (curl, node, update-ca-certificates) at it.
		if err := os.Chmod(fst.Filename(localRootCertKey), 0o644); err != nil {
			return nil, nil, fmt.Errorf("local CA: %w", err)
		}
	}
	return root, key, nil
}

// IssuerKey implements certmagic.Issuer.
func (ca *localCA) IssuerKey() string { return localCAIssuerKey }

// Issue implements certmagic.Issuer: it signs csr's names with the root.
func (ca *localCA) Issue(_ context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	ca.mu.RLock()
	root, key := ca.root, ca.key
	ca.mu.RUnlock()
	if root == nil {
		return nil, errors.New("local CA: not loaded (Manager not started)")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("local CA: CSR signature: %w", err)
	}
	if len(csr.DNSNames) == 0 && len(csr.IPAddresses) == 0 {
		return nil, errors.New("local CA: CSR has no names")
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(localLeafLifetime)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	usage := x509.KeyUsageDigitalSignature
	if _, isRSA := csr.PublicKey.(*rsa.PublicKey); isRSA {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               csr.Subject,
		DNSNames:              csr.DNSNames,
		IPAddresses:           csr.IPAddresses,
		NotBefore:             now.Add(-5 * time.Minute), // clock skew
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, csr.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("local CA: signing: %w", err)
	}
	return &certmagic.IssuedCertificate{
		Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("local CA: serial: %w", err)
	}
	return serial, nil
}
