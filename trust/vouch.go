package trust

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// VouchVersion is the only vouch payload version this build writes and
// accepts.
const VouchVersion = 1

// VouchDomain prefixes a vouch payload before signing, so a signature over
// a vouch is never a signature over an attestation or anything else a
// peer key signs.
const VouchDomain = "gentoo-p2p vouch v1\x00"

// Size caps of a vouch record: a payload is a peer ID and two times.
const (
	// MaxVouchPayloadSize caps the vouch JSON.
	MaxVouchPayloadSize = 512
	// MaxSignedVouchSize caps the whole signed envelope.
	MaxSignedVouchSize = 1 << 10
)

// MaxVouchLifetime is the longest a vouch may last: a voucher must renew
// its word once a year, so a key that was given up stops handing out
// weight by itself.
const MaxVouchLifetime = 365 * 24 * time.Hour

// Vouch is one peer's word: "the vouchee is a real, independent builder".
// A vouch gives its vouchee weight only through a voucher the reader
// already counts (see VouchGraph). It is only meaningful inside a
// SignedVouch, whose signer is the voucher. A vouch whose Expires equals
// its Issued is a revocation: it replaces the voucher's older vouch for
// the same vouchee and gives nothing.
type Vouch struct {
	// Version is VouchVersion.
	Version int
	// Vouchee is the peer vouched for.
	Vouchee peer.ID
	// Issued is when the vouch was made, UTC, whole seconds; of two
	// vouches by one voucher for one vouchee the later replaces the other.
	Issued time.Time
	// Expires is when it stops counting: not before Issued, at most
	// MaxVouchLifetime after it.
	Expires time.Time
}

