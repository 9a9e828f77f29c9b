package trust

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DemandVersion is the only demand payload version this build writes and
// accepts.
const DemandVersion = 1

// DemandDomain prefixes a demand payload before signing, so a signature
// over a demand is never a signature over an attestation or anything else
// a peer key signs.
const DemandDomain = "gentoo-p2p demand v1\x00"

// Size caps of a demand record: a descriptor without its linked libraries
// is a few KiB.
const (
	// MaxDemandPayloadSize caps the demand JSON.
	MaxDemandPayloadSize = 32 << 10
	// MaxSignedDemandSize caps the whole signed envelope.
	MaxSignedDemandSize = 48 << 10
)

// DemandKind says how a peer came to want a variant.
type DemandKind string

// The demand kinds. All of them count the same ("this peer uses this
// variant"); the kind only tells a builder how the want was met so far.
const (
	// DemandSource: the peer compiled the variant itself, nobody had it.
	DemandSource DemandKind = "source"
	// DemandBinary: the peer installed a binary package of the variant.
	DemandBinary DemandKind = "binary"
	// DemandWanted: the peer asked for the variant and found no build.
	DemandWanted DemandKind = "wanted"
)

// Demand is one peer's usage vote: "I use this variant on this platform".
// Demand never changes a verdict; builders read it to choose what to
// spend CPU on. It is only meaningful inside a SignedDemand.
type Demand struct {
	// Version is DemandVersion.
	Version int
	// VariantKey is the variant wanted, its canonical CID string.
	VariantKey keys.Variant
	// CPV is category/package-version.
	CPV string
	// Platform is the gossip platform (CHOST and flags) of the variant.
	Platform string
	// Descriptor is the variant's build descriptor as identity writes it
	// (the linked libraries may be left out): what a builder builds, and
	// what Bind checks VariantKey, CPV and Platform against.
	Descriptor json.RawMessage
	// Kind is how the want arose.
	Kind DemandKind
	// Time is when the demand was made, UTC, whole seconds.
	Time time.Time
}

// demandWire is the JSON form of Demand, the signed payload.
type demandWire struct {
	Version    int             `json:"version"`
	VariantKey keys.Variant    `json:"variant_key"`
	CPV        string          `json:"cpv"`
	Platform   string          `json:"platform"`
	Descriptor json.RawMessage `json:"descriptor"`
	Kind       DemandKind      `json:"kind"`
	Time       time.Time       `json:"time"`
}

// MarshalJSON writes the demand's wire form (the signed payload format).
func (d Demand) MarshalJSON() ([]byte, error) {
	return json.Marshal(demandWire(d))
}

// UnmarshalJSON parses the wire form strictly and validates every field.
func (d *Demand) UnmarshalJSON(b []byte) error {
	parsed, err := parseDemand(b)
	if err != nil {
		return err
	}
	*d = parsed
	return nil
}

func parseDemand(payload []byte) (Demand, error) {
	if len(payload) > MaxDemandPayloadSize {
		return Demand{}, fmt.Errorf("%w: demand payload is %d bytes, cap %d", ErrMalformed, len(payload), MaxDemandPayloadSize)
	}
	var w demandWire
	if err := decodeStrict(payload, &w); err != nil {
		return Demand{}, fmt.Errorf("%w: demand payload: %v", ErrMalformed, err)
	}
	d := Demand(w)
	if err := d.Validate(); err != nil {
		return Demand{}, err
	}
	return d, nil
}

