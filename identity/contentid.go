package identity

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrBadContentID means a text is not "<64 hex>.<64 hex>" in lowercase.
var ErrBadContentID = errors.New("identity: malformed content id")

// ContentID is what reproducers vote on: the image digest v1 (the installed
// files) and the metadata digest v1 (what portage executes and resolves).
// Two honest builds of one build key have the same ContentID.
type ContentID struct {
	Image    [32]byte
	Metadata [32]byte
}

// contentIDLen is the length of the text form: 64 + 1 + 64.
const contentIDLen = 129

// String is the text form "<image hex>.<metadata hex>", lowercase, 129
// bytes: readable in logs and `trust explain`, and what JSON carries.
func (c ContentID) String() string {
	b, _ := c.MarshalText()
	return string(b)
}

// MarshalText implements encoding.TextMarshaler with the String form.
func (c ContentID) MarshalText() ([]byte, error) {
	b := make([]byte, contentIDLen)
	hex.Encode(b[:64], c.Image[:])
	b[64] = '.'
	hex.Encode(b[65:], c.Metadata[:])
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts only the
// exact String form, so one content id has one text.
func (c *ContentID) UnmarshalText(b []byte) error {
	if len(b) != contentIDLen || b[64] != '.' || !isLowerHex(string(b[:64]), 64) || !isLowerHex(string(b[65:]), 64) {
		return fmt.Errorf("%w: %q", ErrBadContentID, truncate(b))
	}
	var out ContentID
	if _, err := hex.Decode(out.Image[:], b[:64]); err != nil {
		return fmt.Errorf("%w: %v", ErrBadContentID, err)
	}
	if _, err := hex.Decode(out.Metadata[:], b[65:]); err != nil {
		return fmt.Errorf("%w: %v", ErrBadContentID, err)
	}
	*c = out
	return nil
}

// ParseContentID parses the String form.
func ParseContentID(s string) (ContentID, error) {
	var c ContentID
	err := c.UnmarshalText([]byte(s))
	return c, err
}

// IsZero reports whether c is the zero value (no digests computed).
func (c ContentID) IsZero() bool { return c == ContentID{} }
