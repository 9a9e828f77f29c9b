// Package keys is the vocabulary of the DHT keys every job shares.
//
// A build key names one build: the canonical encoding of its descriptor
// (cpv, ebuild, eclasses, USE, CHOST and the compiler and linker flags, and
// the library ABIs it linked against: slot-operator deps and REQUIRES) as a
// CIDv1, codec raw (0x55), multihash sha2-256. It is the DHT key under
// which peers provide and attest builds.
//
// A variant key names the same without the linked libraries: every build
// of this cpv, ebuild, USE and flags, whatever libraries it linked. A peer
// that cannot yet resolve its libraries looks builds up by it and picks one
// whose slot deps its system satisfies.
//
// identity computes both from a descriptor (docs/PROTOCOL.md, section
// "Identities"). Both are the canonical CID string, so their JSON and text
// forms are exactly the strings the wire format and the stored records have
// always carried. The package imports nothing of ours.
package keys

import (
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// ErrInvalid means a string is not a valid CID.
var ErrInvalid = errors.New("keys: not a valid CID")

// Build is a build key: the canonical string of a CIDv1 (raw, sha2-256)
// over a build descriptor's canonical encoding.
type Build string

// Variant is a variant key: the canonical string of a CIDv1 (raw,
// sha2-256) over a descriptor's variant encoding (without the linked
// libraries).
type Variant string

// ParseBuild parses s as a build key; s must be a valid CID. The result is
// the CID's canonical string, so one build never has two spellings.
func ParseBuild(s string) (Build, error) {
	c, err := parse(s)
	if err != nil {
		return "", fmt.Errorf("build key: %w", err)
	}
	return BuildFromCID(c), nil
}

// ParseVariant parses s as a variant key; s must be a valid CID. The
// result is the CID's canonical string.
func ParseVariant(s string) (Variant, error) {
	c, err := parse(s)
	if err != nil {
		return "", fmt.Errorf("variant key: %w", err)
	}
	return VariantFromCID(c), nil
}

func parse(s string) (cid.Cid, error) {
	if s == "" {
		return cid.Undef, fmt.Errorf("%w: empty", ErrInvalid)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %q: %v", ErrInvalid, s, err)
	}
	return c, nil
}

// BuildFromCID is the build key of c (its canonical string).
func BuildFromCID(c cid.Cid) Build { return Build(c.String()) }

// VariantFromCID is the variant key of c (its canonical string).
func VariantFromCID(c cid.Cid) Variant { return Variant(c.String()) }

// CID decodes the build key, for the network layer.
func (b Build) CID() (cid.Cid, error) { return parse(string(b)) }

// String is the key as written on the wire.
func (b Build) String() string { return string(b) }

// CID decodes the variant key, for the network layer.
func (v Variant) CID() (cid.Cid, error) { return parse(string(v)) }

// String is the key as written on the wire.
func (v Variant) String() string { return string(v) }
