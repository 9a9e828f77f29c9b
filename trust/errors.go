package trust

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapped message names
// the field or member and the problem.
var (
	// ErrMalformed reports bytes that are not a well-formed signed
	// attestation, endorsement or evidence record (bad JSON, unknown fields,
	// missing or invalid fields, non-canonical encoding, size over the cap).
	ErrMalformed = errors.New("trust: malformed record")
	// ErrUnsupportedVersion reports an attestation or evidence version this
	// build does not understand; peers running newer code may send them.
	ErrUnsupportedVersion = errors.New("trust: unsupported version")
	// ErrBadSignature reports a signature that does not verify: forged,
	// tampered, or made by a different key than the one presented.
	ErrBadSignature = errors.New("trust: bad signature")
	// ErrUnsupportedKey reports a peer key that is not Ed25519; attesters
	// must use Ed25519 peer keys so that peer ids are derived from the key
	// itself and parsing stays cheap.
	ErrUnsupportedKey = errors.New("trust: unsupported key type")
	// ErrUntrustedSigner reports an endorsement made by a key that is not
	// among the policy's configured signers.
	ErrUntrustedSigner = errors.New("trust: signer not configured")
	// ErrInvalidEvidence reports an equivocation record that does not prove
	// equivocation (signatures, attester, build key or contents do not fit).
	ErrInvalidEvidence = errors.New("trust: invalid equivocation evidence")
	// ErrUnboundDescriptor reports an attestation whose descriptor does not
	// hash to its build key or names another cpv (see Attestation.Bind).
	ErrUnboundDescriptor = errors.New("trust: descriptor does not match build key")
	// ErrInvalidPolicy reports a policy that cannot be applied.
	ErrInvalidPolicy = errors.New("trust: invalid policy")

	// ErrUnsigned reports a GPKG without the OpenPGP signatures portage
	// requires (no clearsigned Manifest, or a member without its .sig).
	ErrUnsigned = errors.New("trust: gpkg is not signed")
	// ErrBadPGPSignature reports a GPKG OpenPGP signature that does not
	// verify, or a member whose Manifest digest or size does not match.
	ErrBadPGPSignature = errors.New("trust: bad OpenPGP signature")
	// ErrUntrustedKey reports a GPKG signed by a key outside the keyring, or
	// by a keyring key that is expired or revoked.
	ErrUntrustedKey = errors.New("trust: OpenPGP key not trusted")
	// ErrMalformedGPKG reports a GPKG container that breaks portage's
	// structure rules (layout, duplicate or unknown members, bad Manifest).
	ErrMalformedGPKG = errors.New("trust: malformed gpkg container")
)
