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
	"path/filepath"
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

// localCA is the CA behind `tls internal`: one self-signed ECDSA P-256 root
// kept in StorageDir/pki, signing leaves directly (no intermediate). It is a
// certmagic.Issuer, so certmagic stores, caches and renews its certificates
// like any others. Caddy's pki app plays this part in Caddy; certmagic has no
// local CA of its own.
type localCA struct {
	dir     string // StorageDir/pki
	storage certmagic.Storage

	mu      sync.RWMutex
	root    *x509.Certificate
	key     crypto.Signer
	loadErr error
}

var _ certmagic.Issuer = (*localCA)(nil)

func newLocalCA(storageDir string, storage certmagic.Storage) *localCA {
	return &localCA{dir: filepath.Join(storageDir, "pki"), storage: storage}
}

// RootPath is the root certificate's file: what a user trusts to trust
// `tls internal` certificates.
func (ca *localCA) RootPath() string { return filepath.Join(ca.dir, "root.crt") }

func (ca *localCA) keyPath() string { return filepath.Join(ca.dir, "root.key") }

// load reads the root, creating it first if there is none.
func (ca *localCA) load(ctx context.Context) error {
	root, key, err := ca.read()
	if errors.Is(err, fs.ErrNotExist) {
		if err := ca.storage.Lock(ctx, localRootLock); err != nil {
			return fmt.Errorf("local CA: locking storage: %w", err)
		}
		defer ca.storage.Unlock(context.WithoutCancel(ctx), localRootLock) //nolint:errcheck // nothing to do about it
		// Another instance may have made it meanwhile.
		root, key, err = ca.read()
		if errors.Is(err, fs.ErrNotExist) {
			root, key, err = ca.create()
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

// read loads the root certificate and key; fs.ErrNotExist if neither exists.
func (ca *localCA) read() (*x509.Certificate, crypto.Signer, error) {
	certPEM, errCert := os.ReadFile(ca.RootPath())
	keyPEM, errKey := os.ReadFile(ca.keyPath())
	if errors.Is(errCert, fs.ErrNotExist) && errors.Is(errKey, fs.ErrNotExist) {
		return nil, nil, fs.ErrNotExist
	}
	if errCert != nil {
		return nil, nil, fmt.Errorf("local CA: %w", errCert)
	}
	if errKey != nil {
		return nil, nil, fmt.Errorf("local CA: %w", errKey)
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

// create makes a new root and writes it, key first, each file atomically.
func (ca *localCA) create() (*x509.Certificate, crypto.Signer, error) {
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
	if err := os.MkdirAll(ca.dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	if err := writeFileAtomic(ca.keyPath(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
	}
	if err := writeFileAtomic(ca.RootPath(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, fmt.Errorf("local CA: %w", err)
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

// writeFileAtomic writes data to a temporary file beside name and renames it
// into place.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) //nolint:errcheck // gone after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
