package trust

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PGPVoucherPrefix names a voucher that is an OpenPGP key (trust.vouch_keyring,
// e.g. a Gentoo developer's) rather than a peer: "openpgp:" and the key's
// fingerprint in uppercase hex. The vouch graph and the store take such
// names where they take a peer ID.
const PGPVoucherPrefix = "openpgp:"

// MaxPGPVouchSize caps a PGPVouch envelope: a payload and one detached
// signature (an RSA-4096 one is about 550 bytes).
const MaxPGPVouchSize = 4 << 10

// PGPVoucher is the voucher name of an OpenPGP key.
func PGPVoucher(e *openpgp.Entity) peer.ID {
	return peer.ID(PGPVoucherPrefix + strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)))
}

// VoucherName renders a voucher for people: a peer ID, or "OpenPGP key
// FINGERPRINT".
func VoucherName(id peer.ID) string {
	if fp, ok := strings.CutPrefix(string(id), PGPVoucherPrefix); ok {
		return "OpenPGP key " + fp
	}
	return id.String()
}

// ParseVoucher reads what VoucherName's machine form (a peer ID's string,
// or PGPVoucherPrefix and a fingerprint) names.
func ParseVoucher(s string) (peer.ID, error) {
	if fp, ok := strings.CutPrefix(s, PGPVoucherPrefix); ok {
		if b, err := hex.DecodeString(fp); err != nil || len(b) < 20 || strings.ToUpper(fp) != fp {
			return "", fmt.Errorf("%w: voucher %q: want %s and an uppercase hex fingerprint", ErrMalformed, s, PGPVoucherPrefix)
		}
		return peer.ID(s), nil
	}
	return peer.Decode(s)
}

// PGPVouch is a vouch signed by an OpenPGP key instead of a peer key: a
// detached OpenPGP signature over VouchDomain + Payload, so a key that
// signs commits and Manifests signs nothing else usable here. The payload
// is a Vouch as a peer signs it. Vouch and Voucher are derived.
type PGPVouch struct {
	Payload   []byte `json:"payload"`
	Signature []byte `json:"signature"`

	// Vouch is Payload parsed.
	Vouch Vouch `json:"-"`
	// Voucher is PGPVoucher of the signing key.
	Voucher peer.ID `json:"-"`
}

// VouchStatement is the exact byte string an OpenPGP key signs (detached)
// to vouch: VouchDomain and the canonical payload of v, which is
// validated and normalised to UTC whole seconds first. `gentoo-p2pd
// trust vouch --pgp-statement` writes it for gpg --detach-sign.
func VouchStatement(v Vouch) ([]byte, error) {
	payload, err := vouchPayload(v)
	if err != nil {
		return nil, err
	}
	return signingBytes(VouchDomain, payload), nil
}

func vouchPayload(v Vouch) ([]byte, error) {
	if v.Version == 0 {
		v.Version = VouchVersion
	}
	v.Issued = v.Issued.UTC().Truncate(time.Second)
	v.Expires = v.Expires.UTC().Truncate(time.Second)
	if err := v.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: encode vouch: %v", ErrMalformed, err)
	}
	return payload, nil
}

// PGPVouchFromStatement pairs a statement (VouchStatement's bytes) with
// its detached signature, armored or binary, into an envelope. It checks
// the form, not the signature: DecodePGPVouch does, against a keyring.
func PGPVouchFromStatement(statement, sig []byte) ([]byte, error) {
	payload, ok := bytes.CutPrefix(statement, []byte(VouchDomain))
	if !ok {
		return nil, fmt.Errorf("%w: not a vouch statement (it must start with %q)", ErrMalformed, strings.TrimSuffix(VouchDomain, "\x00"))
	}
	r, err := signatureReader(sig)
	if err != nil {
		return nil, err
	}
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadPGPSignature, err)
	}
	return json.Marshal(PGPVouch{Payload: payload, Signature: raw.Bytes()})
}

// SignPGPVouch signs v with an OpenPGP key, as gpg --detach-sign of its
// VouchStatement does.
func SignPGPVouch(v Vouch, signer *openpgp.Entity) ([]byte, error) {
	stmt, err := VouchStatement(v)
	if err != nil {
		return nil, err
	}
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, signer, bytes.NewReader(stmt), &packet.Config{}); err != nil {
		return nil, fmt.Errorf("trust: sign vouch with OpenPGP key: %w", err)
	}
	return PGPVouchFromStatement(stmt, sig.Bytes())
}

// DecodePGPVouch parses a PGPVouch envelope and verifies its signature
// against keyring (trust.vouch_keyring): a key outside it (or expired,
// revoked) is ErrUntrustedKey, a signature that does not verify
// ErrBadPGPSignature, a bad payload ErrMalformed.
func DecodePGPVouch(raw []byte, keyring openpgp.EntityList) (*PGPVouch, error) {
	if len(raw) > MaxPGPVouchSize {
		return nil, fmt.Errorf("%w: OpenPGP vouch is %d bytes, cap %d", ErrMalformed, len(raw), MaxPGPVouchSize)
	}
	var w struct {
		Payload   []byte `json:"payload"`
		Signature []byte `json:"signature"`
	}
	if err := decodeStrict(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: OpenPGP vouch envelope: %v", ErrMalformed, err)
	}
	if len(w.Payload) == 0 || len(w.Signature) == 0 {
		return nil, fmt.Errorf("%w: OpenPGP vouch needs payload and signature", ErrMalformed)
	}
	v, err := parseVouch(w.Payload)
	if err != nil {
		return nil, err
	}
	if canonical, err := json.Marshal(v); err != nil || !bytes.Equal(canonical, w.Payload) {
		return nil, fmt.Errorf("%w: vouch payload is not in canonical form", ErrMalformed)
	}
	if len(keyring) == 0 {
		return nil, fmt.Errorf("%w: no trust.vouch_keyring to check an OpenPGP vouch against", ErrUntrustedKey)
	}
	signer, err := openpgp.CheckDetachedSignature(keyring, bytes.NewReader(signingBytes(VouchDomain, w.Payload)), bytes.NewReader(w.Signature), &packet.Config{})
	if err != nil {
		return nil, classifyPGPError(err)
	}
	p := &PGPVouch{Payload: w.Payload, Signature: w.Signature, Vouch: v, Voucher: PGPVoucher(signer)}
	if !bytes.Equal(p.Marshal(), raw) {
		return nil, fmt.Errorf("%w: OpenPGP vouch envelope is not in canonical form", ErrMalformed)
	}
	return p, nil
}

// Marshal returns the envelope's wire bytes.
func (p *PGPVouch) Marshal() []byte {
	b, err := json.Marshal(struct {
		Payload   []byte `json:"payload"`
		Signature []byte `json:"signature"`
	}{p.Payload, p.Signature})
	if err != nil {
		panic(fmt.Sprintf("trust: marshal OpenPGP vouch: %v", err)) // two byte slices always marshal
	}
	return b
}
