package trust

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// ContentID is the pair of digests peers vote on: the image digest (the
// installed files, xpak.ImageDigest) and the metadata digest (what portage
// executes and resolves, identity.MetadataDigest). Two honest builds of one
// build key have the same ContentID. This package imports neither: the
// daemon fills in the two digests.
type ContentID struct {
	// Image is the image digest v1 (docs/PROTOCOL.md).
	Image [32]byte
	// Metadata is the metadata digest v1 (docs/PROTOCOL.md).
	Metadata [32]byte
}

// String returns "<image hex>.<metadata hex>", the form signed in
// endorsements and shown in explanations.
func (c ContentID) String() string {
	return hex.EncodeToString(c.Image[:]) + "." + hex.EncodeToString(c.Metadata[:])
}

// IsZero reports whether c is unset; a zero content id is never valid in an
// attestation.
func (c ContentID) IsZero() bool { return c == ContentID{} }

// MarshalText encodes c as String does, so JSON carries it as one string.
func (c ContentID) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses the String form; it accepts lowercase hex only, so
// every content id has exactly one encoding.
func (c *ContentID) UnmarshalText(b []byte) error {
	parsed, err := ParseContentID(string(b))
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// ParseContentID parses "<image hex>.<metadata hex>" (64 lowercase hex digits
// each).
func ParseContentID(s string) (ContentID, error) {
	img, meta, ok := strings.Cut(s, ".")
	if !ok {
		return ContentID{}, fmt.Errorf("%w: content id %q: want <image>.<metadata>", ErrMalformed, s)
	}
	var c ContentID
	if err := parseDigest(img, &c.Image); err != nil {
		return ContentID{}, fmt.Errorf("%w: content id image digest: %v", ErrMalformed, err)
	}
	if err := parseDigest(meta, &c.Metadata); err != nil {
		return ContentID{}, fmt.Errorf("%w: content id metadata digest: %v", ErrMalformed, err)
	}
	return c, nil
}

// parseDigest decodes exactly 64 lowercase hex digits into d.
func parseDigest(s string, d *[32]byte) error {
	if len(s) != 64 {
		return fmt.Errorf("want 64 hex digits, got %d characters", len(s))
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
			return fmt.Errorf("not lowercase hex at offset %d", i)
		}
	}
	_, err := hex.Decode(d[:], []byte(s))
	return err
}
