package trust

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"path"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Defaults for the fields of Policy; DefaultPolicy returns them.
const (
	// DefaultThreshold is how many distinct eligible attesters must agree.
	DefaultThreshold = 3
	// DefaultDispute is how many votes for a competing content make a dispute:
	// one, because a single honest reproducer that got different bits is the
	// signal that something is wrong.
	DefaultDispute = 1
)

// Policy is the user's trust configuration. The zero value is not valid:
// start from DefaultPolicy.
//
// Threshold 0 means "signer only": votes never allow a build by themselves,
// only signer backing does (an endorsement by one of Signers, a GPKG that
// verified against PGPKeyring, or an attestation by one of TrustedPeers).
// It is therefore only valid when at least one of those is configured, and
// behaves like RequireSigner.
type Policy struct {
	// Threshold is the number of distinct eligible attesters that must agree
	// on one content id (≥ 1, or 0 for signer only).
	Threshold int
	// Dispute is how many counted votes a competing content id needs to turn
	// a quorum into a dispute (≥ 1).
	Dispute int
	// Signers are build-server Ed25519 keys whose endorsement backs a content.
	Signers []ed25519.PublicKey
	// PGPKeyring backs a content whose GPKG verified against it; the daemon
	// runs VerifyGPKGSignatures and sets Vote.PGPVerified. Empty: PGPVerified
	// is ignored.
	PGPKeyring openpgp.EntityList
	// RequireSigner refuses every build without signer backing.
	RequireSigner bool
	// TrustedPeers back a content by attesting it (a fleet's build host).
	TrustedPeers []peer.ID
	// BlockedPeers never count, and their attestations are listed as ignored.
	BlockedPeers []peer.ID
	// VouchedPeers are established reproducers by the user's word (their
	// own machines, friends' build hosts): full weight, but unlike
	// TrustedPeers they must reach the threshold like anyone else.
	VouchedPeers []peer.ID
	// FreshWeight is the weight, in thousandths, of an attester with no
	// standing (Vote.Standing 0). 0 is right for an open network: a fresh
	// identity can attest but never counts, so keys that cost nothing buy
	// nothing. 1000 counts every attester fully, as in a closed network
	// of one's own machines.
	FreshWeight int
	// VouchDecay is the percent of weight a signed vouch passes from a
	// voucher the user counts to its vouchee (0 turns vouching off, at
	// most MaxVouchDecay so vouched weight stays partial), VouchHops how
	// many hops from the roots count (see VouchGraph).
	VouchDecay, VouchHops int
	// VouchKeyring holds OpenPGP keys (trust.vouch_keyring, e.g. the
	// Gentoo developers' keyring) that vouch like the roots of the vouch
	// graph: a PGPVouch signed by one gives its vouchee hop-1 weight.
	VouchKeyring openpgp.EntityList
	// DistinctNetworks counts at most one attester per /24 (IPv4) or /48
	// (IPv6) for each content, by the address each attestation arrived
	// from; attesters whose attestations came relayed (or from an unknown
	// address) count once between them. The node's own vote always counts.
	DistinctNetworks bool
	// Overrides adjust the policy per package; later matches win per field.
	Overrides []Override
}

// Override changes some policy fields for the packages whose cpv matches Glob
// (path.Match syntax: "sys-libs/*" matches every sys-libs package,
// "*/*" every package). Nil fields keep the value from the base policy.
type Override struct {
	// Glob is matched against "category/package-version".
	Glob string
	// Threshold replaces Policy.Threshold when set.
	Threshold *int
	// RequireSigner replaces Policy.RequireSigner when set.
	RequireSigner *bool
	// Dispute replaces Policy.Dispute when set.
	Dispute *int
}

// DefaultPolicy returns the recommended home-user policy: three agreeing
// peers, any competing vote disputes, no signers.
func DefaultPolicy() Policy {
	return Policy{Threshold: DefaultThreshold, Dispute: DefaultDispute, VouchDecay: DefaultVouchDecay, VouchHops: DefaultVouchHops}
}

// FullWeight is an established attester's weight, in thousandths.
const FullWeight = 1000

// For returns the effective policy for cpv: every matching override applied
// in order, Overrides cleared. A glob that does not parse never matches
// (Validate reports it).
func (p Policy) For(cpv string) Policy {
	eff := p
	eff.Overrides = nil
	for _, o := range p.Overrides {
		if ok, err := path.Match(o.Glob, cpv); err != nil || !ok {
			continue
		}
		if o.Threshold != nil {
			eff.Threshold = *o.Threshold
		}
		if o.RequireSigner != nil {
			eff.RequireSigner = *o.RequireSigner
		}
		if o.Dispute != nil {
			eff.Dispute = *o.Dispute
		}
	}
	return eff
}