// vouchWire is the JSON form of Vouch, the signed payload.
type vouchWire struct {
	Version int       `json:"version"`
	Vouchee string    `json:"vouchee"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
}

// MarshalJSON writes the vouch's wire form (the signed payload format).
func (v Vouch) MarshalJSON() ([]byte, error) {
	return json.Marshal(vouchWire{Version: v.Version, Vouchee: v.Vouchee.String(), Issued: v.Issued, Expires: v.Expires})
}

// UnmarshalJSON parses the wire form strictly and validates every field.
func (v *Vouch) UnmarshalJSON(b []byte) error {
	parsed, err := parseVouch(b)
	if err != nil {
		return err
	}
	*v = parsed
	return nil
}

func parseVouch(payload []byte) (Vouch, error) {
	if len(payload) > MaxVouchPayloadSize {
		return Vouch{}, fmt.Errorf("%w: vouch payload is %d bytes, cap %d", ErrMalformed, len(payload), MaxVouchPayloadSize)
	}
	var w vouchWire
	if err := decodeStrict(payload, &w); err != nil {
		return Vouch{}, fmt.Errorf("%w: vouch payload: %v", ErrMalformed, err)
	}
	id, err := peer.Decode(w.Vouchee)
	if err != nil {
		return Vouch{}, fmt.Errorf("%w: vouchee %q: %v", ErrMalformed, w.Vouchee, err)
	}
	v := Vouch{Version: w.Version, Vouchee: id, Issued: w.Issued, Expires: w.Expires}
	if err := v.Validate(); err != nil {
		return Vouch{}, err
	}
	return v, nil
}

// Validate checks every field: the version, a well-formed vouchee, UTC
// whole-second times, and Issued ≤ Expires ≤ Issued + MaxVouchLifetime.
func (v *Vouch) Validate() error {
	if v.Version != VouchVersion {
		return fmt.Errorf("%w: vouch version %d, want %d", ErrUnsupportedVersion, v.Version, VouchVersion)
	}
	if err := validPeer(v.Vouchee); err != nil {
		return fmt.Errorf("%w: vouchee: %v", ErrMalformed, err)
	}
	for name, t := range map[string]time.Time{"issued": v.Issued, "expires": v.Expires} {
		if t.IsZero() {
			return fmt.Errorf("%w: %s: missing", ErrMalformed, name)
		}
		if t.Location() != time.UTC || t.Nanosecond() != 0 {
			return fmt.Errorf("%w: %s %s: want UTC whole seconds", ErrMalformed, name, t)
		}
	}
	switch {
	case v.Expires.Before(v.Issued):
		return fmt.Errorf("%w: vouch expires %s before it is issued %s", ErrMalformed, v.Expires.Format(time.RFC3339), v.Issued.Format(time.RFC3339))
	case v.Expires.Sub(v.Issued) > MaxVouchLifetime:
		return fmt.Errorf("%w: vouch lasts %s, at most %s", ErrMalformed, v.Expires.Sub(v.Issued), MaxVouchLifetime)
	}
	return nil
}

// Revocation reports whether the vouch withdraws an earlier one.
func (v Vouch) Revocation() bool { return v.Expires.Equal(v.Issued) }

// ActiveAt reports whether the vouch counts at t: issued, not expired.
func (v Vouch) ActiveAt(t time.Time) bool { return !t.Before(v.Issued) && t.Before(v.Expires) }

// SignedVouch is a self-authenticating vouch: the exact payload bytes, the
// voucher's libp2p public key and its signature over VouchDomain +
// Payload. Vouch and Voucher are derived and not sent.
type SignedVouch struct {
	Payload   []byte `json:"payload"`
	PublicKey []byte `json:"public_key"`
	Signature []byte `json:"signature"`

	// Vouch is Payload parsed.
	Vouch Vouch `json:"-"`
	// Voucher is the peer id derived from PublicKey.
	Voucher peer.ID `json:"-"`
}

// SignVouch validates v, normalises its times to UTC whole seconds, sets
// the version if unset and signs it with the voucher's Ed25519 peer key.
// A key cannot vouch for its own peer id.
func SignVouch(v Vouch, key crypto.PrivKey) (*SignedVouch, error) {
	if key == nil || key.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("%w: vouch key must be Ed25519", ErrUnsupportedKey)
	}
	payload, err := vouchPayload(v)
	if err != nil {
		return nil, err
	}
	sig, err := key.Sign(signingBytes(VouchDomain, payload))
	if err != nil {
		return nil, fmt.Errorf("trust: sign vouch: %w", err)
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("trust: marshal public key: %w", err)
	}
	return openVouch(payload, pub, sig)
}

// DecodeVouch parses a signed vouch as received from any peer, verifies
// the signature and the payload, and fills in Vouch and Voucher. Errors
// wrap ErrMalformed (also for a vouch by a peer for itself),
// ErrUnsupportedVersion, ErrUnsupportedKey or ErrBadSignature.
func DecodeVouch(raw []byte) (*SignedVouch, error) {
	if len(raw) > MaxSignedVouchSize {
		return nil, fmt.Errorf("%w: signed vouch is %d bytes, cap %d", ErrMalformed, len(raw), MaxSignedVouchSize)
	}
	var w signedWire
	if err := decodeStrict(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: signed vouch envelope: %v", ErrMalformed, err)
	}
	s, err := openVouch(w.Payload, w.PublicKey, w.Signature)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(s.Marshal(), raw) {
		return nil, fmt.Errorf("%w: signed vouch envelope is not in canonical form", ErrMalformed)
	}
	return s, nil
}

func openVouch(payload, pub, sig []byte) (*SignedVouch, error) {
	if len(payload) == 0 || len(pub) == 0 || len(sig) == 0 {
		return nil, fmt.Errorf("%w: envelope needs payload, public_key and signature", ErrMalformed)
	}
	id, pk, err := parsePeerKey(pub)
	if err != nil {
		return nil, err
	}
	ok, err := pk.Verify(signingBytes(VouchDomain, payload), sig)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: vouch signature by %s does not verify", ErrBadSignature, id)
	}
	v, err := parseVouch(payload)
	if err != nil {
		return nil, err
	}
	canonical, err := json.Marshal(v)
	if err != nil || !bytes.Equal(canonical, payload) {
		return nil, fmt.Errorf("%w: vouch payload is not in canonical form", ErrMalformed)
	}
	if v.Vouchee == id {
		return nil, fmt.Errorf("%w: %s vouches for itself", ErrMalformed, id)
	}
	s := &SignedVouch{Payload: bytes.Clone(payload), PublicKey: bytes.Clone(pub), Signature: bytes.Clone(sig), Vouch: v, Voucher: id}
	if n := len(s.Marshal()); n > MaxSignedVouchSize {
		return nil, fmt.Errorf("%w: signed vouch is %d bytes, cap %d", ErrMalformed, n, MaxSignedVouchSize)
	}
	return s, nil
}

// Marshal returns the envelope's wire bytes; deterministic, so ID is
// stable however the record travelled.
func (s *SignedVouch) Marshal() []byte {
	b, err := json.Marshal(signedWire{Payload: s.Payload, PublicKey: s.PublicKey, Signature: s.Signature})
	if err != nil {
		panic(fmt.Sprintf("trust: marshal signed vouch: %v", err)) // three byte slices always marshal
	}
	return b
}

// ID is the SHA-256 of Marshal().
func (s *SignedVouch) ID() [32]byte { return sha256.Sum256(s.Marshal()) }

// Verify re-checks a SignedVouch that may have been modified in memory:
// the signature must verify over Payload, and Vouch and Voucher must be
// exactly what Payload and PublicKey say.
func (s *SignedVouch) Verify() error {
	if s == nil {
		return fmt.Errorf("%w: nil signed vouch", ErrMalformed)
	}
	fresh, err := openVouch(s.Payload, s.PublicKey, s.Signature)
	if err != nil {
		return err
	}
	if fresh.Voucher != s.Voucher {
		return fmt.Errorf("%w: voucher %s does not own public key of %s", ErrBadSignature, s.Voucher, fresh.Voucher)
	}
	current, err := json.Marshal(s.Vouch)
	if err != nil || !bytes.Equal(current, s.Payload) {
		return fmt.Errorf("%w: vouch fields differ from the signed payload", ErrBadSignature)
	}
	return nil
}

// Defaults and bounds of the vouching policy (Policy.VouchDecay,
// Policy.VouchHops).
const (
	// DefaultVouchDecay is the percent of a voucher's weight a vouch
	// passes on: a root's vouchee weighs half an established attester.
	DefaultVouchDecay = 50
	// DefaultVouchHops is how far vouches reach from the roots.
	DefaultVouchHops = 2
	// MaxVouchDecay keeps vouched weight partial: vouching alone never
	// makes an identity established.
	MaxVouchDecay = 99
	// MaxVouchHops bounds the walk.
	MaxVouchHops = 4
)

// VouchEdge is one active vouch: Voucher vouches for Vouchee.
type VouchEdge struct {
	Voucher, Vouchee peer.ID
}

// VouchGraph is what vouch-derived weight is computed from. Roots are the
// identities the user already counts fully (this node, trusted and
// vouched peers, full earned standing); they give weight by vouching and
// get none from it.
type VouchGraph struct {
	Roots   []peer.ID
	Blocked []peer.ID
	Edges   []VouchEdge
	// Decay is the percent of weight each hop passes on (0 to
	// MaxVouchDecay; 0 turns vouching off), Hops how many hops count.
	Decay, Hops int
}

// Vouched is an identity's vouch-derived weight and its best path.
type Vouched struct {
	// Weight is in thousandths: FullWeight × (Decay/100)^Hops, always
	// below FullWeight.
	Weight int
	// Voucher is the identity whose vouch gave it (on the best path),
	// Root the root that path starts from.
	Voucher, Root peer.ID
	// Hops is the path's length from the root (1 for a root's vouchee).
	Hops int
}

// From says where the weight comes from, for explanations.
func (v Vouched) From() string {
	return fmt.Sprintf("vouched for by %s (%d hop(s), decayed to %d %%)", VoucherName(v.Voucher), v.Hops, Weight(v.Weight).Percent())
}

// Weights walks the graph from the roots, breadth first: a root's vouchee
// weighs Decay % of FullWeight, the next hop Decay % of that, up to Hops
// hops. Weight only shrinks along a path, so an identity's best path is
// its shortest; among equal ones the smallest voucher id, for a stable
// explanation. Roots and blocked peers get no entry, and vouches by or
// for blocked peers give nothing. Cost is linear in the edges.
func (g VouchGraph) Weights() map[peer.ID]Vouched {
	out := map[peer.ID]Vouched{}
	if g.Decay <= 0 || g.Hops <= 0 {
		return out
	}
	decay, hops := min(g.Decay, MaxVouchDecay), min(g.Hops, MaxVouchHops)
	blocked := map[peer.ID]bool{}
	for _, id := range g.Blocked {
		blocked[id] = true
	}
	by := map[peer.ID][]peer.ID{}
	for _, e := range g.Edges {
		if !blocked[e.Voucher] && !blocked[e.Vouchee] && e.Voucher != e.Vouchee {
			by[e.Voucher] = append(by[e.Voucher], e.Vouchee)
		}
	}
	seen := map[peer.ID]bool{}
	root := map[peer.ID]peer.ID{}
	var frontier []peer.ID
	for _, id := range g.Roots {
		if !blocked[id] && !seen[id] {
			seen[id], root[id] = true, id
			frontier = append(frontier, id)
		}
	}
	slices.Sort(frontier)
	w := FullWeight
	for hop := 1; hop <= hops && len(frontier) > 0; hop++ {
		w = w * decay / 100
		if w <= 0 {
			break
		}
		var next []peer.ID
		for _, voucher := range frontier { // sorted: the smallest voucher wins ties
			for _, vouchee := range by[voucher] {
				if seen[vouchee] {
					continue
				}
				seen[vouchee], root[vouchee] = true, root[voucher]
				out[vouchee] = Vouched{Weight: w, Voucher: voucher, Root: root[voucher], Hops: hop}
				next = append(next, vouchee)
			}
		}
		slices.SortFunc(next, func(a, b peer.ID) int { return cmp.Compare(a, b) })
		frontier = next
	}
	return out
}
