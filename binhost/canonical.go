package binhost

import (
	"bytes"

	"github.com/dsnet/compress/bzip2"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
)

// environmentKey is the metadata member holding the build's shell
// environment, which portage sources for pkg_* phases at install time.
const environmentKey = "environment.bz2"

// Canonical is the gateway's rewrite of every covered value into
// exactly what the metadata digest hashed: environment.bz2 loses the
// host-varying variables the digest leaves out (they were never compared
// between peers, so an attacker could hide anything there), every other
// key is trimmed the way the digest reads it.
//
// The standard library only decompresses bzip2; dsnet/compress provides
// the pure-Go encoder portage's reader needs.
func Canonical(key string, raw []byte) ([]byte, error) {
	if key != environmentKey {
		return identity.CanonicalValue(key, raw), nil
	}
	text, err := identity.CanonicalEnvironment(raw)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := bzip2.NewWriter(&buf, &bzip2.WriterConfig{Level: bzip2.BestCompression})
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(text); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