// hasBacking reports whether any source of signer backing is configured.
func (p Policy) hasBacking() bool {
	return len(p.Signers) > 0 || len(p.PGPKeyring) > 0 || len(p.TrustedPeers) > 0
}

// Validate reports every problem in the policy, each naming the field; the
// daemon refuses to start with an invalid policy. Errors wrap
// ErrInvalidPolicy.
func (p Policy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidPolicy}, args...)...))
	}
	p.checkNumbers("", bad)
	for i, s := range p.Signers {
		if len(s) != ed25519.PublicKeySize {
			bad("signers[%d]: %d bytes, want an Ed25519 public key of %d", i, len(s), ed25519.PublicKeySize)
		}
	}
	blocked := make(map[peer.ID]bool, len(p.BlockedPeers))
	for i, id := range p.BlockedPeers {
		if err := validPeer(id); err != nil {
			bad("blocked_peers[%d]: %v", i, err)
		}
		blocked[id] = true
	}
	for i, id := range p.TrustedPeers {
		if err := validPeer(id); err != nil {
			bad("trusted_peers[%d]: %v", i, err)
		}
		if blocked[id] {
			bad("trusted_peers[%d]: %s is also blocked", i, id)
		}
	}
	for i, id := range p.VouchedPeers {
		if err := validPeer(id); err != nil {
			bad("vouched_peers[%d]: %v", i, err)
		}
		if blocked[id] {
			bad("vouched_peers[%d]: %s is also blocked", i, id)
		}
	}
	if p.FreshWeight < 0 || p.FreshWeight > FullWeight {
		bad("fresh_weight %d‰: must be between 0 and %d", p.FreshWeight, FullWeight)
	}
	if p.VouchDecay < 0 || p.VouchDecay > MaxVouchDecay {
		bad("vouch_decay %d %%: must be between 0 and %d (vouched weight stays below an established attester's)", p.VouchDecay, MaxVouchDecay)
	}
	if p.VouchHops < 0 || p.VouchHops > MaxVouchHops {
		bad("vouch_hops %d: must be between 0 and %d", p.VouchHops, MaxVouchHops)
	}
	for i, o := range p.Overrides {
		if o.Glob == "" {
			bad("overrides[%d].glob: missing", i)
			continue
		}
		if _, err := path.Match(o.Glob, ""); err != nil {
			bad("overrides[%d].glob %q: %v", i, o.Glob, err)
			continue
		}
		// Check the override as it would apply on top of the base policy.
		eff := p
		eff.Overrides = nil
		if o.Threshold != nil {
			eff.Threshold = *o.Threshold
		}
		if o.RequireSigner != nil {
			eff.RequireSigner = *o.RequireSigner
		}
		if o.Dispute != nil {
			eff.Dispute = *o.Dispute
		}
		eff.checkNumbers(fmt.Sprintf("overrides[%d] (%s): ", i, o.Glob), bad)
	}
	return errors.Join(errs...)
}

// checkNumbers validates threshold, dispute and require-signer against the
// configured backing sources.
func (p Policy) checkNumbers(prefix string, bad func(string, ...any)) {
	switch {
	case p.Threshold < 0:
		bad("%sthreshold %d: must be ≥ 0", prefix, p.Threshold)
	case p.Threshold == 0 && !p.hasBacking():
		bad("%sthreshold 0 means signer only and needs signers, a pgp keyring or trusted peers", prefix)
	}
	if p.Dispute < 1 {
		bad("%sdispute %d: must be ≥ 1", prefix, p.Dispute)
	}
	if p.RequireSigner && !p.hasBacking() {
		bad("%srequire_signer needs signers, a pgp keyring or trusted peers", prefix)
	}
}

// signerOnly reports whether votes alone can never allow under p.
func (p Policy) signerOnly() bool { return p.RequireSigner || p.Threshold == 0 }

// stricter merges two effective policies field by field, keeping the
// stricter value; used when attestations for one build key disagree on the
// cpv, so a mislabelled cpv can never select a weaker override.
func stricter(a, b Policy) Policy {
	out := a
	if b.Threshold > out.Threshold && out.Threshold != 0 || b.Threshold == 0 {
		out.Threshold = b.Threshold
	}
	if b.Dispute < out.Dispute {
		out.Dispute = b.Dispute
	}
	out.RequireSigner = a.RequireSigner || b.RequireSigner
	return out
}

// validPeer checks that id is a well-formed peer id (a multihash), which
// peer.ID.Validate alone does not.
func validPeer(id peer.ID) error {
	if err := id.Validate(); err != nil {
		return err
	}
	_, err := peer.IDFromBytes([]byte(id))
	return err
}
