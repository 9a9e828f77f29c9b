package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/dsnet/compress/bzip2"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// ServedValue is the served form's rewrite of one covered metadata value
// into exactly what the metadata digest hashed: environment.bz2 loses the
// host-varying variables the digest leaves out (they were never compared
// between peers, so an attacker could hide anything there), every other
// key is trimmed the way the digest reads it.
//
// The standard library only decompresses bzip2; dsnet/compress provides
// the pure-Go encoder portage's reader needs.
func ServedValue(key string, raw []byte) ([]byte, error) {
	if key != environmentKey {
		return CanonicalValue(key, raw), nil
	}
	text, err := CanonicalEnvironment(raw)
	if err != nil {
		return nil, err
	}
	return compressEnvironment(text)
}

// envWriters recycles bzip2 writers: a new one allocates its 900 kB block
// and sorting buffers, for every package the daemon indexes. Reset keeps
// only those buffers, so the output is that of a new writer.
var envWriters sync.Pool

// compressEnvironment is the served environment.bz2 of its text.
func compressEnvironment(text []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, _ := envWriters.Get().(*bzip2.Writer)
	if w == nil {
		var err error
		if w, err = bzip2.NewWriter(&buf, &bzip2.WriterConfig{Level: bzip2.BestCompression}); err != nil {
			return nil, err
		}
	} else if err := w.Reset(&buf); err != nil {
		return nil, err
	}
	defer func() { _ = w.Reset(nil); envWriters.Put(w) }()
	if _, err := w.Write(text); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// servedRewrite keeps the covered keys, rewritten by ServedValue.
func servedRewrite(key string, raw []byte) ([]byte, bool, error) {
	if !IsCovered(key) {
		return nil, false, nil
	}
	v, err := ServedValue(key, raw)
	return v, err == nil, err
}

// ServedMetadata is the metadata the served form of a build carries: the
// covered keys in their canonical form, BUILD_ID and BUILD_TIME.
func ServedMetadata(m *xpak.Metadata, buildID int64, buildTime time.Time) (*xpak.Metadata, error) {
	return xpak.ServedMetadata(m, servedRewrite, buildID, buildTime)
}

// ServedBuildID is the BUILD_ID every gateway serves a build key under:
// stable across restarts and peers, distinct for two builds of one CPV
// (other USE) but for a 1-in-10⁹ collision, and always ten digits, so the
// served metadata's size does not depend on it.
func ServedBuildID(bk keys.Build) int64 {
	h := sha256.Sum256([]byte(bk))
	return 1_000_000_000 + int64(binary.BigEndian.Uint64(h[:8])%1_000_000_000)
}

// ServedSizes are the served form's tar sizes of a package read by
// xpak.ReadFile: what its attestation states so that gateways can list it
// before fetching it.
func ServedSizes(pkg *xpak.Package) (xpak.ServedSizes, error) {
	return servedSizes(pkg, servedRewrite)
}

func servedSizes(pkg *xpak.Package, rewrite func(key string, raw []byte) ([]byte, bool, error)) (xpak.ServedSizes, error) {
	if pkg.ImageTarSize <= 0 {
		return xpak.ServedSizes{}, fmt.Errorf("%w: the image holds an entry the served form does not carry", xpak.ErrImageEntry)
	}
	// Placeholders of the served widths: ten-digit BUILD_ID and time.
	m, err := xpak.ServedMetadata(pkg.Metadata, rewrite, 1_000_000_000, time.Unix(1_000_000_000, 0))
	if err != nil {
		return xpak.ServedSizes{}, err
	}
	n, err := xpak.MetadataTarSize(m)
	if err != nil {
		return xpak.ServedSizes{}, err
	}
	return xpak.ServedSizes{MetadataTar: n, ImageTar: pkg.ImageTarSize}, nil
}