// Validate checks every field: the version, a canonical variant key, a
// plausible cpv, a platform, a descriptor object, a known kind and a UTC
// whole-second time. SignDemand and DecodeDemand call it.
func (d *Demand) Validate() error {
	if d.Version != DemandVersion {
		return fmt.Errorf("%w: demand version %d, want %d", ErrUnsupportedVersion, d.Version, DemandVersion)
	}
	if err := checkCID("variant_key", string(d.VariantKey)); err != nil {
		return err
	}
	if err := checkText("cpv", d.CPV, 256, true, true); err != nil {
		return err
	}
	if err := checkCPV(d.CPV); err != nil {
		return err
	}
	if err := checkText("platform", d.Platform, 512, true, false); err != nil {
		return err
	}
	if len(d.Descriptor) == 0 || !json.Valid(d.Descriptor) || d.Descriptor[0] != '{' {
		return fmt.Errorf("%w: descriptor: not a JSON object", ErrMalformed)
	}
	switch d.Kind {
	case DemandSource, DemandBinary, DemandWanted:
	default:
		return fmt.Errorf("%w: kind %q: want %q, %q or %q", ErrMalformed, d.Kind, DemandSource, DemandBinary, DemandWanted)
	}
	if d.Time.IsZero() {
		return fmt.Errorf("%w: time: missing", ErrMalformed)
	}
	if d.Time.Location() != time.UTC || d.Time.Nanosecond() != 0 {
		return fmt.Errorf("%w: time %s: want UTC whole seconds", ErrMalformed, d.Time)
	}
	return nil
}

// checkCPV requires category/package-version: one slash, not at either end.
func checkCPV(cpv string) error {
	i := bytes.IndexByte([]byte(cpv), '/')
	if i <= 0 || i == len(cpv)-1 || bytes.IndexByte([]byte(cpv[i+1:]), '/') >= 0 {
		return fmt.Errorf("%w: cpv %q: want category/package-version", ErrMalformed, cpv)
	}
	return nil
}

// DemandBinder recomputes what a demand's descriptor commits to. The
// daemon implements it with identity (VariantKey(), CPV, Platform()),
// which this package cannot import.
type DemandBinder func(descriptor json.RawMessage) (variantKey keys.Variant, cpv, platform string, err error)

// Bind checks that the descriptor really yields the demand's variant key,
// cpv and platform: without it a peer could count its want towards a
// variant other than the one a builder would build.
func (d *Demand) Bind(b DemandBinder) error {
	vk, cpv, platform, err := b(d.Descriptor)
	if err != nil {
		return fmt.Errorf("%w: demand descriptor of %s: %v", ErrUnboundDescriptor, d.VariantKey, err)
	}
	switch {
	case vk != d.VariantKey:
		return fmt.Errorf("%w: descriptor yields variant key %s, demand says %s", ErrUnboundDescriptor, vk, d.VariantKey)
	case cpv != d.CPV:
		return fmt.Errorf("%w: descriptor names cpv %s, demand says %s", ErrUnboundDescriptor, cpv, d.CPV)
	case platform != d.Platform:
		return fmt.Errorf("%w: descriptor makes platform %s, demand says %s", ErrUnboundDescriptor, platform, d.Platform)
	}
	return nil
}

// SignedDemand is a self-authenticating demand: the exact payload bytes,
// the peer's libp2p public key and its signature over DemandDomain +
// Payload. Demand and Attester are derived and not sent.
type SignedDemand struct {
	Payload   []byte `json:"payload"`
	PublicKey []byte `json:"public_key"`
	Signature []byte `json:"signature"`

	// Demand is Payload parsed.
	Demand Demand `json:"-"`
	// Attester is the peer id derived from PublicKey: the one who wants.
	Attester peer.ID `json:"-"`
}

// SignDemand validates d, normalises its time to UTC whole seconds, sets
// the version if unset and signs it with the peer's Ed25519 key.
func SignDemand(d Demand, key crypto.PrivKey) (*SignedDemand, error) {
	if key == nil || key.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("%w: demand key must be Ed25519", ErrUnsupportedKey)
	}
	if d.Version == 0 {
		d.Version = DemandVersion
	}
	d.Time = d.Time.UTC().Truncate(time.Second)
	if len(d.Descriptor) > 0 {
		// The payload must be canonical, and json.Marshal compacts raw
		// messages: compact it first so what is signed is what decodes.
		var buf bytes.Buffer
		if err := json.Compact(&buf, d.Descriptor); err != nil {
			return nil, fmt.Errorf("%w: descriptor: %v", ErrMalformed, err)
		}
		d.Descriptor = buf.Bytes()
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("%w: encode demand: %v", ErrMalformed, err)
	}
	if len(payload) > MaxDemandPayloadSize {
		return nil, fmt.Errorf("%w: demand payload is %d bytes, cap %d", ErrMalformed, len(payload), MaxDemandPayloadSize)
	}
	sig, err := key.Sign(signingBytes(DemandDomain, payload))
	if err != nil {
		return nil, fmt.Errorf("trust: sign demand: %w", err)
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("trust: marshal public key: %w", err)
	}
	s, err := openDemand(payload, pub, sig)
	if err != nil {
		return nil, err
	}
	if n := len(s.Marshal()); n > MaxSignedDemandSize {
		return nil, fmt.Errorf("%w: signed demand is %d bytes, cap %d", ErrMalformed, n, MaxSignedDemandSize)
	}
	return s, nil
}

