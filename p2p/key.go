package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// ErrKeyPermissions is returned when the identity key file is readable or
// writable by group or others. The key is the node's identity and signs its
// attestations: a key others could read must be treated as leaked, so it is
// refused rather than warned about (fix with chmod 600).
var ErrKeyPermissions = errors.New("p2p: identity key file has group/other permissions")

// ErrKeyFormat is returned when the key file does not hold a libp2p-encoded
// Ed25519 private key.
var ErrKeyFormat = errors.New("p2p: identity key file is not an Ed25519 libp2p private key")

// LoadOrCreateKey returns the Ed25519 identity stored at path, creating it
// on first use so a node keeps its peer ID (and its attestation history)
// across restarts.
//
// The file holds the libp2p protobuf encoding (crypto.MarshalPrivateKey),
// mode 0600. Creation is atomic: the key is written to a temporary file in
// the same directory, fsynced, then hard-linked into place, so a crash never
// leaves a truncated key and two racing starts agree on one key. An existing
// file with any group/other permission bit is refused (ErrKeyPermissions).
func LoadOrCreateKey(path string) (crypto.PrivKey, error) {
	key, err := loadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: generate identity key: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("p2p: encode identity key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("p2p: create key directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".identity-*.tmp") // CreateTemp uses mode 0600
	if err != nil {
		return nil, fmt.Errorf("p2p: create temporary key file in %s: %w", dir, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if _, err := tmp.Write(raw); err != nil {
		_ = tmp.Close() // the deferred Remove discards the file; the write error is the one to report
		return nil, fmt.Errorf("p2p: write %s: %w", tmpName, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return nil, fmt.Errorf("p2p: chmod %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return nil, fmt.Errorf("p2p: fsync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("p2p: close %s: %w", tmpName, err)
	}
	// Link, unlike rename, fails when path exists: a concurrent creator wins
	// and we load its key instead of replacing it.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadKey(path)
		}
		return nil, fmt.Errorf("p2p: install key file %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // persist the directory entry; best effort on odd filesystems
		_ = d.Close()
	}
	return priv, nil
}

func loadKey(path string) (crypto.PrivKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: open key file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("p2p: stat key file %s: %w", path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600", ErrKeyPermissions, path, perm)
	}
	const maxKeyFile = 4096
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("p2p: read key file %s: %w", path, err)
	}
	if len(raw) > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrKeyFormat, path, maxKeyFile)
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFormat, path, err)
	}
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: %s holds a %s key", ErrKeyFormat, path, key.Type())
	}
	return key, nil
}
