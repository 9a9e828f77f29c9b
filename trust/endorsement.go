package trust

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
)

// EndorsementDomain prefixes what a build-server signer signs, so its
// endorsement key cannot be tricked into signing anything else usable here.
const EndorsementDomain = "gentoo-p2p endorsement v1\x00"

// Endorsement is a co-signature by a build-server key (e.g. a distribution
// or fleet build host): "content C is the right result for build key B". A
// configured signer's endorsement backs a content on its own (see Evaluate).
// It names no attester, so it stays valid whoever relays it.
type Endorsement struct {
	// SignerKey is the signer's raw Ed25519 public key.
	SignerKey ed25519.PublicKey `json:"signer_key"`
	// Signature is over EndorsementDomain + build key + "\x00" + content.String().
	Signature []byte `json:"signature"`
}

// endorsementMessage is the exact byte string an endorsement signs.
func endorsementMessage(buildKey keys.Build, c ContentID) []byte {
	return []byte(EndorsementDomain + string(buildKey) + "\x00" + c.String())
}

// Endorse signs (buildKey, c) with a build-server key.
func Endorse(buildKey keys.Build, c ContentID, priv ed25519.PrivateKey) Endorsement {
	return Endorsement{
		SignerKey: bytes.Clone(priv.Public().(ed25519.PublicKey)),
		Signature: ed25519.Sign(priv, endorsementMessage(buildKey, c)),
	}
}

// Verify checks that the endorsement is a valid signature by SignerKey over
// (buildKey, c). It does not check whether SignerKey is trusted; see
// VerifyBy.
func (e Endorsement) Verify(buildKey keys.Build, c ContentID) error {
	if len(e.SignerKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: endorsement signer key is %d bytes, want %d", ErrMalformed, len(e.SignerKey), ed25519.PublicKeySize)
	}
	if len(e.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("%w: endorsement signature is %d bytes, want %d", ErrMalformed, len(e.Signature), ed25519.SignatureSize)
	}
	if !ed25519.Verify(e.SignerKey, endorsementMessage(buildKey, c), e.Signature) {
		return fmt.Errorf("%w: endorsement by %s for %s / %s", ErrBadSignature, e.Signer(), buildKey, c)
	}
	return nil
}

// VerifyBy checks the signature and that SignerKey is one of signers
// (ErrUntrustedSigner otherwise).
func (e Endorsement) VerifyBy(buildKey keys.Build, c ContentID, signers []ed25519.PublicKey) error {
	trusted := false
	for _, s := range signers {
		if bytes.Equal(s, e.SignerKey) {
			trusted = true
			break
		}
	}
	if !trusted {
		return fmt.Errorf("%w: %s", ErrUntrustedSigner, e.Signer())
	}
	return e.Verify(buildKey, c)
}

// Signer names the signer key in explanations: "ed25519:" and its hex.
func (e Endorsement) Signer() string {
	return "ed25519:" + hex.EncodeToString(e.SignerKey)
}