// DecodeDemand parses a signed demand as received from any peer, verifies
// the signature and the payload, and fills in Demand and Attester. Errors
// wrap ErrMalformed, ErrUnsupportedVersion, ErrUnsupportedKey or
// ErrBadSignature. It does not Bind; the caller does, with identity.
func DecodeDemand(raw []byte) (*SignedDemand, error) {
	if len(raw) > MaxSignedDemandSize {
		return nil, fmt.Errorf("%w: signed demand is %d bytes, cap %d", ErrMalformed, len(raw), MaxSignedDemandSize)
	}
	var w signedWire
	if err := decodeStrict(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: signed demand envelope: %v", ErrMalformed, err)
	}
	return openDemand(w.Payload, w.PublicKey, w.Signature)
}

func openDemand(payload, pub, sig []byte) (*SignedDemand, error) {
	if len(payload) == 0 || len(pub) == 0 || len(sig) == 0 {
		return nil, fmt.Errorf("%w: envelope needs payload, public_key and signature", ErrMalformed)
	}
	id, pk, err := parsePeerKey(pub)
	if err != nil {
		return nil, err
	}
	ok, err := pk.Verify(signingBytes(DemandDomain, payload), sig)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: demand signature by %s does not verify", ErrBadSignature, id)
	}
	d, err := parseDemand(payload)
	if err != nil {
		return nil, err
	}
	canonical, err := json.Marshal(d)
	if err != nil || !bytes.Equal(canonical, payload) {
		return nil, fmt.Errorf("%w: demand payload is not in canonical form", ErrMalformed)
	}
	return &SignedDemand{
		Payload: bytes.Clone(payload), PublicKey: bytes.Clone(pub), Signature: bytes.Clone(sig),
		Demand: d, Attester: id,
	}, nil
}

// Marshal returns the envelope's wire bytes; deterministic, so ID is
// stable however the record travelled.
func (s *SignedDemand) Marshal() []byte {
	b, err := json.Marshal(signedWire{Payload: s.Payload, PublicKey: s.PublicKey, Signature: s.Signature})
	if err != nil {
		panic(fmt.Sprintf("trust: marshal signed demand: %v", err)) // three byte slices always marshal
	}
	return b
}

// ID is the SHA-256 of Marshal().
func (s *SignedDemand) ID() [32]byte { return sha256.Sum256(s.Marshal()) }

// Verify re-checks a SignedDemand that may have been modified in memory:
// the signature must verify over Payload, and Demand and Attester must be
// exactly what Payload and PublicKey say.
func (s *SignedDemand) Verify() error {
	if s == nil {
		return fmt.Errorf("%w: nil signed demand", ErrMalformed)
	}
	fresh, err := openDemand(s.Payload, s.PublicKey, s.Signature)
	if err != nil {
		return err
	}
	if fresh.Attester != s.Attester {
		return fmt.Errorf("%w: attester %s does not own public key of %s", ErrBadSignature, s.Attester, fresh.Attester)
	}
	current, err := json.Marshal(s.Demand)
	if err != nil || !bytes.Equal(current, s.Payload) {
		return fmt.Errorf("%w: demand fields differ from the signed payload", ErrBadSignature)
	}
	return nil
}
