package trust

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/libp2p/go-libp2p/core/peer"
)

// EvidenceVersion is the only equivocation record version this build writes
// and accepts.
const EvidenceVersion = 1

// MaxEvidenceSize caps an encoded equivocation record: two signed
// attestations and a little framing.
const MaxEvidenceSize = 2*MaxSignedSize + 1024

// Equivocation proves that Peer signed two different content ids for one
// build key. An honest peer never does that for a reproducible package, so
// its votes for that build key are void (see Evaluate). The two signed
// attestations are the proof: anyone can check it with Verify, so records
// may be gossiped like attestations.
type Equivocation struct {
	// Peer is the equivocating attester.
	Peer peer.ID
	// BuildKey is the build key both attestations name.
	BuildKey keys.Build
	// A and B are the two conflicting signed attestations, A.ID() < B.ID().
	A, B *Signed
}

// equivocationWire is the evidence record on the wire; Peer and BuildKey are
// derived from the attestations on decode, never taken from the sender.
type equivocationWire struct {
	Version int             `json:"version"`
	A       json.RawMessage `json:"a"`
	B       json.RawMessage `json:"b"`
}

// Verify checks that the record proves equivocation: both signatures valid,
// one attester (Peer), one build key (BuildKey), two different contents.
// Errors wrap ErrInvalidEvidence (and the signature error where one fails).
func (e Equivocation) Verify() error {
	if e.A == nil || e.B == nil {
		return fmt.Errorf("%w: needs two attestations", ErrInvalidEvidence)
	}
	for name, s := range map[string]*Signed{"a": e.A, "b": e.B} {
		if err := s.Verify(); err != nil {
			return fmt.Errorf("%w: attestation %s: %w", ErrInvalidEvidence, name, err)
		}
	}
	a, b := e.A.Attestation, e.B.Attestation
	switch {
	case e.A.Attester != e.B.Attester:
		return fmt.Errorf("%w: attestations are by %s and %s", ErrInvalidEvidence, e.A.Attester, e.B.Attester)
	case e.Peer != e.A.Attester:
		return fmt.Errorf("%w: record names %s, attestations are by %s", ErrInvalidEvidence, e.Peer, e.A.Attester)
	case a.BuildKey != b.BuildKey:
		return fmt.Errorf("%w: attestations are for build keys %s and %s", ErrInvalidEvidence, a.BuildKey, b.BuildKey)
	case e.BuildKey != a.BuildKey:
		return fmt.Errorf("%w: record names build key %s, attestations name %s", ErrInvalidEvidence, e.BuildKey, a.BuildKey)
	case a.Content == b.Content:
		return fmt.Errorf("%w: both attestations name content %s", ErrInvalidEvidence, a.Content)
	}
	return nil
}

// Marshal encodes the record for the wire and the store. A and B are
// written in ID order so one proof has one encoding.
func (e Equivocation) Marshal() []byte {
	a, b := e.A, e.B
	if ida, idb := a.ID(), b.ID(); bytes.Compare(ida[:], idb[:]) > 0 {
		a, b = b, a
	}
	out, err := json.Marshal(equivocationWire{Version: EvidenceVersion, A: a.Marshal(), B: b.Marshal()})
	if err != nil {
		panic(fmt.Sprintf("trust: marshal equivocation: %v", err))
	}
	return out
}

// ID is the SHA-256 of Marshal(), for deduplicating evidence.
func (e Equivocation) ID() [32]byte { return sha256.Sum256(e.Marshal()) }

// DecodeEquivocation parses a record received from any peer and verifies it;
// Peer and BuildKey come from the attestations themselves.
func DecodeEquivocation(raw []byte) (Equivocation, error) {
	if len(raw) > MaxEvidenceSize {
		return Equivocation{}, fmt.Errorf("%w: evidence is %d bytes, cap %d", ErrMalformed, len(raw), MaxEvidenceSize)
	}
	var w equivocationWire
	if err := decodeStrict(raw, &w); err != nil {
		return Equivocation{}, fmt.Errorf("%w: evidence record: %v", ErrMalformed, err)
	}
	if w.Version != EvidenceVersion {
		return Equivocation{}, fmt.Errorf("%w: evidence version %d, want %d", ErrUnsupportedVersion, w.Version, EvidenceVersion)
	}
	a, err := Decode(w.A)
	if err != nil {
		return Equivocation{}, fmt.Errorf("%w: attestation a: %w", ErrInvalidEvidence, err)
	}
	b, err := Decode(w.B)
	if err != nil {
		return Equivocation{}, fmt.Errorf("%w: attestation b: %w", ErrInvalidEvidence, err)
	}
	if ida, idb := a.ID(), b.ID(); bytes.Compare(ida[:], idb[:]) > 0 {
		a, b = b, a
	}
	e := Equivocation{Peer: a.Attester, BuildKey: a.Attestation.BuildKey, A: a, B: b}
	if err := e.Verify(); err != nil {
		return Equivocation{}, err
	}
	return e, nil
}

// DetectEquivocation finds every peer that signed two different content ids
// for one build key among atts, one record per (peer, build key), sorted by
// peer then build key. Records that fail Verify are skipped: a forged
// attestation must not frame an honest peer.
func DetectEquivocation(atts []*Signed) []Equivocation {
	return detectEquivocation(atts, true)
}

// detectEquivocation is DetectEquivocation; verify false skips the
// signature checks for records the caller has just verified.
func detectEquivocation(atts []*Signed, verify bool) []Equivocation {
	type group struct {
		peer     peer.ID
		buildKey keys.Build
	}
	byGroup := make(map[group][]*Signed)
	for _, s := range atts {
		if s == nil || verify && s.Verify() != nil {
			continue
		}
		g := group{s.Attester, s.Attestation.BuildKey}
		byGroup[g] = append(byGroup[g], s)
	}
	var out []Equivocation
	for g, list := range byGroup {
		if len(list) < 2 {
			continue
		}
		// Deterministic choice of the proof pair: smallest IDs.
		slices.SortFunc(list, func(x, y *Signed) int {
			ix, iy := x.ID(), y.ID()
			return bytes.Compare(ix[:], iy[:])
		})
		first := list[0]
		for _, other := range list[1:] {
			if other.Attestation.Content != first.Attestation.Content {
				out = append(out, Equivocation{Peer: g.peer, BuildKey: g.buildKey, A: first, B: other})
				break
			}
		}
	}
	slices.SortFunc(out, func(x, y Equivocation) int {
		return cmp.Or(cmp.Compare(x.Peer, y.Peer), cmp.Compare(x.BuildKey, y.BuildKey))
	})
	return out
}
